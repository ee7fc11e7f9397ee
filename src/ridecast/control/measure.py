"""One window of a rollout, measured from the prediction log in SQL.

Each figure is an aggregate over an index that leads with ``(rollout_id, arm, ts)`` and covers
what is read: rows of this rollout, of one side's arms and version, in ``[since, until]``; one
query per side and figure, never grouped (SQLite would sort the whole window to group it). How
wrong a version was comes from the ``outcomes`` table: its answers already joined to their ride's
feedback (:mod:`ridecast.monitoring.outcomes`), so no join runs here. Percentiles are nearest-rank
(``numpy``'s ``inverted_cdf``): count the rows, then read the k-th in order, which SQLite can do
without a percentile function. Every figure is None when there was nothing to measure.

Pairs: a shadow answer and its live answer share ``request_id`` (or, without one, ``ride_id``);
so do two live answers of different versions for one ride (the batch job scores both).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, func, select, true
from sqlalchemy.sql import ColumnElement, Select

from ridecast.monitoring import migrate
from ridecast.monitoring.database import shared_engine
from ridecast.monitoring.schema import (
    DROPPED_KIND,
    FAILED_KIND,
    outcomes,
    prediction_errors,
    predictions,
)
from ridecast.rollout.measurements import (
    FAR_APART_MINUTES,
    ArmFigures,
    Measurements,
    PairedFigures,
    ShadowFigures,
)
from ridecast.rollout.state import PREVIEW_ARM, SHADOW_ARM, RolloutState

_migrated: set[str] = set()


def engine_for(url: str) -> Engine:
    """The engine for ``url``, one per process, its schema at head (upgraded once if not)."""
    engine = shared_engine(url)
    if url not in _migrated:
        migrate.upgrade(engine)
        _migrated.add(url)
    return engine


def measure_url(
    url: str, state: RolloutState, since: float, until: float, target: str
) -> Measurements:
    return measure(engine_for(url), state, since, until, target)


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


class Window:
    """The SQL conditions of one rollout's window."""

    def __init__(self, state: RolloutState, since: float, until: float) -> None:
        self.rollout_id = state.id
        self.lo, self.hi = _utc(since), _utc(until)

    def rows(self, table: Any, arms: tuple[str, ...], version: str | None) -> ColumnElement[bool]:
        conditions = [
            table.c.rollout_id == self.rollout_id,
            table.c.arm.in_(arms) if len(arms) > 1 else table.c.arm == arms[0],
            table.c.ts >= self.lo,
            table.c.ts <= self.hi,
        ]
        if version is not None:
            conditions.append(table.c.version == version)
        return and_(*conditions)


def _nearest_rank(conn: Connection, query: Select[Any], value: Any, n: int, q: float) -> Any:
    """The ``q``-quantile (nearest rank) of ``value`` over ``query``'s ``n`` rows.

    A high quantile is read from the top (descending, offset n − 1 − k): with LIMIT + OFFSET the
    database keeps only the top n − k rows while it scans, instead of sorting all n (p99 of
    500,000 SQLite rows: 5 s sorted in full, a fraction of that from the top)."""
    if n == 0:
        return None
    k = max(0, math.ceil(q * n) - 1)
    values = query.with_only_columns(value)
    if k > n // 2:
        return conn.execute(values.order_by(value.desc()).offset(n - 1 - k).limit(1)).scalar()
    return conn.execute(values.order_by(value).offset(k).limit(1)).scalar()


def _sample_variance(n: int, total: float | None, squares: float | None) -> float | None:
    if n < 2 or total is None or squares is None:
        return None
    return max(0.0, (squares - total * total / n) / (n - 1))


Side = tuple[str, tuple[str, ...], str]  # (arm it reports as, arms it takes rows from, version)


def sides_of(state: RolloutState) -> tuple[Side, Side]:
    """The stable side and the candidate's, whose rows include its shadow and preview answers."""
    candidate_arms = tuple(dict.fromkeys((state.candidate_arm, SHADOW_ARM, PREVIEW_ARM)))
    return (
        (state.stable_arm, (state.stable_arm,), state.stable_version),
        (state.candidate_arm, candidate_arms, state.candidate_version),
    )


def error_query(
    window: Window, arms: tuple[str, ...], version: str, target: str
) -> Select[int, Any, Any]:
    """One version's error over the window: its answers that have feedback (``target``), their
    count, sum of absolute errors and sum of squared absolute errors; one range scan."""
    o = outcomes
    abs_error = func.abs(o.c.prediction - o.c.actual)
    return select(func.count(), func.sum(abs_error), func.sum(abs_error * abs_error)).where(
        window.rows(o, arms, version), o.c.target == target
    )


def _arms(
    conn: Connection, window: Window, sides: tuple[Side, ...], target: str
) -> list[ArmFigures]:
    """Each side's count and mean of its answers, then its p99 latency from the top, then its
    error from the outcomes: three indexed range scans per side."""
    p, e = predictions, prediction_errors
    arms = tuple(dict.fromkeys(a for _, side_arms, _ in sides for a in side_arms))
    failed = conn.execute(
        select(e.c.arm, e.c.version, func.sum(e.c.count))
        .where(window.rows(e, arms, None), e.c.kind == FAILED_KIND)
        .group_by(e.c.arm, e.c.version)
    ).all()
    out = []
    for label, side_arms, version in sides:
        where = window.rows(p, side_arms, version)
        requests, predicted = conn.execute(
            select(func.count(), func.sum(p.c.prediction)).where(where)
        ).one()
        requests = int(requests)
        joined, total, squares = conn.execute(error_query(window, side_arms, version, target)).one()
        joined = int(joined)
        total, squares = float(total or 0.0), float(squares or 0.0)
        out.append(
            ArmFigures(
                version=version,
                arm=label,
                requests=requests,
                errors=sum(int(c) for a, v, c in failed if a in side_arms and v == version),
                p99_latency_ms=_nearest_rank(
                    conn, select(p.c.id).where(where), p.c.latency_ms, requests, 0.99
                ),
                mean_prediction=float(predicted) / requests if requests else None,
                joined=joined,
                mae=total / joined if joined else None,
                abs_error_var=_sample_variance(joined, total, squares),
            )
        )
    return out


def _pairs(
    table: Any,
    key: ColumnElement[Any],
    window: Window,
    first: tuple[tuple[str, ...], str],
    second: tuple[tuple[str, ...], str | None],
    *conditions: ColumnElement[bool],
    extra: tuple[ColumnElement[Any], ...] = (),
) -> Any:
    """One row per request answered by both sides: (key, first, second, *extra), from the
    rows of ``table`` (predictions, or outcomes) in the window that meet ``conditions``.

    Grouping by the pairing key (a sort) pairs without a self-join, which SQLite could only do
    row by row. A side that answered one request twice counts with its mean answer.
    """
    t = table
    (arms_a, version_a), (arms_b, version_b) = first, second
    in_a = and_(t.c.arm.in_(arms_a), t.c.version == version_a)
    in_b = (
        t.c.arm.in_(arms_b)
        if version_b is None
        else and_(t.c.arm.in_(arms_b), t.c.version == version_b)
    )
    arms = tuple(dict.fromkeys(arms_a + arms_b))
    return (
        select(
            key.label("key"),
            func.avg(case((in_a, t.c.prediction))).label("a"),
            func.avg(case((in_b, t.c.prediction))).label("b"),
            *extra,
        )
        .where(window.rows(t, arms, None), *conditions)
        .group_by(key)
        .having(and_(func.count(case((in_a, 1))) > 0, func.count(case((in_b, 1))) > 0))
        .subquery("pairs")
    )


def _shadow(
    conn: Connection, window: Window, state: RolloutState, live_arms: tuple[str, ...]
) -> ShadowFigures:
    s, e = predictions, prediction_errors
    shadow_rows = window.rows(s, (SHADOW_ARM,), state.candidate_version)
    count = conn.execute(select(func.count()).where(shadow_rows)).scalar_one()
    p99 = _nearest_rank(conn, select(s.c.id).where(shadow_rows), s.c.latency_ms, count, 0.99)
    dropped = conn.execute(
        select(func.coalesce(func.sum(e.c.count), 0)).where(
            window.rows(e, (SHADOW_ARM,), state.candidate_version), e.c.kind == DROPPED_KIND
        )
    ).scalar_one()
    empty = ShadowFigures(shadow_p99_latency_ms=p99, dropped=int(dropped))
    if not live_arms or count == 0:
        return empty
    key = func.coalesce(s.c.request_id, s.c.ride_id)
    pairs = _pairs(
        s,
        key,
        window,
        ((SHADOW_ARM,), state.candidate_version),
        (live_arms, None),
        key.is_not(None),
    )
    x, y = pairs.c.a, pairs.c.b  # shadow, live
    diff = x - y
    n, abs_mean, signed_mean, sx, sy, sxx, syy, sxy, over = conn.execute(
        select(
            func.count(),
            func.avg(func.abs(diff)),
            func.avg(diff),
            func.sum(x),
            func.sum(y),
            func.sum(x * x),
            func.sum(y * y),
            func.sum(x * y),
            func.sum(case((func.abs(diff) > FAR_APART_MINUTES, 1), else_=0)),
        ).select_from(pairs)
    ).one()
    n = int(n)
    if n == 0:
        return empty
    correlation = None
    if n >= 2:
        spread = (n * sxx - sx * sx) * (n * syy - sy * sy)
        if spread > 0:
            correlation = (n * sxy - sx * sy) / math.sqrt(spread)
    return ShadowFigures(
        n=n,
        mean_abs_diff=float(abs_mean),
        mean_signed_diff=float(signed_mean),
        correlation=correlation,
        share_over_2_min=float(over) / n,
        p95_abs_diff=_nearest_rank(
            conn, select(pairs.c.key).select_from(pairs), func.abs(diff), n, 0.95
        ),
        shadow_p99_latency_ms=p99,
        dropped=int(dropped),
    )


def _paired(
    conn: Connection,
    window: Window,
    state: RolloutState,
    candidate_arms: tuple[str, ...],
    target: str,
) -> PairedFigures:
    """Rides both versions answered, with feedback: from the outcomes marked ``paired`` (the
    answers that share their ride and key with another one), so a canary without pairs costs
    nothing here."""
    o = outcomes
    pairs = _pairs(
        o,
        o.c.pair_key,
        window,
        (candidate_arms, state.candidate_version),
        ((state.stable_arm,), state.stable_version),
        o.c.target == target,
        o.c.paired == true(),
        extra=(func.max(o.c.actual).label("actual"),),
    )
    d = func.abs(pairs.c.a - pairs.c.actual) - func.abs(pairs.c.b - pairs.c.actual)
    n, total, squares = conn.execute(
        select(func.count(), func.sum(d), func.sum(d * d)).select_from(pairs)
    ).one()
    n = int(n)
    return PairedFigures(
        n=n,
        mean_diff=None if n == 0 else float(total) / n,
        var_diff=_sample_variance(n, total, squares),
    )


def measure(
    engine: Engine, state: RolloutState, since: float, until: float, target: str
) -> Measurements:
    """The figures of ``state``'s rollout over ``[since, until]`` (unix seconds).

    The candidate's figures include its shadow answers (arm ``shadow``) and its preview answers
    (arm ``preview``): before a blue/green switch, or in a shadow rollout, those are the
    candidate answering. ``target`` is the feedback target the model predicts (duration, tip or
    cost).
    """
    window = Window(state, since, until)
    both = sides_of(state)
    candidate_arms = both[1][1]
    live_arms = tuple(a for a in dict.fromkeys(state.arms) if a != SHADOW_ARM)
    with engine.connect() as conn:
        stable, candidate = _arms(conn, window, both, target)
        shadow = _shadow(conn, window, state, live_arms)
        paired = _paired(conn, window, state, candidate_arms, target)
    return Measurements(
        since=since, until=until, stable=stable, candidate=candidate, paired=paired, shadow=shadow
    )
