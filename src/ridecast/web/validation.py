"""Request validation: hand-rolled checks fast enough for the hot path, errors that name the field.

A ride needs ``PULocationID`` and ``DOLocationID`` (TLC zone ids, 1..265 as in the zone table)
and ``trip_distance`` (miles, finite, 0 ≤ d ≤ :data:`MAX_TRIP_DISTANCE`). ``ride_id`` and
``user_id`` are optional strings or integers, echoed back. Other fields are ignored.

Errors use FastAPI's shape, ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``, where
``loc`` is ``["body", <row>, <field>]`` for lists, so a client knows which ride and which field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ridecast.data.zones import MAX_ZONE_ID, VALID_ZONE_IDS
from ridecast.features import RideArrays

# Longer than any taxi ride in the TLC data that is not a meter error (the longest real trips
# are about 200 miles); larger values are rejected rather than extrapolated.
MAX_TRIP_DISTANCE = 500.0
MIN_ZONE_ID = min(VALID_ZONE_IDS)
MAX_ERRORS = 20  # per response: enough to fix a request, short enough to read
ZONE_FIELDS = ("PULocationID", "DOLocationID")
ID_FIELDS = ("ride_id", "user_id")
MAX_ID_LENGTH = 128

Loc = tuple[str | int, ...]


class InvalidInput(Exception):
    """Bad input. ``status`` is 422 (malformed or out of range), 413 (too large) or 415."""

    def __init__(self, problems: list[dict[str, Any]], status: int = 422) -> None:
        self.problems = problems
        self.status = status
        super().__init__("; ".join(f"{p['loc']}: {p['msg']}" for p in problems))

    @classmethod
    def one(cls, loc: Loc, msg: str, kind: str = "value_error", status: int = 422) -> InvalidInput:
        return cls([problem(loc, msg, kind)], status)

    def body(self) -> dict[str, Any]:
        return {"detail": self.problems}


def problem(loc: Loc, msg: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def zone_id(value: Any, loc: Loc) -> int:
    """A TLC zone id; integral floats (``10.0``) are accepted, strings and booleans are not."""
    if type(value) is int:
        if value in VALID_ZONE_IDS:
            return value
    elif type(value) is float and value.is_integer() and int(value) in VALID_ZONE_IDS:
        return int(value)
    name = loc[-1]
    if type(value) in (int, float):
        msg = (
            f"{name} must be a TLC zone id, an integer in {MIN_ZONE_ID}..{MAX_ZONE_ID}; "
            f"got {_shown(value)}"
        )
        return _raise(loc, msg, "zone_range")
    return _raise(loc, f"{name} must be an integer zone id; got {_shown(value)}", "int_type")


def trip_distance(value: Any, loc: Loc) -> float:
    if type(value) is float or type(value) is int:
        d = float(value)
        if 0.0 <= d <= MAX_TRIP_DISTANCE:  # also false for NaN
            return d
        msg = (
            f"trip_distance must be a finite number of miles in 0..{MAX_TRIP_DISTANCE:g}; "
            f"got {_shown(value)}"
        )
        return _raise(loc, msg, "distance_range")
    return _raise(
        loc, f"trip_distance must be a number of miles; got {_shown(value)}", "float_type"
    )


def optional_id(value: Any, loc: Loc) -> str | int | None:
    if value is None:
        return None
    if type(value) is int or (type(value) is str and len(value) <= MAX_ID_LENGTH):
        return value  # type: ignore[no-any-return]
    msg = (
        f"{loc[-1]} must be a string (at most {MAX_ID_LENGTH} characters) or an integer; "
        f"got {_shown(value)}"
    )
    return _raise(loc, msg, "id_type")


def _raise(loc: Loc, msg: str, kind: str) -> Any:
    raise InvalidInput.one(loc, msg, kind)


@dataclass
class RideBatch:
    """Validated rides as columns, in request order."""

    pu: list[int] = field(default_factory=list)
    do: list[int] = field(default_factory=list)
    distance: list[float] = field(default_factory=list)
    ride_ids: list[Any] = field(default_factory=list)
    user_ids: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pu)

    def arrays(self) -> RideArrays:
        return RideArrays(
            pu=np.asarray(self.pu, dtype=np.int64),
            do=np.asarray(self.do, dtype=np.int64),
            distance=np.asarray(self.distance, dtype=np.float64),
        )

    @property
    def has_ids(self) -> bool:
        return any(r is not None for r in self.ride_ids) or any(
            u is not None for u in self.user_ids
        )


def ride(obj: Any, row: int | None = None) -> tuple[int, int, float, Any, Any]:
    """One ride object → (pu, do, distance, ride_id, user_id). Raises :class:`InvalidInput`
    listing every problem of this ride."""
    prefix: Loc = ("body",) if row is None else ("body", row)
    if type(obj) is not dict:
        raise InvalidInput.one(
            prefix,
            "a ride must be a JSON object with PULocationID, DOLocationID and trip_distance; "
            f"got {type(obj).__name__ if obj is not None else 'null'}",
            "model_attributes_type",
        )
    # The common case, checked inline (this runs once per request on the hot path).
    pu = obj.get("PULocationID")
    do = obj.get("DOLocationID")
    d = obj.get("trip_distance")
    ride_id = obj.get("ride_id")
    user_id = obj.get("user_id")
    if (
        type(pu) is int
        and pu in VALID_ZONE_IDS
        and type(do) is int
        and do in VALID_ZONE_IDS
        and (type(d) is float or type(d) is int)
        and 0.0 <= d <= MAX_TRIP_DISTANCE
        and (ride_id is None or type(ride_id) is int or type(ride_id) is str)
        and (user_id is None or type(user_id) is int or type(user_id) is str)
        and (type(ride_id) is not str or len(ride_id) <= MAX_ID_LENGTH)
        and (type(user_id) is not str or len(user_id) <= MAX_ID_LENGTH)
    ):
        return pu, do, float(d), ride_id, user_id
    # Anything else: the careful path, which names every problem.
    if all(name in obj for name in (*ZONE_FIELDS, "trip_distance")):
        try:
            return (
                zone_id(pu, (*prefix, "PULocationID")),
                zone_id(do, (*prefix, "DOLocationID")),
                trip_distance(d, (*prefix, "trip_distance")),
                optional_id(ride_id, (*prefix, "ride_id")),
                optional_id(user_id, (*prefix, "user_id")),
            )
        except InvalidInput:
            pass
    problems: list[dict[str, Any]] = []
    checks: tuple[tuple[str, Any], ...] = (
        ("PULocationID", zone_id),
        ("DOLocationID", zone_id),
        ("trip_distance", trip_distance),
    )
    for name, check in checks:
        if name not in obj:
            problems.append(problem((*prefix, name), f"{name} is required", "missing"))
            continue
        try:
            check(obj[name], (*prefix, name))
        except InvalidInput as exc:
            problems.extend(exc.problems)
    for name in ID_FIELDS:
        try:
            optional_id(obj.get(name), (*prefix, name))
        except InvalidInput as exc:
            problems.extend(exc.problems)
    raise InvalidInput(problems)


def rides(items: Sequence[Any], max_rides: int) -> RideBatch:
    """A list of ride objects. Every bad ride is reported (up to :data:`MAX_ERRORS` problems)."""
    check_count(len(items), max_rides)
    batch = RideBatch()
    problems: list[dict[str, Any]] = []
    for i, obj in enumerate(items):
        try:
            pu, do, d, rid, uid = ride(obj, i)
        except InvalidInput as exc:
            problems.extend(exc.problems)
            if len(problems) >= MAX_ERRORS:
                break
            continue
        batch.pu.append(pu)
        batch.do.append(do)
        batch.distance.append(d)
        batch.ride_ids.append(rid)
        batch.user_ids.append(uid)
    if problems:
        raise InvalidInput(problems[:MAX_ERRORS])
    return batch


def check_count(n: int, max_rides: int) -> None:
    if n == 0:
        raise InvalidInput.one(("body",), "no rides in the request", "too_short")
    if n > max_rides:
        raise InvalidInput.one(
            ("body",),
            f"{n} rides in one request; at most {max_rides} are accepted "
            "(split the request, or raise RIDECAST_SERVE_MAX_RIDES)",
            "too_long",
            status=413,
        )


def columns(
    values: Mapping[str, Sequence[Any]], loc_of: Any, max_rides: int, n: int | None = None
) -> RideBatch:
    """Column-oriented rides (MLflow ``dataframe_split``/``inputs``, OIP tensors).

    ``values`` maps field name → column; ``loc_of(name, row)`` gives an error's location.
    """
    missing = [name for name in (*ZONE_FIELDS, "trip_distance") if name not in values]
    if missing:
        raise InvalidInput(
            [problem(loc_of(name, None), f"{name} is required", "missing") for name in missing]
        )
    if n is None:
        n = len(values["PULocationID"])
    for name in (*ZONE_FIELDS, "trip_distance", *ID_FIELDS):
        if name in values and len(values[name]) != n:
            raise InvalidInput.one(
                loc_of(name, None),
                f"{name} has {len(values[name])} values but PULocationID has {n}",
                "length_mismatch",
            )
    check_count(n, max_rides)
    batch = RideBatch()
    problems: list[dict[str, Any]] = []
    checks: tuple[tuple[str, Any, list[Any]], ...] = (
        ("PULocationID", zone_id, batch.pu),
        ("DOLocationID", zone_id, batch.do),
        ("trip_distance", trip_distance, batch.distance),
        ("ride_id", optional_id, batch.ride_ids),
        ("user_id", optional_id, batch.user_ids),
    )
    for name, check, out in checks:
        column = values.get(name)
        if column is None:
            out.extend([None] * n)
            continue
        for i, value in enumerate(column):
            try:
                out.append(check(value, loc_of(name, i)))
            except InvalidInput as exc:
                problems.extend(exc.problems)
                if len(problems) >= MAX_ERRORS:
                    raise InvalidInput(problems) from None
    if problems:
        raise InvalidInput(problems)
    return batch


def finite_number(value: Any, loc: Loc, *, low: float = 0.0, high: float = 1e6) -> float:
    if type(value) in (int, float) and low <= float(value) <= high and math.isfinite(value):
        return float(value)
    return _raise(
        loc,
        f"{loc[-1]} must be a finite number in {low:g}..{high:g}; got {_shown(value)}",
        "float_type",
    )
