"""The course's API: ``POST /predict`` with one ride object, or a JSON list of them.

``{"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40}`` →
``{"duration": 27.3, "model_version": "1"}``. The output's name is the model's target
(``duration``, ``tip`` or ``cost``); ``ride_id`` and ``user_id`` are echoed when given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ridecast.rides import MAX_TRIP_DISTANCE, MAX_ZONE_ID, MIN_ZONE_ID
from ridecast.web import validation
from ridecast.web.validation import InvalidInput, RideBatch

Single = tuple[int, int, float, Any, Any]


def loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput.one(
            ("body",), f"the body is not valid JSON: {exc}", "json_invalid"
        ) from None


def parse(body: bytes, max_rides: int) -> Single | RideBatch:
    """One ride (a tuple, for the micro-batcher) or a list of rides (a :class:`RideBatch`)."""
    obj = loads(body)
    if type(obj) is dict:
        return validation.ride(obj)
    if type(obj) is list:
        return validation.rides(obj, max_rides)
    raise InvalidInput.one(
        ("body",),
        "expected a ride object or a list of ride objects, e.g. "
        '{"PULocationID": 10, "DOLocationID": 50, "trip_distance": 4.2}',
        "model_attributes_type",
    )


def encode_one(target: str, value: float, version: str, ride_id: Any, user_id: Any) -> bytes:
    out: dict[str, Any] = {target: value, "model_version": version}
    if ride_id is not None:
        out["ride_id"] = ride_id
    if user_id is not None:
        out["user_id"] = user_id
    return orjson.dumps(out)


def encode_many(
    target: str, values: Sequence[float], version: str | Sequence[str], batch: RideBatch
) -> bytes:
    """The answers in order; ``version`` is one version, or one per ride when a rollout split
    the request between versions."""
    versions = [version] * len(values) if isinstance(version, str) else version
    if not batch.has_ids:
        return orjson.dumps(
            [{target: v, "model_version": ver} for v, ver in zip(values, versions, strict=True)]
        )
    out = []
    for v, ver, rid, uid in zip(values, versions, batch.ride_ids, batch.user_ids, strict=True):
        item: dict[str, Any] = {target: v, "model_version": ver}
        if rid is not None:
            item["ride_id"] = rid
        if uid is not None:
            item["user_id"] = uid
        out.append(item)
    return orjson.dumps(out)


_ZONE_SCHEMA = {"type": "integer", "minimum": MIN_ZONE_ID, "maximum": MAX_ZONE_ID}
RIDE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["PULocationID", "DOLocationID", "trip_distance"],
    "properties": {
        "PULocationID": {**_ZONE_SCHEMA, "example": 10},
        "DOLocationID": {**_ZONE_SCHEMA, "example": 50},
        "trip_distance": {
            "type": "number",
            "minimum": 0,
            "maximum": MAX_TRIP_DISTANCE,
            "example": 4.2,
        },
        "ride_id": {"type": ["string", "integer"], "description": "Echoed back; logged."},
        "user_id": {"type": ["string", "integer"], "description": "Echoed back; the A/B key."},
    },
}

OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [RIDE_SCHEMA, {"type": "array", "items": RIDE_SCHEMA}]},
                "example": {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40},
            }
        },
    },
    "responses": {
        "200": {
            "description": "The prediction (a list of them for a list of rides), in order.",
            "content": {"application/json": {"example": {"duration": 27.3, "model_version": "1"}}},
        },
        "413": {"description": "Body or list too large."},
        "422": {"description": "Invalid ride: `detail[].loc` names the row and field."},
    },
}
