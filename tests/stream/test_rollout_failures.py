"""The seams of stream routing: the batch assignment is the router's own, and a failing candidate
(shadow or live) never costs a live answer, against the real Redis and the real stable version."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from ridecast.control.follower import Deployment
from ridecast.features import RideArrays
from ridecast.monitoring import PredictionLog
from ridecast.rollout.router import Router
from ridecast.rollout.state import RolloutState
from ridecast.stream.consumer import StreamConsumer
from ridecast.stream.redis_streams import RedisStreamBroker
from ridecast.stream.routing import assign
from ridecast.stream.services import SERVICES

from .conftest import Streams
from .rollout_rig import CHAMPION, MODEL, Rig, config, entries, events, make_rig


@pytest.fixture
def rig(trained, tmp_path: Path) -> Rig:  # type: ignore[no-untyped-def]
    return make_rig(trained, tmp_path)


@pytest.mark.parametrize(("weight", "shadow"), [(50, 100), (20, 0), (0, 30), (100, 50), (7, 93)])
def test_batch_assignment_is_the_routers_own(weight: int, shadow: int) -> None:
    """The consumer's batch routing gives every ride what Router.route gives it (web, batch)."""
    stable, candidate = "1", "2"
    state = RolloutState(
        id=f"r-{weight}-{shadow}",
        model=MODEL,
        strategy="canary",
        stable_version=stable,
        candidate_version=candidate,
        weight=weight,
        shadow_percent=shadow,
    )
    router = Router(stable, state)
    deployment = Deployment(MODEL, stable, {}, router, state)
    ride_ids: list[Any] = [*range(3000), *(f"green/2025-02/{i}" for i in range(1000)), "é", ""]
    live, shadowed = assign(deployment, ride_ids)
    got = {i: (v, a) for (v, a), index in live.items() for i in index}
    assert sorted(got) == list(range(len(ride_ids)))  # every ride once
    assert all(index == sorted(index) for index in (*live.values(), *shadowed.values()))
    for i, ride_id in enumerate(ride_ids[:-1]):  # the last has no id: random, not sticky
        route = router.route_ids(None, ride_id)
        assert got[i] == (route.version, route.arm)
        assert (i in shadowed.get(candidate, [])) == (route.shadow_version == candidate)
    if 0 < weight < 100:
        share = len(live.get((candidate, "canary"), [])) / len(ride_ids)
        assert abs(share - weight / 100) < 0.03


class Exploding:
    """A candidate whose every prediction fails: the seam a broken model would hit."""

    def __init__(self, version: str) -> None:
        self.name, self.version, self.target = MODEL, version, "duration"

    def predict_arrays(self, arrays: RideArrays) -> np.ndarray:
        raise RuntimeError("the candidate exploded")


class Fixed:
    """A deployment source that never changes."""

    last_error = None

    def __init__(self, deployment: Deployment) -> None:
        self.current = deployment


@pytest.mark.parametrize("failure", ["shadow raises", "shadow not loaded", "canary raises"])
@pytest.mark.timeout(120)
def test_a_failing_candidate_never_costs_a_live_answer(
    trained,  # type: ignore[no-untyped-def]
    rig: Rig,
    broker: RedisStreamBroker,
    streams: Streams,
    failure: str,
) -> None:
    live = failure.startswith("canary")
    state = RolloutState(
        id=f"broken-{uuid.uuid4().hex[:6]}",
        model=MODEL,
        strategy="canary" if live else "shadow",
        stable_version=rig.stable,
        candidate_version=rig.candidate,
        weight=100 if live else 0,
        shadow_percent=0 if live else 100,
    )
    predictors: dict[str, Any] = {rig.stable: rig.registry.predictor(CHAMPION)}
    if failure.endswith("raises"):
        predictors[rig.candidate] = Exploding(rig.candidate)
    deployment = Deployment(MODEL, rig.stable, predictors, Router(rig.stable, state), state)
    ids = broker.publish(streams.events, events(list(range(1000)))[0])
    messages: list[str] = []
    log = PredictionLog(rig.log_url).start()
    consumer = StreamConsumer(
        broker,
        SERVICES["duration"],
        Fixed(deployment),  # type: ignore[arg-type]
        config(trained, streams, batch_size=100),
        prediction_log=log,
        log=messages.append,
    )
    stats = consumer.run(until_idle=True)
    log.close()
    assert (stats.predicted, stats.failed_batches) == (1000, 0)
    assert (stats.fallbacks, stats.shadow_failures) == ((1000, 0) if live else (0, 1000))
    out = entries(broker, streams.outputs)
    assert [s for _, s, _ in out] == ids  # every live answer, from the stable version
    assert {(r["version"], r["arm"]) for *_, r in out} == {(rig.stable, "stable")}
    assert broker.length(streams.dead) == 0 and broker.length(streams.shadow) == 0
    group = broker.info([streams.events])[0].groups[0]
    assert (group.pending, group.lag) == (0, 0)  # every event acknowledged
    labels = {"service": "duration", "group": streams.group}
    if live:
        name, labels = (
            "ridecast_stream_candidate_fallbacks_total",
            {**labels, "version": rig.candidate},
        )
    else:
        name = "ridecast_stream_shadow_failures_total"
    assert REGISTRY.get_sample_value(name, labels) == 1000
    said = [m for m in messages if f"v{rig.candidate} " in m and "now" not in m]
    assert len(said) == 1, messages  # ten failing batches, one message
    assert ("exploded" if failure.endswith("raises") else "is not loaded") in said[0]
    with sqlite3.connect(rig.log_url.removeprefix("sqlite:///")) as db:  # what analysis counts
        errors = db.execute(
            "SELECT version, arm, rollout_id, sum(count) FROM prediction_errors GROUP BY 1, 2, 3"
        ).fetchall()
    assert errors == [(rig.candidate, "canary" if live else "shadow", state.id, 1000)]
