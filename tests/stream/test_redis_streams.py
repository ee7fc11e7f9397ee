"""Against the real Redis: at-least-once through kill -9 and a Redis restart, poison events,
two consumers sharing a group, and where a new group starts."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import orjson
import pytest

from ridecast.predictor import Predictor
from ridecast.stream.consumer import ConsumerConfig, StreamConsumer
from ridecast.stream.dedupe import dedupe_stream
from ridecast.stream.redis_streams import RedisStreamBroker
from ridecast.stream.services import SERVICES

from .conftest import (
    BIN,
    Consumers,
    RedisServer,
    Streams,
    free_port,
    group_consumers,
    wait_until,
)


def ride_events(n: int, start: int = 0) -> list[bytes]:
    return [
        orjson.dumps(
            {
                "ride": {
                    "PULocationID": 1 + i % 260,
                    "DOLocationID": 1 + (i * 7) % 260,
                    "trip_distance": round(0.5 + (i % 97) / 10, 2),
                },
                "ride_id": i,
            }
        )
        for i in range(start, start + n)
    ]


def publish(broker: RedisStreamBroker, stream: str, payloads: list[bytes]) -> list[str]:
    ids: list[str] = []
    for i in range(0, len(payloads), 5000):
        ids += broker.publish(stream, payloads[i : i + 5000])
    return ids


def answered(broker: RedisStreamBroker, stream: str) -> list[str]:
    """The event id each output answers, in output order."""
    out: list[str] = []
    start = "-"
    while True:
        page = broker.source_ids(stream, start, 10_000)
        ids = [m.id for m in broker.read_range(stream, start, 10_000)]
        if start != "-":
            page, ids = page[1:], ids[1:]
        if not ids:
            return out
        out += page
        start = ids[-1]


@pytest.mark.timeout(120)
def test_poison_goes_to_dead_letters_while_the_rest_flow(
    trained,  # type: ignore[no-untyped-def]
    broker: RedisStreamBroker,
    streams: Streams,
) -> None:
    svc = SERVICES["duration"]
    predictor = Predictor(trained.registry.load(svc.default_model_uri))
    config = replace(
        ConsumerConfig.for_service(
            svc,
            trained.settings,
            group=streams.group,
            consumer="c1",
            input_stream=streams.events,
            output_stream=streams.outputs,
        ),
        batch_size=100,
        block_ms=50,
    )
    good = ride_events(1000)
    poison = [
        b"{definitely not json",
        b'{"ride_id": 5}',
        b'{"ride_id": 6, "ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": "3"}}',
    ]
    mixed = good[:500] + poison + good[500:]
    ids = publish(broker, streams.events, mixed)
    stats = StreamConsumer(broker, svc, predictor, config).run(until_idle=True)
    assert (stats.predicted, stats.dead_lettered) == (1000, 3)

    outputs = [
        orjson.loads(m.payload or b"") for m in broker.read_range(streams.outputs, count=2000)
    ]
    assert [o["prediction"]["ride_id"] for o in outputs] == list(range(1000))
    assert outputs[0]["model"] == "ride_duration_prediction_model"
    assert outputs[0]["version"] == predictor.version
    expected = predictor.predict_rides([orjson.loads(p)["ride"] for p in good])
    assert [o["prediction"]["ride_duration"] for o in outputs] == pytest.approx(expected)
    assert set(answered(broker, streams.outputs)) == set(ids) - set(ids[500:503])

    dead = [orjson.loads(m.payload or b"") for m in broker.read_range(streams.dead)]
    assert [d["payload"].encode() for d in dead] == poison
    assert [d["id"] for d in dead] == ids[500:503]
    assert "invalid JSON" in dead[0]["error"]
    assert "ride 5: field 'ride' must be an object" in dead[1]["error"]
    assert (
        "ride 6: field 'ride.trip_distance' must be a finite number of miles in 0..500; got str"
        in dead[2]["error"]
    )
    group = broker.info([streams.events])[0].groups[0]
    assert (group.pending, group.lag) == (0, 0)


@pytest.mark.timeout(60)
def test_new_group_starts_at_the_beginning_unless_told_latest(
    trained,  # type: ignore[no-untyped-def]
    broker: RedisStreamBroker,
    streams: Streams,
) -> None:
    svc = SERVICES["cost"]
    predictor = Predictor(trained.registry.load(svc.default_model_uri))
    publish(broker, streams.events, ride_events(300))  # before any consumer exists
    base = ConsumerConfig.for_service(
        svc, trained.settings, input_stream=streams.events, output_stream=streams.outputs
    )
    earliest = replace(base, group=f"{streams.group}-a", consumer="a", block_ms=20)
    assert StreamConsumer(broker, svc, predictor, earliest).run(until_idle=True).predicted == 300

    latest = replace(base, group=f"{streams.group}-b", consumer="b", block_ms=20, start="$")
    stop = threading.Event()
    runner = StreamConsumer(broker, svc, predictor, latest)
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    try:
        wait_until(
            lambda: any(g.name == latest.group for g in broker.info([streams.events])[0].groups),
            10,
            "the latest group",
        )
        publish(broker, streams.events, ride_events(20, start=300))
        wait_until(lambda: runner.stats.predicted >= 20, 10, "20 new events")
    finally:
        stop.set()
        thread.join(10)
    assert runner.stats.predicted == 20  # only what arrived after the group was created


class Running:
    """A consumer on its own thread and its own Redis connection, stopped like SIGTERM does."""

    def __init__(self, url: str, config: ConsumerConfig, predictor: Predictor) -> None:
        self.broker = RedisStreamBroker(url)
        self.messages: list[str] = []
        self.consumer = StreamConsumer(
            self.broker, SERVICES["duration"], predictor, config, log=self.messages.append
        )
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.consumer.run, args=(self.stop_event,))
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the consumer did not stop"
        self.broker.close()


def duration_config(trained, streams: Streams, name: str, **changes: object) -> ConsumerConfig:  # type: ignore[no-untyped-def]
    config = ConsumerConfig.for_service(
        SERVICES["duration"],
        trained.settings,
        group=streams.group,
        consumer=name,
        input_stream=streams.events,
        output_stream=streams.outputs,
    )
    return replace(config, block_ms=100, **changes)  # type: ignore[arg-type]


@pytest.mark.timeout(120)
def test_two_consumers_split_the_load(
    trained,  # type: ignore[no-untyped-def]
    redis_url: str,
    broker: RedisStreamBroker,
    streams: Streams,
) -> None:
    predictor = Predictor(trained.registry.load("models:/ride-duration@champion"))
    running = [
        Running(redis_url, duration_config(trained, streams, f"c{i}", batch_size=100), predictor)
        for i in (1, 2)
    ]
    try:
        wait_until(lambda: group_consumers(broker, streams.events) == 2, 30, "two consumers")
        ids = publish(broker, streams.events, ride_events(20_000))
        wait_until(lambda: broker.length(streams.outputs) >= 20_000, 60, "20,000 outputs", 0.1)
    finally:
        for r in running:
            r.stop()
    done = answered(broker, streams.outputs)
    assert sorted(done) == sorted(ids)  # every event once: nothing failed, so no duplicate
    shares = [r.consumer.stats.predicted for r in running]
    assert sum(shares) == 20_000
    assert min(shares) >= 2_000, f"one consumer did almost nothing: {shares}"


@pytest.mark.timeout(240)
def test_kill_9_mid_stream_loses_nothing(
    trained,  # type: ignore[no-untyped-def]
    redis_url: str,
    broker: RedisStreamBroker,
    streams: Streams,
    consumers: Consumers,
) -> None:
    broker.ensure_group(streams.events, streams.group)
    victim = consumers.start(
        "victim", redis_url, streams, "--batch-size", "200", "--claim-idle-ms", "1000"
    )
    wait_until(  # starting a process that imports MLflow takes a while on a busy machine
        lambda: group_consumers(broker, streams.events) == 1, 150, "the consumer"
    )
    ids = publish(broker, streams.events, ride_events(30_000))
    wait_until(lambda: broker.length(streams.outputs) >= 2_000, 60, "the first outputs", 0.01)

    def pending_of_victim() -> int:
        rows = broker.client.xinfo_consumers(streams.events, streams.group)
        return next(int(r["pending"]) for r in rows if r["name"] in (b"victim", "victim"))

    # Freeze it mid-batch (events read, not yet acknowledged), then kill -9.
    for _ in range(200):
        os.kill(victim.pid, signal.SIGSTOP)
        if pending_of_victim() > 0:
            break
        os.kill(victim.pid, signal.SIGCONT)
        time.sleep(0.003)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    stranded = pending_of_victim()
    assert stranded > 0, "the consumer was never caught holding events"
    assert broker.length(streams.outputs) < 30_000, "it finished before it was killed"

    predictor = Predictor(trained.registry.load("models:/ride-duration@champion"))
    rescuer = Running(
        redis_url, duration_config(trained, streams, "rescuer", claim_idle_ms=1000), predictor
    )
    try:
        wait_until(lambda: len(set(answered(broker, streams.outputs))) >= 30_000, 90, "all", 0.5)
    finally:
        rescuer.stop()
    done = answered(broker, streams.outputs)
    assert set(done) == set(ids)  # every event has its prediction
    assert rescuer.consumer.stats.claimed >= stranded
    result = dedupe_stream(broker, streams.outputs)
    assert result.unique == 30_000 and result.duplicates == len(done) - 30_000
    assert broker.info([streams.events])[0].groups[0].pending == 0


def _survives(
    trained,  # type: ignore[no-untyped-def]
    redis_server: RedisServer,
    streams: Streams,
    fault: Callable[[RedisStreamBroker, Running], None],
    recover: Callable[[RedisStreamBroker], None],
) -> str:
    """20,000 events, ``fault`` mid-stream, ``recover``, 2,000 more: the consumer never dies,
    every ride id gets its prediction, duplicates are only what at-least-once allows, and
    ``ridecast stream dedupe --delete`` leaves exactly one answer per ride. Returns the
    consumer's log."""
    broker = RedisStreamBroker(redis_server.url)
    predictor = Predictor(trained.registry.load("models:/ride-duration@champion"))
    running = Running(
        redis_server.url,
        duration_config(trained, streams, "c1", batch_size=100, claim_idle_ms=1000),
        predictor,
    )
    try:
        try:
            wait_until(lambda: group_consumers(broker, streams.events) == 1, 30, "the consumer")
            first = publish(broker, streams.events, ride_events(20_000))
            wait_until(lambda: broker.length(streams.outputs) >= 1_000, 60, "first outputs", 0.01)
            fault(broker, running)
            assert running.thread.is_alive(), "the consumer died of the fault"
            recover(broker)
            second = publish(broker, streams.events, ride_events(2_000, start=20_000))
            wait_until(
                lambda: len(set(answered(broker, streams.outputs))) >= 22_000,
                90,
                "all outputs",
                0.5,
            )
            assert running.thread.is_alive()
        finally:
            running.stop()
        done = answered(broker, streams.outputs)
        assert set(done) == set(first + second)  # nothing lost
        # An output and its event's acknowledgement are one transaction, so an event is answered
        # twice only when it was delivered twice: claimed after the fault left it pending.
        claimed = running.consumer.stats.claimed
        duplicates = len(done) - 22_000
        print(f"{len(done)} outputs for 22,000 events: {duplicates} duplicates, {claimed} claimed")
        assert 0 <= duplicates <= claimed
        assert broker.info([streams.events])[0].groups[0].pending == 0
        dedupe = subprocess.run(
            [
                *(str(BIN / "ridecast"), "stream", "dedupe", streams.outputs, "--delete"),
                *("--broker", redis_server.url),
            ],
            env={**trained.env(), "COLUMNS": "200"},  # its summary on one line
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert dedupe.returncode == 0, dedupe.stderr
        assert f"22,000 unique, {duplicates:,} duplicates" in dedupe.stdout, dedupe.stdout
        assert f"deleted {duplicates:,} duplicates" in dedupe.stdout, dedupe.stdout
        left = answered(broker, streams.outputs)
        assert len(left) == len(set(left)) == 22_000 and set(left) == set(done)
    finally:
        broker.delete(streams.all())
        broker.close()
    assert running.consumer.stats.reconnects >= 1
    return "\n".join(running.messages)


@pytest.mark.timeout(150)
def test_consumer_survives_a_redis_restart(
    trained,  # type: ignore[no-untyped-def]
    redis_server: RedisServer,
    streams: Streams,
) -> None:
    def restart(_broker: RedisStreamBroker, _running: Running) -> None:
        redis_server.kill()  # mid-stream, likely mid-batch
        time.sleep(1.5)  # the consumer sees the outage and backs off

    log = _survives(trained, redis_server, streams, restart, lambda _: redis_server.start())
    assert "unavailable" in log and "retrying in" in log and "broker is back" in log


@pytest.mark.timeout(150)
def test_consumer_survives_redis_turning_read_only_in_a_failover(
    trained,  # type: ignore[no-untyped-def]
    redis_server: RedisServer,
    streams: Streams,
) -> None:
    """A failover makes the server a read-only replica for a while (READONLY on every write,
    XREADGROUP included): the consumer waits it out as an outage, then answers every event."""

    def demote(broker: RedisStreamBroker, _running: Running) -> None:
        # A replica of a primary that is not there: the data stays, every write is refused.
        broker.client.replicaof("127.0.0.1", str(free_port()))
        time.sleep(2.0)
        during = broker.length(streams.outputs)
        time.sleep(1.0)
        assert broker.length(streams.outputs) == during  # nothing can be written meanwhile

    def promote(broker: RedisStreamBroker) -> None:
        broker.client.replicaof("NO", "ONE")  # writable again

    log = _survives(trained, redis_server, streams, demote, promote)
    assert "read only replica" in log and "broker is back" in log
