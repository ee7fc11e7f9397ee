"""Outcomes: every rollout answer joined to its ride's feedback, kept as it becomes known.

A rollout is judged by each version's error on rides that have ended. Joining a window's
predictions to the feedback at analysis time costs an index lookup per prediction (a second over
a million rows), so the join is kept instead: one ``outcomes`` row per answer and target, written
in the same transaction as the second of the two halves to arrive:

- feedback recorded for a ride (:func:`after_feedback`): a row for each of that ride's answers
  that belongs to a rollout;
- an answer written after its ride's feedback (:func:`after_predictions`: a late shadow answer, a
  row from another worker's queue, a batch job scoring ended rides): a row for it.

Writing a row again changes nothing (one per answer and target). On SQLite, writers take turns
(one write transaction at a time), so the later transaction sees the earlier one's rows. On
PostgreSQL, both take one transaction-scoped advisory lock first: of a feedback and an answer
committed at the same moment, the one that gets the lock second sees the other committed. Answers
without a rollout get no row: only the analysis reads this table.

``paired`` marks answers that share their ride and pairing key (``request_id``, else
``ride_id``) with another answer of the rollout, such as a live answer and its shadow copy: the
paired figures read only those. When an answer arrives late, its partners' rows are marked too.
"""

from __future__ import annotations

import functools
from collections.abc import Collection

import orjson
from sqlalchemy import Connection

ADVISORY_KEY = 0x7269646563617374 + 1  # migrate's "ridecast" lock + 1: outcome writers'

COLUMNS = (
    "prediction_id, target, rollout_id, arm, version, ts, pair_key, prediction, actual, paired"
)
_KEY = "COALESCE(p.request_id, p.ride_id)"
# Each answer of a rollout joined to its ride's feedback; ``{rides}`` narrows it to some rides.
SELECT = f"""
SELECT p.id, f.target, p.rollout_id, p.arm, p.version, p.ts, {_KEY}, p.prediction, f.actual,
       COUNT(*) OVER (PARTITION BY f.target, p.rollout_id, p.ride_id, {_KEY}) > 1
FROM feedback f JOIN predictions p ON p.ride_id = f.ride_id
WHERE p.rollout_id IS NOT NULL{{rides}}
"""
_UPSERT = (
    f"INSERT INTO outcomes ({COLUMNS}) {{select}} "
    "ON CONFLICT (prediction_id, target) DO UPDATE SET paired = excluded.paired "
    "WHERE excluded.paired AND NOT outcomes.paired"
)
# The rides come as one JSON array: one parameter, parsed by the database, whatever their number.
_RIDES = {
    "sqlite": ("json_each(?) AS r", "r.value"),
    "postgresql": ("json_array_elements_text(CAST(%s AS json)) AS r(value)", "r.value"),
}


@functools.cache
def _statements(dialect: str) -> tuple[str, str]:
    """(the rides among the parameter's that have feedback, the upsert of their outcomes), in
    ``dialect``'s driver syntax."""
    if dialect not in _RIDES:
        raise ValueError(f"the prediction log supports SQLite and PostgreSQL, not {dialect}")
    rides, ride = _RIDES[dialect]
    with_feedback = (
        f"SELECT DISTINCT {ride} FROM {rides} "
        f"WHERE EXISTS (SELECT 1 FROM feedback f WHERE f.ride_id = {ride})"
    )
    narrowed = SELECT.format(rides=f" AND f.ride_id IN (SELECT {ride} FROM {rides})").strip()
    return with_feedback, _UPSERT.format(select=narrowed)


def _lock(conn: Connection) -> str:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ADVISORY_KEY})")
    return dialect


def _json(ride_ids: Collection[str]) -> str:
    return orjson.dumps(ride_ids if isinstance(ride_ids, list) else list(ride_ids)).decode()


def after_feedback(conn: Connection, ride_ids: Collection[str]) -> None:
    """Write the outcomes of the answers to ``ride_ids``, whose feedback ``conn``'s transaction
    has just written."""
    if ride_ids:
        conn.exec_driver_sql(_statements(_lock(conn))[1], (_json(ride_ids),))


def after_predictions(conn: Connection, ride_ids: Collection[str]) -> None:
    """Write the outcomes of the answers to ``ride_ids`` that ``conn``'s transaction has just
    written, if those rides already have feedback (rarely: one index probe per ride decides)."""
    if not ride_ids:
        return
    with_feedback, upsert = _statements(_lock(conn))
    ended = [r for (r,) in conn.exec_driver_sql(with_feedback, (_json(ride_ids),))]
    if ended:
        conn.exec_driver_sql(upsert, (_json(ended),))
