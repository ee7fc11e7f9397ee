"""Deciding what becomes of each feedback: recorded, a duplicate, or for a ride never predicted.

Anyone who can post feedback can steer a canary, so a ride's outcome counts once, and only for
rides that were predicted. A prediction may still sit in another worker's queue when its ride's
feedback arrives here, so feedback for an unknown ride waits a grace period before it is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, select

from ridecast.monitoring.schema import predictions

# One entry: (arrival time, ride_id, target, actual).
Entry = tuple[float, str, str, float]
STATES = ("recorded", "duplicate", "unknown_ride", "dropped", "rejected")
_CHUNK = 900  # ride ids per IN list: below the oldest SQLite's limit of 999 parameters


@dataclass
class Settled:
    """One flush's verdicts: rows to insert, entries to look at again, and counts by state."""

    insert: list[Entry] = field(default_factory=list)
    waiting: list[Entry] = field(default_factory=list)
    duplicate: int = 0
    unknown_ride: int = 0


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def predicted_rides(conn: Connection, ride_ids: Iterable[str]) -> set[str]:
    """The rides among ``ride_ids`` that have a prediction (an index lookup per chunk).

    Feedback already stored is not looked up: the unique index refuses it at insert time and
    the insert's row count says how many were new.
    """
    rides = sorted(set(ride_ids))
    predicted: set[str] = set()
    for chunk in _chunks(rides):
        predicted.update(
            r
            for (r,) in conn.execute(
                select(predictions.c.ride_id).where(predictions.c.ride_id.in_(chunk)).distinct()
            )
        )
    return predicted


def settle(
    entries: Sequence[Entry],
    predicted: set[str],
    now: float,
    grace: float,
) -> Settled:
    """Sort ``entries`` (oldest first) into insert, wait, duplicate (within ``entries``) and
    unknown ride."""
    out = Settled()
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        key = (entry[1], entry[2])
        if key in seen:
            out.duplicate += 1
            continue
        seen.add(key)
        if entry[1] in predicted:
            out.insert.append(entry)
        elif now - entry[0] < grace:
            out.waiting.append(entry)
        else:
            out.unknown_ride += 1
    return out
