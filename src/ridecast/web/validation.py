"""Request validation: hand-rolled checks fast enough for the hot path, errors that name the field.

A ride is what :mod:`ridecast.rides` says the model can score: ``PULocationID`` and
``DOLocationID`` (ids of the TLC zone table) and ``trip_distance`` (finite miles, 0 ≤ d ≤
:data:`~ridecast.rides.MAX_TRIP_DISTANCE`). ``ride_id`` and ``user_id`` are optional strings or
integers, echoed back. Other fields are ignored.

Errors use FastAPI's shape, ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``, where
``loc`` is ``["body", <row>, <field>]`` for lists, so a client knows which ride and which field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ridecast.features import RideArrays
from ridecast.rides import FIELDS, RideProblem, field_value, ride_inputs, ride_problems

MAX_ERRORS = 20  # per response: enough to fix a request, short enough to read
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
    ride_id = obj.get("ride_id")
    user_id = obj.get("user_id")
    try:
        pu, do, d = ride_inputs(obj)
    except RideProblem:
        pass
    else:
        # The common case, checked inline (this runs once per request on the hot path).
        if (
            (ride_id is None or type(ride_id) is int or type(ride_id) is str)
            and (user_id is None or type(user_id) is int or type(user_id) is str)
            and (type(ride_id) is not str or len(ride_id) <= MAX_ID_LENGTH)
            and (type(user_id) is not str or len(user_id) <= MAX_ID_LENGTH)
        ):
            return pu, do, d, ride_id, user_id
    # Anything else: name every problem.
    problems = [problem((*prefix, p.field), str(p), p.kind) for p in ride_problems(obj)]
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
    missing = [name for name in FIELDS if name not in values]
    if missing:
        raise InvalidInput(
            [problem(loc_of(name, None), f"{name} is required", "missing") for name in missing]
        )
    if n is None:
        n = len(values["PULocationID"])
    for name in (*FIELDS, *ID_FIELDS):
        if name in values and len(values[name]) != n:
            raise InvalidInput.one(
                loc_of(name, None),
                f"{name} has {len(values[name])} values but PULocationID has {n}",
                "length_mismatch",
            )
    check_count(n, max_rides)
    batch = RideBatch()
    problems: list[dict[str, Any]] = []
    inputs: tuple[list[Any], ...] = (batch.pu, batch.do, batch.distance)
    for name, out in zip(FIELDS, inputs, strict=True):
        for i, value in enumerate(values[name]):
            try:
                out.append(field_value(name, value))
            except RideProblem as p:
                problems.append(problem(loc_of(name, i), str(p), p.kind))
                if len(problems) >= MAX_ERRORS:
                    raise InvalidInput(problems) from None
    for name, ids in zip(ID_FIELDS, (batch.ride_ids, batch.user_ids), strict=True):
        column = values.get(name)
        if column is None:
            ids.extend([None] * n)
            continue
        for i, value in enumerate(column):
            try:
                ids.append(optional_id(value, loc_of(name, i)))
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
