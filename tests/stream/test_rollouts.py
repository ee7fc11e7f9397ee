"""Stream consumers under a rollout, against the real Redis with the real trained versions: per-ride
routing, shadow copies, following a state change while running, the prediction log, and `ridecast
stream consume` following a rollout from its own process."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from ridecast.monitoring import PredictionLog
from ridecast.rollout.router import Router
from ridecast.stream.consumer import StreamConsumer
from ridecast.stream.redis_streams import RedisStreamBroker
from ridecast.stream.services import SERVICES

from .conftest import BIN, Streams, private_state, wait_until
from .rollout_rig import Rig, config, entries, events, logged, make_rig


@pytest.fixture
def rig(trained, tmp_path: Path) -> Rig:  # type: ignore[no-untyped-def]
    return make_rig(trained, tmp_path)


@pytest.mark.timeout(120)
def test_canary_routes_each_ride_to_one_version_and_says_which(
    trained,
    rig: Rig,
    broker: RedisStreamBroker,
    streams: Streams,  # type: ignore[no-untyped-def]
) -> None:
    state = rig.start(strategy="canary", weight=50, shadow=0)
    ride_ids = list(range(3000)) * 2  # every ride twice, in different batches
    payloads, rides = events(ride_ids)
    ids = broker.publish(streams.events, payloads)
    log = PredictionLog(rig.log_url).start()
    consumer = StreamConsumer(
        broker,
        SERVICES["duration"],
        rig.follower(),
        config(trained, streams, batch_size=250),
        prediction_log=log,
    )
    stats = consumer.run(until_idle=True)
    log.close()
    assert (stats.predicted, stats.dead_lettered, stats.failed_batches) == (6000, 0, 0)

    out = entries(broker, streams.outputs)
    assert [source for _, source, _ in out] == ids  # every event answered, in input order
    version_of: dict[int, set[str]] = {}
    for _, _, record in out:
        version_of.setdefault(record["prediction"]["ride_id"], set()).add(record["version"])
    assert all(len(v) == 1 for v in version_of.values())  # sticky: a ride keeps its version
    on_candidate = sum(v == {rig.candidate} for v in version_of.values()) / len(version_of)
    assert 0.45 < on_candidate < 0.55
    router = Router(rig.stable, state)  # the assignment web and batch make for the same ride
    assert all(v == {router.route_ids(None, r).version} for r, v in version_of.items())
    arms = {rig.stable: "stable", rig.candidate: "canary"}
    for version in (rig.stable, rig.candidate):
        mine = [rec for _, _, rec in out if rec["version"] == version]
        assert {(rec["arm"], rec["rollout_id"]) for rec in mine} == {(arms[version], state.id)}
        got = [rec["prediction"]["ride_duration"] for rec in mine]
        expected = rig.predict(version, [rides[rec["prediction"]["ride_id"]] for rec in mine])
        assert got == pytest.approx(expected)

    rows = logged(rig.log_url)
    assert Counter((v, a, r) for v, a, r, _, _ in rows) == Counter(
        (rec["version"], rec["arm"], rec["rollout_id"]) for _, _, rec in out
    )
    assert {source for *_, source in rows} == {"stream:duration"}


@pytest.mark.timeout(120)
def test_a_full_shadow_copies_every_event_to_the_shadow_stream(
    trained,
    rig: Rig,
    broker: RedisStreamBroker,
    streams: Streams,  # type: ignore[no-untyped-def]
) -> None:
    state = rig.start(strategy="shadow", weight=0, shadow=100)
    payloads, rides = events(list(range(1000)))
    ids = broker.publish(streams.events, payloads)
    log = PredictionLog(rig.log_url).start()
    consumer = StreamConsumer(
        broker,
        SERVICES["duration"],
        rig.follower(),
        config(trained, streams, batch_size=300),
        prediction_log=log,
    )
    stats = consumer.run(until_idle=True)
    log.close()
    assert (stats.predicted, stats.shadowed, stats.shadow_failures) == (1000, 1000, 0)

    live, shadow = entries(broker, streams.outputs), entries(broker, streams.shadow)
    assert [s for _, s, _ in live] == ids and [s for _, s, _ in shadow] == ids
    assert {(r["version"], r["arm"], r["rollout_id"]) for _, _, r in live} == {
        (rig.stable, "stable", state.id)
    }
    assert {(r["version"], r["arm"], r["rollout_id"]) for _, _, r in shadow} == {
        (rig.candidate, "shadow", state.id)
    }
    copies = [r["prediction"]["ride_duration"] for _, _, r in shadow]
    assert copies == pytest.approx(rig.predict(rig.candidate, [rides[i] for i in range(1000)]))

    rows = logged(rig.log_url)
    by_arm = {arm: [ride for v, a, r, ride, _ in rows if a == arm] for arm in ("stable", "shadow")}
    assert sorted(by_arm["stable"]) == sorted(by_arm["shadow"]) == sorted(map(str, range(1000)))
    assert {(v, r) for v, a, r, _, _ in rows if a == "shadow"} == {(rig.candidate, state.id)}


class Trickle:
    """Publishes 20 rides every 20 ms on its own connection until stopped."""

    def __init__(self, url: str, stream: str) -> None:
        self.broker, self.stream, self.ids = RedisStreamBroker(url), stream, []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stop_event.wait(0.02):
            self.ids += self.broker.publish(self.stream, events(list(range(n, n + 20)))[0])
            n += 20

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        self.broker.close()


@pytest.mark.timeout(120)
def test_a_running_consumer_follows_the_state_within_a_second(
    trained,
    rig: Rig,
    redis_url: str,
    broker: RedisStreamBroker,
    streams: Streams,  # type: ignore[no-untyped-def]
) -> None:
    follower = rig.follower(interval=trained.settings.rollout_follow_interval).start()
    messages: list[str] = []
    consumer = StreamConsumer(
        broker, SERVICES["duration"], follower, config(trained, streams), log=messages.append
    )
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    trickle = Trickle(redis_url, streams.events)
    try:
        wait_until(lambda: broker.length(streams.outputs) >= 100, 30, "the first outputs")
        # A candidate that cannot be loaded: the consumer keeps serving and says so once.
        broken = rig.start(strategy="canary", weight=100, shadow=0, candidate="999")
        wait_until(lambda: follower.last_error is not None, 10, "the follower to give up on v999")
        time.sleep(1.5)  # several more checks of the same broken state
        rig.store.save(broken.evolve(phase="aborted"), reason="test")
        state = rig.start(strategy="canary", weight=0, shadow=0)
        wait_until(
            lambda: any(
                r.get("rollout_id") == state.id for *_, r in entries(broker, streams.outputs)
            ),
            10,
            "outputs of the rollout at weight 0",
        )
        moved_ms = int(time.time() * 1000)
        rig.store.save(state.evolve(weight=100), reason="test")
        wait_until(
            lambda: any(
                r["version"] == rig.candidate for *_, r in entries(broker, streams.outputs)
            ),
            10,
            "the candidate's first answer",
        )
        time.sleep(0.3)
    finally:
        trickle.stop()
        wait_until(lambda: broker.length(streams.outputs) >= len(trickle.ids), 30, "the rest")
        stop.set()
        thread.join(15)
        follower.stop()
    out = entries(broker, streams.outputs)
    assert [s for _, s, _ in out] == trickle.ids  # nothing lost or failed across three switches
    assert consumer.stats.failed_batches == 0 and broker.length(streams.dead) == 0
    first = next(i for i, (*_, r) in enumerate(out) if r["version"] == rig.candidate)
    assert out[first][0] - moved_ms < 1000, "the consumer took over a second to follow"
    assert {r["version"] for *_, r in out[first:]} == {rig.candidate}  # weight 100: every ride
    assert all(r.get("rollout_id") in (None, state.id) for *_, r in out)  # v999 never answered
    said = [m for m in messages if "v999" in m]
    assert len(said) == 1 and "still serving" in said[0], messages


@pytest.mark.timeout(300)
def test_the_consume_command_follows_a_canary_with_a_shadow(
    trained,
    rig: Rig,
    broker: RedisStreamBroker,
    streams: Streams,
    redis_url: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    env = private_state(trained.env(), tmp_path)  # the same state.db and log the rig uses
    state = rig.start(strategy="canary", weight=50, shadow=100)
    ids = broker.publish(streams.events, events(list(range(2000)))[0])
    done = subprocess.run(
        [
            str(BIN / "ridecast"),
            "stream",
            "consume",
            "--until-idle",
            "--broker",
            redis_url,
            "--input-stream",
            streams.events,
            "--output-stream",
            streams.outputs,
            "--group",
            streams.group,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    live, shadow = entries(broker, streams.outputs), entries(broker, streams.shadow)
    assert [s for _, s, _ in live] == ids
    stable_ids = [s for _, s, r in live if r["version"] == rig.stable]
    assert 800 < len(stable_ids) < 1200  # about half each way
    assert [s for _, s, _ in shadow] == stable_ids  # 100% shadow of the stable arm's rides
    assert {r["version"] for *_, r in shadow} == {rig.candidate}
    rows = logged(rig.log_url)  # written before the process exited
    assert Counter(a for _, a, r, _, _ in rows if r == state.id) == {
        "stable": len(stable_ids),
        "canary": 2000 - len(stable_ids),
        "shadow": len(stable_ids),
    }
