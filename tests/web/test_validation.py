"""Request validation: what passes, and errors that name the row and field."""

from __future__ import annotations

import math

import pytest

from ridecast.rides import MAX_TRIP_DISTANCE
from ridecast.web import validation
from ridecast.web.validation import InvalidInput


def test_a_valid_ride_passes_with_ids_echoed() -> None:
    ride = {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40, "ride_id": "r1"}
    assert validation.ride(ride) == (10, 50, 40.0, "r1", None)


def test_integral_floats_are_zone_ids_but_strings_and_bools_are_not() -> None:
    assert validation.ride({"PULocationID": 10.0, "DOLocationID": 50, "trip_distance": 1})[0] == 10
    for bad in ("10", True, 10.5, None, [10]):
        with pytest.raises(InvalidInput) as err:
            validation.ride({"PULocationID": bad, "DOLocationID": 50, "trip_distance": 1})
        assert err.value.problems[0]["loc"] == ["body", "PULocationID"]


@pytest.mark.parametrize("zone", [0, 266, -1, 10**20])
def test_zone_ids_outside_the_tlc_table_are_rejected(zone: int) -> None:
    with pytest.raises(InvalidInput) as err:
        validation.ride({"PULocationID": 1, "DOLocationID": zone, "trip_distance": 1})
    (p,) = err.value.problems
    assert p["loc"] == ["body", "DOLocationID"] and "1..265" in p["msg"] and err.value.status == 422


@pytest.mark.parametrize("distance", [-0.1, math.nan, math.inf, MAX_TRIP_DISTANCE + 1, "3"])
def test_distance_must_be_finite_and_in_range(distance: object) -> None:
    with pytest.raises(InvalidInput) as err:
        validation.ride({"PULocationID": 1, "DOLocationID": 2, "trip_distance": distance})
    assert err.value.problems[0]["loc"] == ["body", "trip_distance"]


def test_every_problem_of_a_list_is_reported_with_its_row() -> None:
    rides = [
        {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1},
        {"PULocationID": 1, "trip_distance": -1},
        "not a ride",
    ]
    with pytest.raises(InvalidInput) as err:
        validation.rides(rides, max_rides=10)
    locs = [p["loc"] for p in err.value.problems]
    assert locs == [["body", 1, "DOLocationID"], ["body", 1, "trip_distance"], ["body", 2]]


def test_too_many_rides_is_413_and_none_is_422() -> None:
    ride = {"PULocationID": 1, "DOLocationID": 2, "trip_distance": 1}
    with pytest.raises(InvalidInput) as err:
        validation.rides([ride] * 11, max_rides=10)
    assert err.value.status == 413
    with pytest.raises(InvalidInput) as err:
        validation.rides([], max_rides=10)
    assert err.value.status == 422


def test_columns_check_lengths_and_name_the_cell() -> None:
    with pytest.raises(InvalidInput) as err:
        validation.columns(
            {"PULocationID": [1, 2], "DOLocationID": [3], "trip_distance": [1.0, 2.0]},
            lambda name, row: ("body", name, row),
            10,
        )
    assert "DOLocationID has 1 values" in err.value.problems[0]["msg"]
    with pytest.raises(InvalidInput) as err:
        validation.columns(
            {"PULocationID": [1, 2], "DOLocationID": [3, 4], "trip_distance": [1.0, -2.0]},
            lambda name, row: ("body", name, row),
            10,
        )
    assert err.value.problems[0]["loc"] == ["body", "trip_distance", 1]
    batch = validation.columns(
        {"PULocationID": [1, 2], "DOLocationID": [3, 4], "trip_distance": [1.0, 2]},
        lambda name, row: ("body", name, row),
        10,
    )
    assert batch.pu == [1, 2] and batch.distance == [1.0, 2.0] and not batch.has_ids
