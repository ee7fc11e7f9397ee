"""Rolling on real followers, a real registry and a real state store: each indexed worker reports
the version it answers with, and the controller moves the next worker (or promotes) only once
every moved worker says it serves the candidate. A worker that cannot load the candidate holds
the rollout until it ends ``inconclusive``, never "all workers healthy: promoted"."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ridecast import artifacts
from ridecast.control import ops
from ridecast.control.controller import Controller
from ridecast.control.follower import Follower
from ridecast.features import RideArrays
from ridecast.modelref import parse_model_uri
from ridecast.monitoring import PredictionBatch, PredictionLog
from ridecast.rollout.state import RolloutState

from ..conftest import Trained
from . import Home, private_home

ROLLING = """\
model: ride-duration
candidate: challenger
strategy: rolling
rolling: {workers: 2, interval: 1s}
analysis: {timeout: 6s}
"""
CHAMPION = parse_model_uri("models:/ride-duration@champion")


@pytest.fixture
def home(trained: Trained, tmp_path: Path) -> Iterator[Home]:
    with private_home(trained, tmp_path / "home", rollout_lease_seconds=1.0) as h:
        yield h


@pytest.fixture
def broken_home(trained: Trained, tmp_path: Path) -> Iterator[Home]:
    """Another copy of the registry in which v2's files no longer match their registered
    checksum: loading v2 there fails, as it would on a host with a corrupted artifact store."""
    with private_home(trained, tmp_path / "broken") as h:
        h.registry.client.set_model_version_tag("ride-duration", "2", artifacts.TAG, "0" * 64)
        yield h


def _serve(follower: Follower, log: PredictionLog, n: int = 20) -> None:
    """What a worker does with requests: route them, answer with that version, log them."""
    deployment = follower.current
    route = deployment.router.route(None)
    rides = RideArrays(
        pu=np.arange(1, n + 1, dtype=np.int64),
        do=np.arange(2, n + 2, dtype=np.int64),
        distance=np.full(n, 3.0),
    )
    predictions = deployment.predictors[route.version].predict_arrays(rides)
    log.log(
        PredictionBatch(
            "ride-duration",
            route.version,
            f"web:/predict#w{follower.worker}",
            rides.pu,
            rides.do,
            rides.distance,
            predictions,
            1.0,
            arm=route.arm,
            rollout_id=deployment.rollout_id,
        )
    )


def _drive(
    home: Home, followers: list[Follower], rollout: RolloutState, seconds: float
) -> RolloutState:
    log = PredictionLog(home.settings.resolved_prediction_log_url)
    controller = Controller(home.settings, home.registry, home.store, holder="test")
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for follower in followers:
                follower.refresh()
                _serve(follower, log)
            log.flush()
            controller.tick()
            state = home.store.get(rollout.id)
            assert state is not None
            if not state.active:
                return state
            time.sleep(0.2)
    finally:
        log.close()
    state = home.store.get(rollout.id)
    assert state is not None
    return state


def test_every_worker_moves_once_the_one_before_serves_the_candidate(home: Home) -> None:
    followers = [Follower(CHAMPION, home.registry, home.store, worker=i) for i in range(2)]
    for follower in followers:
        follower.refresh(first=True)
    rollout = ops.start(home.settings, ROLLING, registry=home.registry, store=home.store)
    final = _drive(home, followers, rollout, 30)
    assert final.phase == "promoted", final.reason
    assert "all 2 workers serve the candidate" in final.reason
    reasons = [row["reason"] for row in home.store.history(rollout.id)]
    assert any("moved worker 2 of 2 (the 1 moved before serve the candidate" in r for r in reasons)
    reports = home.store.worker_reports("ride-duration")
    assert [(w.worker, w.answering) for w in reports] == [(0, "2"), (1, "2")]


def test_a_worker_that_cannot_load_the_candidate_stops_the_rollout(
    home: Home, broken_home: Home
) -> None:
    ok = Follower(CHAMPION, home.registry, home.store, worker=0)
    broken = Follower(CHAMPION, broken_home.registry, home.store, worker=1)  # the same state
    for follower in (ok, broken):
        follower.refresh(first=True)
    rollout = ops.start(home.settings, ROLLING, registry=home.registry, store=home.store)
    final = _drive(home, [ok, broken], rollout, 40)
    assert final.phase == "inconclusive", final.reason
    assert final.memory["moved"] == 0 and final.weight == 0
    assert "worker 1" in final.reason and "answers with v1" in final.reason
    assert "failed to load" in final.reason
    assert broken.current.router.versions == ("1",) and broken.last_error is not None
    assert home.champion() == "1"  # never promoted
