"""The stream wire shapes (the course's) and their validation.

Ride event (input of duration, tip and cost)::

    {"ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}, "ride_id": 256}

Ride-progress event (input of dynamic duration): a ride event plus where the ride is now::

    {"ride": {...}, "ride_id": 256,
     "progress": {"elapsed_minutes": 6.5, "distance_covered": 1.2, "current_location_id": 166}}

``current_location_id`` is optional. Prediction output (the course's shape)::

    {"model": "ride_duration_prediction_model", "version": "3",
     "prediction": {"ride_duration": 21.3, "ride_id": 256}}

While a rollout is active, each output also names its arm and the rollout, after the course's
keys: ``{"model": …, "version": "2", "prediction": {…}, "arm": "canary", "rollout_id": "…"}``.

An event that cannot be predicted is *poison*: :func:`decode_batch` returns it with a reason
that names the ride, the field, what was expected and what arrived, and the consumer sends it to
the dead-letter stream instead of stopping. Which rides can be predicted is
:mod:`ridecast.rides`' rule, the web's and the batch job's too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from ridecast.features import RideArrays
from ridecast.rides import RideProblem, ride_inputs, trip_distance, zone_id
from ridecast.stream.broker import Message

MAX_ELAPSED_MINUTES = 24 * 60.0


class PoisonEvent(ValueError):
    """This event can never be predicted; the message says why."""


@dataclass(frozen=True)
class EventBatch:
    """The valid events of a micro-batch, column-wise, in delivery order."""

    messages: list[Message]
    ride_ids: list[Any]
    arrays: RideArrays
    elapsed: np.ndarray | None = None  # progress events only
    covered: np.ndarray | None = None
    current: np.ndarray | None = None  # zone id now, or -1 when not given

    def __len__(self) -> int:
        return len(self.messages)

    def take(self, index: np.ndarray) -> EventBatch:
        """The events at ``index`` (in that order): one version's share of a routed batch."""
        picks = index.tolist()

        def cut(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[index]

        return EventBatch(
            [self.messages[i] for i in picks],
            [self.ride_ids[i] for i in picks],
            RideArrays(
                pu=self.arrays.pu[index],
                do=self.arrays.do[index],
                distance=self.arrays.distance[index],
            ),
            elapsed=cut(self.elapsed),
            covered=cut(self.covered),
            current=cut(self.current),
        )


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _poison(ride_id: Any, where: str, problem: RideProblem) -> PoisonEvent:
    return PoisonEvent(f"ride {ride_id!r}: field '{where}.{problem.field}' {problem.detail}")


def _ride(ride_id: Any, ride: dict[str, Any]) -> tuple[int, int, float]:
    try:
        return ride_inputs(ride)
    except RideProblem as problem:
        raise _poison(ride_id, "ride", problem) from None


def _number(ride_id: Any, obj: dict[str, Any], key: str, where: str, upper: float) -> float:
    if key not in obj:
        raise PoisonEvent(f"ride {ride_id!r}: missing field '{where}.{key}' (a number)")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PoisonEvent(
            f"ride {ride_id!r}: field '{where}.{key}' must be a number, got {_describe(value)}"
        )
    number = float(value)
    if not math.isfinite(number) or not 0.0 <= number <= upper:
        raise PoisonEvent(
            f"ride {ride_id!r}: field '{where}.{key}' must be between 0 and {upper:g}, got {value}"
        )
    return number


def _event(payload: bytes | None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(ride_id, ride, whole event) of one payload, or PoisonEvent."""
    if payload is None:
        raise PoisonEvent("stream entry has no 'data' field (expected the event as JSON there)")
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PoisonEvent(f"invalid JSON: {exc}") from None
    if not isinstance(event, dict):
        raise PoisonEvent(f"event must be a JSON object, got {type(event).__name__}")
    if "ride_id" not in event:
        raise PoisonEvent("missing field 'ride_id' (an integer or string naming the ride)")
    ride_id = event["ride_id"]
    if isinstance(ride_id, bool) or not isinstance(ride_id, int | str):
        raise PoisonEvent(f"field 'ride_id' must be an integer or string, got {_describe(ride_id)}")
    ride = event.get("ride")
    if not isinstance(ride, dict):
        got = "nothing" if ride is None else _describe(ride)
        raise PoisonEvent(
            f"ride {ride_id!r}: field 'ride' must be an object with PULocationID, DOLocationID "
            f"and trip_distance, got {got}"
        )
    return ride_id, ride, event


def decode_ride(payload: bytes | None) -> tuple[Any, int, int, float]:
    """(ride_id, PULocationID, DOLocationID, trip_distance) of a ride event, or PoisonEvent."""
    ride_id, ride, _ = _event(payload)
    return (ride_id, *_ride(ride_id, ride))


def decode_progress(payload: bytes | None) -> tuple[Any, int, int, float, float, float, int]:
    """A ride-progress event → (ride_id, pu, do, distance, elapsed, covered, current zone or -1)."""
    ride_id, ride, event = _event(payload)
    pu, do, distance = _ride(ride_id, ride)
    progress = event.get("progress")
    if not isinstance(progress, dict):
        got = "nothing" if progress is None else _describe(progress)
        raise PoisonEvent(
            f"ride {ride_id!r}: field 'progress' must be an object with elapsed_minutes and "
            f"distance_covered, got {got}"
        )
    elapsed = _number(ride_id, progress, "elapsed_minutes", "progress", MAX_ELAPSED_MINUTES)
    if "distance_covered" not in progress:
        raise PoisonEvent(f"ride {ride_id!r}: missing field 'progress.distance_covered' (miles)")
    current = -1
    try:
        covered = trip_distance(progress["distance_covered"], "distance_covered")
        if progress.get("current_location_id") is not None:
            current = zone_id(progress["current_location_id"], "current_location_id")
    except RideProblem as problem:
        raise _poison(ride_id, "progress", problem) from None
    return ride_id, pu, do, distance, elapsed, covered, current


def decode_batch(
    messages: Sequence[Message], *, progress: bool = False
) -> tuple[EventBatch, list[tuple[Message, str]]]:
    """Split a micro-batch into the valid events (as arrays) and the poison ones (with reasons)."""
    good: list[Message] = []
    rows: list[tuple[Any, ...]] = []
    poison: list[tuple[Message, str]] = []
    decode = decode_progress if progress else decode_ride
    loads = orjson.loads
    for message in messages:
        if not progress:
            # Fast path for a well-formed ride event; anything else takes the careful path
            # below, which names what is wrong.
            try:
                event = loads(message.payload)  # type: ignore[arg-type]
                ride_id = event["ride_id"]
                if type(ride_id) is int or type(ride_id) is str:
                    pu, do, distance = ride_inputs(event["ride"])
                    rows.append((ride_id, pu, do, distance))
                    good.append(message)
                    continue
            except Exception:  # the careful path below names the problem
                pass
        try:
            rows.append(decode(message.payload))
        except PoisonEvent as exc:
            poison.append((message, str(exc)))
        else:
            good.append(message)
    columns = list(zip(*rows, strict=True)) if rows else [()] * (7 if progress else 4)
    arrays = RideArrays(
        pu=np.array(columns[1], dtype=np.int64),
        do=np.array(columns[2], dtype=np.int64),
        distance=np.array(columns[3], dtype=np.float64),
    )
    if not progress:
        return EventBatch(good, list(columns[0]), arrays), poison
    batch = EventBatch(
        good,
        list(columns[0]),
        arrays,
        elapsed=np.array(columns[4], dtype=np.float64),
        covered=np.array(columns[5], dtype=np.float64),
        current=np.array(columns[6], dtype=np.int64),
    )
    return batch, poison


def ride_event(ride_id: Any, pu: int, do: int, distance: float) -> dict[str, Any]:
    """The course's ride event."""
    return {
        "ride": {"PULocationID": pu, "DOLocationID": do, "trip_distance": distance},
        "ride_id": ride_id,
    }


def prediction_output(model: str, version: str, key: str, value: float, ride_id: Any) -> bytes:
    """The course's output record: ``{"model", "version", "prediction": {key, "ride_id"}}``."""
    return orjson.dumps(
        {"model": model, "version": version, "prediction": {key: value, "ride_id": ride_id}}
    )


def dead_letter(
    message: Message, error: str, *, stream: str, group: str, consumer: str, service: str
) -> bytes:
    """What the dead-letter stream keeps: why, where from, and the original payload verbatim
    (as text when it is UTF-8, else base64 in ``payload_base64``)."""
    record: dict[str, Any] = {
        "error": error,
        "stream": stream,
        "id": message.id,
        "group": group,
        "consumer": consumer,
        "service": service,
        "deliveries": message.deliveries,
        "failed_at": time.time(),
    }
    raw = message.payload
    if raw is None:
        record["payload"] = None
    else:
        try:
            record["payload"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            import base64

            record["payload_base64"] = base64.b64encode(raw).decode()
    return orjson.dumps(record)
