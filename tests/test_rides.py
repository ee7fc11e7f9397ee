"""One rule of what a ride the model can score: web, stream and batch agree on every tricky ride."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pytest

from ridecast import rides
from ridecast.batch.job import REJECT_REASONS, check_rides
from ridecast.batch.sources import TripChunk
from ridecast.data.schema import Month
from ridecast.stream.broker import Message
from ridecast.stream.events import decode_batch, decode_ride
from ridecast.web import validation
from ridecast.web.validation import InvalidInput

# (PULocationID, DOLocationID, trip_distance) → can the model score it?
TRICKY: list[tuple[Any, Any, Any, bool]] = [
    (10, 50, 3.5, True),
    (0, 50, 3.5, False),  # not a zone
    (264, 265, 3.5, True),  # TLC's "unknown" zones are in the table, and in the training data
    (266, 50, 3.5, False),  # one past the table
    (10, 50, math.nan, False),
    (10, 50, math.inf, False),
    (10, 50, -math.inf, False),
    (10, 50, -0.5, False),
    (10, 50, 0.0, True),
    (10, 50, 499.0, True),
    (10, 50, 500, True),  # the bound itself, as an integer
    (10, 50, 501.0, False),
    (10, 50, 5000.0, False),  # an odometer glitch
    (10.0, 50, 3.5, True),  # an integral float is a zone id
    (10.5, 50, 3.5, False),
    (10, -1, 3.5, False),
]
# Values a TLC file's numeric columns cannot hold (batch never sees them): web and stream only.
WIRE_ONLY: list[tuple[Any, Any, Any, bool]] = [
    (True, 50, 3.5, False),
    (10, 50, True, False),
    ("10", 50, 3.5, False),
    (10, 50, "3.5", False),
    (None, 50, 3.5, False),
]


def _web(pu: Any, do: Any, distance: Any) -> bool:
    try:
        validation.ride({"PULocationID": pu, "DOLocationID": do, "trip_distance": distance})
    except InvalidInput:
        return False
    return True


def _web_columns(pu: Any, do: Any, distance: Any) -> bool:
    """The column-wise protocols (MLflow dataframe_split, OIP tensors)."""
    columns = {"PULocationID": [pu], "DOLocationID": [do], "trip_distance": [distance]}
    try:
        validation.columns(columns, lambda name, row: ("body", name, row), max_rides=10)
    except InvalidInput:
        return False
    return True


def _stream(pu: Any, do: Any, distance: Any) -> bool:
    """Through the consumer's decoder (its fast path and its careful path)."""
    ride = {"PULocationID": pu, "DOLocationID": do, "trip_distance": distance}
    # JSON has no NaN or infinity: such a distance arrives as Python's json writes it (NaN,
    # Infinity), which the consumer refuses as it refuses any event that is not JSON.
    payload = json.dumps({"ride": ride, "ride_id": 1}).encode()
    batch, poison = decode_batch([Message("1-0", payload)])
    assert len(batch) + len(poison) == 1
    return len(batch) == 1


def _batch(rows: list[tuple[Any, Any, Any, bool]]) -> list[bool]:
    n = len(rows)
    pickup = np.full(n, np.datetime64(datetime(2025, 2, 10, 12, 0), "us"))
    chunk = TripChunk(
        source_row=np.arange(n, dtype=np.int64),
        pickup=pickup,
        dropoff=pickup + np.timedelta64(10, "m"),
        pu=np.array([r[0] for r in rows], dtype=np.float64),
        do=np.array([r[1] for r in rows], dtype=np.float64),
        distance=np.array([r[2] for r in rows], dtype=np.float64),
    )
    reasons, _ = check_rides(chunk, Month(2025, 2))
    return (reasons == 0).tolist()  # type: ignore[no-any-return]


def test_web_stream_and_batch_score_the_same_rides() -> None:
    expected = [ok for *_, ok in TRICKY]
    assert [_web(*r[:3]) for r in TRICKY] == expected
    assert [_web_columns(*r[:3]) for r in TRICKY] == expected
    assert [_stream(*r[:3]) for r in TRICKY] == expected
    assert _batch(TRICKY) == expected
    columns = [np.array([r[i] for r in TRICKY], dtype=np.float64) for i in range(3)]
    assert rides.scorable(*columns).tolist() == expected
    wire = [ok for *_, ok in WIRE_ONLY]
    assert [_web(*r[:3]) for r in WIRE_ONLY] == wire
    assert [_stream(*r[:3]) for r in WIRE_ONLY] == wire


def test_batch_gives_each_unscorable_ride_its_reason() -> None:
    reasons, _ = check_rides(
        TripChunk(
            source_row=np.arange(5, dtype=np.int64),
            pickup=np.full(5, np.datetime64("2025-02-10T12:00", "us")),
            dropoff=np.full(5, np.datetime64("2025-02-10T12:10", "us")),
            pu=np.array([266.0, 10.5, 10.0, 10.0, 10.0]),
            do=np.full(5, 50.0),
            distance=np.array([3.0, 3.0, -1.0, 501.0, np.inf]),
        ),
        Month(2025, 2),
    )
    names = [REJECT_REASONS[code - 1] for code in reasons.tolist()]
    assert names == [
        "unknown_zone",
        "unknown_zone",
        "negative_distance",
        "distance_out_of_range",
        "distance_out_of_range",
    ]


@pytest.mark.parametrize(
    ("ride", "field", "words"),
    [
        ({"PULocationID": 0}, "PULocationID", ["1..265", "264 or 265", "got 0"]),
        ({"DOLocationID": "130"}, "DOLocationID", ["integer in 1..265", "got str '130'"]),
        ({"trip_distance": 501.0}, "trip_distance", ["miles in 0..500", "got 501.0"]),
        ({"trip_distance": None}, "trip_distance", ["miles in 0..500", "got null"]),
    ],
)
def test_every_message_names_the_field_the_range_and_what_came(
    ride: dict[str, Any], field: str, words: list[str]
) -> None:
    whole = {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 3.0} | ride
    with pytest.raises(rides.RideProblem) as err:
        rides.ride_inputs(whole)
    problem = err.value
    assert problem.field == field and str(problem).startswith(f"{field} must be ")
    assert all(w in problem.detail for w in words), problem.detail
    # The same words reach each mode's own error.
    with pytest.raises(InvalidInput) as web:
        validation.ride(whole, row=3)
    assert web.value.problems == [
        {"loc": ["body", 3, field], "msg": str(problem), "type": problem.kind}
    ]
    poison = decode_batch([Message("1-0", orjson.dumps({"ride": whole, "ride_id": 9}))])[1]
    assert poison[0][1] == f"ride 9: field 'ride.{field}' {problem.detail}"


def test_every_problem_of_a_ride_is_listed_and_a_missing_field_says_what_it_needs() -> None:
    problems = rides.ride_problems({"PULocationID": 999, "trip_distance": -1})
    assert [(p.field, p.kind) for p in problems] == [
        ("PULocationID", "zone_range"),
        ("DOLocationID", "missing"),
        ("trip_distance", "distance_range"),
    ]
    assert str(problems[1]) == "DOLocationID is required: a TLC zone id, an integer in 1..265"
    assert rides.ride_problems({"PULocationID": 1, "DOLocationID": 2, "trip_distance": 3}) == []
    assert decode_ride(b'{"ride": {"PULocationID": 10.0, "DOLocationID": 2, "trip_distance": 3}, '
                       b'"ride_id": 5}') == (5, 10, 2, 3.0)  # fmt: skip
