"""Event validation, the dynamic-duration rule, and the in-process broker's group semantics."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import orjson
import pytest

from ridecast.features import RideArrays
from ridecast.predictor import Predictor
from ridecast.stream.broker import GroupMissing, Message, Output, open_broker
from ridecast.stream.consumer import ConsumerConfig, StreamConsumer
from ridecast.stream.dedupe import dedupe_stream
from ridecast.stream.events import decode_batch, decode_ride
from ridecast.stream.memory import MemoryBroker
from ridecast.stream.services import SERVICES, dynamic_duration

GOOD = (
    b'{"ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}, "ride_id": 256}'
)


def test_the_course_event_decodes() -> None:
    assert decode_ride(GOOD) == (256, 130, 205, 3.66)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "no 'data' field"),
        (b"{oops", "invalid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"ride": {}}', "missing field 'ride_id'"),
        (b'{"ride_id": 7}', "ride 7: field 'ride' must be an object"),
        (b'{"ride_id": 7, "ride": {"DOLocationID": 1, "trip_distance": 1}}', "'ride.PULocationID'"),
        (
            b'{"ride_id": 7, "ride": {"PULocationID": "130", "DOLocationID": 1, '
            b'"trip_distance": 1}}',
            "field 'ride.PULocationID' must be a TLC zone id, an integer in 1..265; got str '130'",
        ),
        (
            b'{"ride_id": 7, "ride": {"PULocationID": 999, "DOLocationID": 1, "trip_distance": 1}}',
            "an integer in 1..265 (264 or 265 where the zone is unknown); got 999",
        ),
        (
            b'{"ride_id": 7, "ride": {"PULocationID": 1, "DOLocationID": 1, "trip_distance": -2}}',
            "'ride.trip_distance' must be a finite number of miles in 0..500; got -2",
        ),
        (
            b'{"ride_id": true, "ride": {"PULocationID": 1, "DOLocationID": 1, '
            b'"trip_distance": 1}}',
            "'ride_id' must be an integer or string",
        ),
    ],
)
def test_poison_events_name_the_problem(payload: bytes | None, reason: str) -> None:
    batch, poison = decode_batch([Message("1-0", GOOD), Message("2-0", payload)])
    assert batch.ride_ids == [256] and [m.id for m in batch.messages] == ["1-0"]
    assert len(poison) == 1 and poison[0][0].id == "2-0"
    assert reason in poison[0][1]


class _PacePredictor:
    """Three minutes per mile plus two: a model whose answers are easy to check by hand."""

    version = "7"

    def predict_arrays(self, arrays: RideArrays) -> np.ndarray:
        return 3.0 * arrays.distance + 2.0


def test_dynamic_duration_follows_the_observed_pace() -> None:
    rides = RideArrays(
        pu=np.array([1, 1, 1, 1]), do=np.array([2, 2, 2, 2]), distance=np.full(4, 10.0)
    )
    whole = 32.0  # model minutes for the 10-mile ride
    elapsed = np.array([0.0, 16.0, 32.0, 30.0])
    covered = np.array([0.0, 5.0, 5.0, 10.0])
    total, remaining = dynamic_duration(
        _PacePredictor(),  # type: ignore[arg-type]
        rides,
        elapsed,
        covered,
        np.full(4, -1),
    )
    # Not started: the model's answer. Half-way on the model's pace: unchanged. Half-way at
    # twice the expected time: the remaining half is stretched by (0.5 + 0.5 * 2).
    assert total[0] == pytest.approx(whole)
    assert total[1] == pytest.approx(whole)
    assert remaining[2] == pytest.approx(16.0 * 1.5)
    # The booked distance is covered: nothing remains, the total is the elapsed time.
    assert remaining[3] == 0.0 and total[3] == 30.0


def test_memory_broker_has_redis_group_semantics() -> None:
    b = MemoryBroker()
    b.publish("s", [b"a", b"b", b"c"])
    assert b.ensure_group("s", "g") is True and b.ensure_group("s", "g") is False
    got = b.read("s", "g", "c1", count=2, block_ms=0)
    assert [m.payload for m in got] == [b"a", b"b"] and all(m.deliveries == 1 for m in got)
    assert b.ack("s", "g", [got[0].id]) == 1
    # b is pending with c1; once idle, c2 claims it as its second delivery.
    assert b.claim_idle("s", "g", "c2", min_idle_ms=60_000, count=10) == []
    claimed = b.claim_idle("s", "g", "c2", min_idle_ms=0, count=10)
    assert [(m.payload, m.deliveries) for m in claimed] == [(b"b", 2)]
    b.ensure_group("s", "late", start="$")
    b.publish("s", [b"d"])
    assert [m.payload for m in b.read("s", "late", "c", count=10, block_ms=0)] == [b"d"]
    with pytest.raises(GroupMissing):
        b.read("s", "nope", "c", count=1, block_ms=0)
    info = {g.name: g for g in b.info(["s"])[0].groups}
    assert info["g"].pending == 1 and info["g"].lag == 2  # b pending; c and d not yet read


def test_memory_read_blocks_until_an_event_arrives() -> None:
    b = MemoryBroker()
    b.ensure_group("s", "g")
    threading.Timer(0.1, lambda: b.publish("s", [b"x"])).start()
    started = time.monotonic()
    got = b.read("s", "g", "c", count=5, block_ms=2000)
    assert [m.payload for m in got] == [b"x"] and time.monotonic() - started < 1.5


def test_consumer_on_memory_broker_predicts_and_dead_letters(trained) -> None:  # type: ignore[no-untyped-def]
    broker = open_broker("memory://test-consumer-memory")
    svc = SERVICES["tip"]
    predictor = Predictor(trained.registry.load(svc.default_model_uri))
    config = ConsumerConfig.for_service(svc, trained.settings, consumer="c1")
    config = replace(config, block_ms=10, batch_size=64)
    rides = [
        {
            "ride": {"PULocationID": 10 + i, "DOLocationID": 50, "trip_distance": 1.0 + i},
            "ride_id": i,
        }
        for i in range(200)
    ]
    broker.publish(config.input_stream, [orjson.dumps(r) for r in rides] + [b"garbage"])
    stats = StreamConsumer(broker, svc, predictor, config).run(until_idle=True)
    assert (stats.predicted, stats.dead_lettered) == (200, 1)
    out = [orjson.loads(m.payload or b"") for m in broker.read_range(config.output_stream)]
    expected = predictor.predict_rides([r["ride"] for r in rides])
    assert [o["prediction"]["ride_id"] for o in out] == list(range(200))
    assert [o["prediction"]["ride_tip"] for o in out] == pytest.approx(expected)
    assert {o["model"] for o in out} == {"ride_tip_prediction_model"}
    dead = orjson.loads(broker.read_range(config.dead_letter_stream)[0].payload or b"")
    assert dead["payload"] == "garbage" and "invalid JSON" in dead["error"]
    assert dead["service"] == "tip" and dead["consumer"] == "c1"
    from prometheus_client import REGISTRY

    labels = {"service": "tip", "group": config.group}
    predicted = REGISTRY.get_sample_value(
        "ridecast_stream_events_total", {**labels, "outcome": "predicted"}
    )
    dead_lettered = REGISTRY.get_sample_value(
        "ridecast_stream_events_total", {**labels, "outcome": "dead_lettered"}
    )
    assert (predicted, dead_lettered) == (200, 1)
    assert REGISTRY.get_sample_value("ridecast_stream_batch_seconds_count", labels) == 4


def test_events_redelivered_too_often_are_dead_lettered(trained) -> None:  # type: ignore[no-untyped-def]
    broker = MemoryBroker()
    svc = SERVICES["duration"]
    predictor = Predictor(trained.registry.load(svc.default_model_uri))
    config = replace(
        ConsumerConfig.for_service(svc, trained.settings, consumer="c"),
        claim_idle_ms=0,
        max_deliveries=2,
        block_ms=5,
    )
    broker.ensure_group(config.input_stream, config.group)
    broker.publish(config.input_stream, [GOOD])
    # Two consumers read it and die without acknowledging (deliveries 1 and 2) ...
    broker.read(config.input_stream, config.group, "dead-1", count=1, block_ms=0)
    broker.claim_idle(config.input_stream, config.group, "dead-2", min_idle_ms=0, count=1)
    # ... so the third delivery goes to the dead-letter stream instead of the model.
    stats = StreamConsumer(broker, svc, predictor, config).run(until_idle=True)
    assert (stats.predicted, stats.dead_lettered, stats.claimed) == (0, 1, 1)
    dead = orjson.loads(broker.read_range(config.dead_letter_stream)[0].payload or b"")
    assert "delivered 3 times" in dead["error"] and orjson.loads(dead["payload"])["ride_id"] == 256


def test_dedupe_keeps_the_first_output_per_ride() -> None:
    b = MemoryBroker()
    records = [
        b'{"model": "m", "version": "1", "prediction": {"ride_duration": 1.0, "ride_id": 1}}',
        b'{"model": "m", "version": "1", "prediction": {"ride_duration": 2.0, "ride_id": 2}}',
        b'{"model": "m", "version": "1", "prediction": {"ride_duration": 1.0, "ride_id": 1}}',
        b"not an output",
    ]
    b.publish("out", [Output(r, f"{i}-0") for i, r in enumerate(records)])
    counted = dedupe_stream(b, "out", chunk=2)
    assert (counted.scanned, counted.unique, counted.duplicates, counted.unreadable) == (4, 2, 1, 1)
    assert b.length("out") == 4  # counting changes nothing
    copied = dedupe_stream(b, "out", into="unique")
    assert copied.written == 3 and b.length("unique") == 3
    removed = dedupe_stream(b, "out", delete=True)
    assert removed.deleted == 1 and b.length("out") == 3
