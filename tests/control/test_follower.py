"""The follower on a real registry and state store: after a blue/green promotion the old version
stays in the serving snapshot (answering by name) for ``scale_down_delay``, then leaves it and the
registry's caches, so a long-running process holds only what the alias and the rollout need."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ridecast.control import ops
from ridecast.control.follower import Follower
from ridecast.modelref import parse_model_uri

from ..conftest import Trained
from . import Home, private_home

BLUE_GREEN = """\
model: ride-duration
candidate: challenger
strategy: blue_green
blue_green: {scale_down_delay: 3s}
"""
RIDES = [{"PULocationID": 10, "DOLocationID": 50, "trip_distance": 4.0}]


@pytest.fixture
def home(trained: Trained, tmp_path: Path) -> Iterator[Home]:
    with private_home(trained, tmp_path / "home") as h:
        yield h


def _cached(home: Home) -> tuple[set[str], set[str]]:
    registry = home.registry
    return (
        {v for (name, v) in registry._cache if name == "ride-duration"},
        {v for (name, v) in registry._predictors if name == "ride-duration"},
    )


def test_blue_stays_loaded_for_the_scale_down_delay_then_leaves_every_cache(home: Home) -> None:
    follower = Follower(
        parse_model_uri("models:/ride-duration@champion"), home.registry, home.store
    )
    follower.refresh(first=True)
    ops.start(home.settings, BLUE_GREEN, registry=home.registry, store=home.store)
    assert follower.refresh()
    assert sorted(follower.current.predictors) == ["1", "2"]

    ops.promote(home.settings, "ride-duration", registry=home.registry, store=home.store)
    promoted_at = time.monotonic()
    assert follower.refresh()
    now = follower.current
    assert (now.state, now.router.versions) == (None, ("2",))  # every request goes to green
    assert sorted(now.predictors) == ["1", "2"]  # blue still loaded: reachable by name
    blue = now.predictor("1")
    assert blue is not None and blue.version == "1" and len(blue.predict_rides(RIDES)) == 1
    assert _cached(home) == ({"1", "2"}, {"1", "2"})

    while time.monotonic() - promoted_at < 2.0:  # nothing moves within the delay
        assert not follower.refresh()
        time.sleep(0.25)
    assert sorted(follower.current.predictors) == ["1", "2"]

    deadline = promoted_at + 10.0
    while "1" in follower.current.predictors and time.monotonic() < deadline:
        follower.refresh()
        time.sleep(0.1)
    waited = time.monotonic() - promoted_at
    assert sorted(follower.current.predictors) == ["2"], waited
    assert 3.0 <= waited < 5.0
    assert follower.current.router.versions == ("2",)
    # The registry holds only what the alias and the (finished) rollout need now.
    assert _cached(home) == ({"2"}, {"2"})
