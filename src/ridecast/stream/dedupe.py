"""Spot and remove duplicate outputs. Delivery is at-least-once, so after a consumer dies
mid-batch (or a producer resends a chunk) an output stream may hold two records for one event.

Two records are duplicates when they answer the same ride at the same point: the same
``prediction.ride_id`` (and, for dynamic duration, the same ``prediction.elapsed_minutes``).
The first record is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ridecast.stream.broker import Broker, Output


@dataclass
class DedupeResult:
    scanned: int = 0
    unique: int = 0
    duplicates: int = 0
    unreadable: int = 0
    written: int = 0
    deleted: int = 0


def output_key(payload: bytes | None) -> Any:
    """The identity of an output record, or None when it is not a ridecast output."""
    if payload is None:
        return None
    try:
        record = orjson.loads(payload)
        prediction = record["prediction"]
        ride_id = prediction["ride_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return (ride_id, prediction.get("elapsed_minutes"))


def dedupe_stream(
    broker: Broker,
    stream: str,
    *,
    into: str | None = None,
    delete: bool = False,
    chunk: int = 10_000,
    on_scanned: Callable[[int], None] | None = None,
) -> DedupeResult:
    """Scan ``stream`` in id order. ``into``: copy the first record of each key there;
    ``delete``: remove the later duplicates from ``stream`` itself. Neither: just count."""
    result = DedupeResult()
    seen: set[Any] = set()
    start = "-"
    while True:
        messages = broker.read_range(stream, start, chunk)
        if start != "-" and messages and messages[0].id == start:
            messages = messages[1:]  # the range is inclusive: skip the last one seen
        if not messages:
            break
        keep: list[Output] = []
        drop: list[str] = []
        for m in messages:
            key = output_key(m.payload)
            if key is None:
                result.unreadable += 1
            elif key in seen:
                result.duplicates += 1
                drop.append(m.id)
                continue
            else:
                seen.add(key)
                result.unique += 1
            if m.payload is not None:
                keep.append(Output(m.payload, m.id))
        result.scanned += len(messages)
        if into and keep:
            broker.publish(into, keep)
            result.written += len(keep)
        if delete and drop:
            result.deleted += broker.delete_entries(stream, drop)
        if on_scanned:
            on_scanned(len(messages))
        start = messages[-1].id
    return result
