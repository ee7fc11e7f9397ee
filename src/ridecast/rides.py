"""What a ride the model can score is: one rule, checked by web, stream and batch alike.

A ride has three model inputs:

- ``PULocationID`` and ``DOLocationID``: ids of the TLC zone table (:data:`VALID_ZONE_IDS`, all
  of them, 264 "NV" and 265 "NA" included: TLC's codes for an unknown location fill real months
  and the model is trained on them). An integral float (``10.0``) is a zone id; a bool, a
  string or ``10.5`` is not.
- ``trip_distance``: a finite number of miles in ``0..MAX_TRIP_DISTANCE``. Longer readings are
  odometer errors; a model asked about them would extrapolate, so no mode scores them.

The rule comes in two forms. Per ride (a web request, a stream event): :func:`ride_inputs`
returns the inputs as the model takes them or raises :class:`RideProblem`, which names the field,
what was expected and what arrived; :func:`ride_problems` lists every problem of a ride. Each
mode wraps a problem in its own error (web: a 422 whose ``loc`` names row and field; stream: a
poison event naming ride and field). Per column (a batch chunk, a month file):
:func:`in_zone_table`, :func:`distances_in_range` and :func:`scorable` are boolean masks over numpy
arrays, where NaN is never valid; batch turns them into reject reasons.

Training keeps a narrower filter on purpose (:func:`ridecast.data.readers.filter_model_inputs`:
the same zones, up to 100 miles), since what a model may be asked is not what it should learn from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ridecast.data.zones import MAX_ZONE_ID, UNKNOWN_ZONE_IDS, VALID_ZONE_IDS

MIN_ZONE_ID = min(VALID_ZONE_IDS)
# Longer than any taxi ride in TLC data that is not a meter error (the longest real trips are
# about 200 miles).
MAX_TRIP_DISTANCE = 500.0
FIELDS: tuple[str, str, str] = ("PULocationID", "DOLocationID", "trip_distance")

_ZONE = f"a TLC zone id, an integer in {MIN_ZONE_ID}..{MAX_ZONE_ID}"
_UNKNOWN = " or ".join(str(z) for z in sorted(UNKNOWN_ZONE_IDS))
_MILES = f"a finite number of miles in 0..{MAX_TRIP_DISTANCE:g}"
_ZONE_OK = np.zeros(MAX_ZONE_ID + 1, dtype=bool)  # indexed by zone id
_ZONE_OK[sorted(VALID_ZONE_IDS)] = True


class RideProblem(ValueError):
    """One input of a ride that the model cannot score.

    ``str()`` is the whole sentence, e.g. ``"trip_distance must be a finite number of miles in
    0..500; got -2"``; ``field`` and ``detail`` (the sentence after the field's name) let a mode
    name the field its own way; ``kind`` is for machines: ``missing``, ``int_type``,
    ``zone_range``, ``float_type`` or ``distance_range``.
    """

    def __init__(self, field: str, detail: str, kind: str) -> None:
        super().__init__(f"{field} {detail}")
        self.field = field
        self.detail = detail
        self.kind = kind


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return text if type(value) in (int, float) else f"{type(value).__name__} {text}"


def zone_id(value: Any, field: str = "PULocationID") -> int:
    """``value`` as a zone id, or :class:`RideProblem` naming ``field``."""
    if type(value) is int:
        if value in VALID_ZONE_IDS:
            return value
    elif type(value) is float:
        if value.is_integer() and int(value) in VALID_ZONE_IDS:
            return int(value)
    else:
        raise RideProblem(field, f"must be {_ZONE}; got {_shown(value)}", "int_type")
    raise RideProblem(
        field,
        f"must be {_ZONE} ({_UNKNOWN} where the zone is unknown); got {_shown(value)}",
        "zone_range",
    )


def trip_distance(value: Any, field: str = "trip_distance") -> float:
    """``value`` as miles, or :class:`RideProblem` naming ``field``."""
    if type(value) is float or type(value) is int:
        if 0.0 <= value <= MAX_TRIP_DISTANCE:  # also false for NaN
            return float(value)
        raise RideProblem(field, f"must be {_MILES}; got {_shown(value)}", "distance_range")
    raise RideProblem(field, f"must be {_MILES}; got {_shown(value)}", "float_type")


_CHECKS: dict[str, Callable[[Any, str], float]] = {
    "PULocationID": zone_id,
    "DOLocationID": zone_id,
    "trip_distance": trip_distance,
}
_REQUIRED = {"PULocationID": _ZONE, "DOLocationID": _ZONE, "trip_distance": _MILES}


def _required(ride: Mapping[str, Any], field: str) -> Any:
    if field in ride:
        return ride[field]
    raise RideProblem(field, f"is required: {_REQUIRED[field]}", "missing")


def ride_inputs(ride: Mapping[str, Any]) -> tuple[int, int, float]:
    """``(PULocationID, DOLocationID, trip_distance)`` of ``ride`` as the model takes them, or
    the first :class:`RideProblem` (in the order of :data:`FIELDS`)."""
    pu = ride.get("PULocationID")
    do = ride.get("DOLocationID")
    d = ride.get("trip_distance")
    # The common case inline: this runs once per web request and per stream event.
    if (
        type(pu) is int
        and pu in VALID_ZONE_IDS
        and type(do) is int
        and do in VALID_ZONE_IDS
        and (type(d) is float or type(d) is int)
        and 0.0 <= d <= MAX_TRIP_DISTANCE
    ):
        return pu, do, float(d)
    return (
        zone_id(_required(ride, "PULocationID"), "PULocationID"),
        zone_id(_required(ride, "DOLocationID"), "DOLocationID"),
        trip_distance(_required(ride, "trip_distance")),
    )


def ride_problems(ride: Mapping[str, Any]) -> list[RideProblem]:
    """Every problem of ``ride``, in the order of :data:`FIELDS`; empty when it can be scored."""
    problems = []
    for field, check in _CHECKS.items():
        try:
            check(_required(ride, field), field)
        except RideProblem as problem:
            problems.append(problem)
    return problems


def field_value(field: str, value: Any) -> Any:
    """One value of ``field`` (one of :data:`FIELDS`) as the model takes it (an ``int`` zone id
    or ``float`` miles), or :class:`RideProblem`: for rides that arrive column by column."""
    return _CHECKS[field](value, field)


def in_zone_table(ids: np.ndarray) -> np.ndarray:
    """Per element of ``ids`` (any numeric dtype): is it a zone id? False for NaN and 10.5."""
    inside = (ids >= 0) & (ids < _ZONE_OK.size)  # False for NaN
    index = np.where(inside, ids, 0).astype(np.int64)
    return inside & (index == ids) & _ZONE_OK[index]


def distances_in_range(miles: np.ndarray) -> np.ndarray:
    """Per element of ``miles``: is it a trip distance the model scores? False for NaN and ±inf."""
    return (miles >= 0.0) & (miles <= MAX_TRIP_DISTANCE)


def scorable(pu: np.ndarray, do: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Per ride: can the model score it (both zones in the zone table, distance in range)?"""
    return in_zone_table(pu) & in_zone_table(do) & distances_in_range(distance)
