"""The controller on a real registry and a real state store: one holder of the lease advances,
another takes over when it dies, a restart goes on where the state says, a canary promotes (and
the alias moves), and an analysis without data halts as inconclusive, never promoted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ridecast.control import ops
from ridecast.control.controller import Controller
from ridecast.control.store import RolloutStore
from ridecast.rollout.state import RolloutState

from ..conftest import Trained
from . import Home, private_home

PAUSES = """\
model: ride-duration
candidate: challenger
strategy: canary
steps:
  - set_weight: 20
  - pause: 1s
  - set_weight: 60
  - pause: 1s
"""

ANALYSIS = """\
model: ride-duration
candidate: challenger
strategy: canary
steps:
  - set_weight: 30
  - analysis: {duration: 1s, timeout: 2s}
"""


@pytest.fixture
def home(trained: Trained, tmp_path: Path) -> Iterator[Home]:
    with private_home(trained, tmp_path / "home", rollout_lease_seconds=1.0) as h:
        yield h


def _controller(home: Home, name: str, **kw: object) -> Controller:
    return Controller(home.settings, home.registry, home.store, holder=name, **kw)  # type: ignore[arg-type]


def _run(
    c: Controller, store: RolloutStore, rollout: RolloutState, t0: float, seconds: float
) -> RolloutState:
    """Tick on a simulated clock, 0.25 s a tick, until the rollout ends or time is up."""
    for i in range(int(seconds / 0.25)):
        c.tick(now=t0 + i * 0.25)
        state = store.get(rollout.id)
        assert state is not None
        if not state.active:
            return state
    state = store.get(rollout.id)
    assert state is not None
    return state


def test_a_canary_of_weights_and_pauses_promotes_and_moves_the_alias(home: Home) -> None:
    t0 = time.time()
    rollout = ops.start(home.settings, PAUSES, registry=home.registry, store=home.store, now=t0)
    seen: list[tuple[int, int]] = []
    c = _controller(home, "one", on_change=lambda b, a, d: seen.append((a.step, a.weight)))
    final = _run(c, home.store, rollout, t0, 10)
    assert (final.phase, final.weight) == ("promoted", 100)
    assert home.champion() == "2"
    assert seen == [(3, 60), (4, 100)]
    history = home.store.history(rollout.id)
    assert [r["weight"] for r in history] == [20, 60, 100]
    assert all(r["actor"] == "controller one" for r in history[1:])
    # Each pause lasted its second on the controller's clock.
    assert history[1]["reason"].startswith("step 1: pause done")
    c.stop()
    assert home.store.lease_holder("rollout-controller")[1] <= time.time()  # released


def test_only_the_lease_holder_advances_and_another_takes_over_when_it_dies(home: Home) -> None:
    t0 = time.time()
    rollout = ops.start(home.settings, PAUSES, registry=home.registry, store=home.store, now=t0)
    a, b = _controller(home, "a"), _controller(home, "b")
    assert a.tick(now=t0 + 1.5) is True
    assert b.tick(now=t0 + 1.5) is False
    state = home.store.get(rollout.id)
    assert (state.step, state.weight) == (3, 60)
    assert {r["actor"] for r in home.store.history(rollout.id)[1:]} == {"controller a"}
    a.stop(release=False)  # killed: the lease is left to expire
    assert b.tick(now=t0 + 10) is False
    assert home.store.get(rollout.id) == state  # b did not move it while a's lease lived
    time.sleep(1.1)
    assert b.tick(now=t0 + 10) is True
    final = home.store.get(rollout.id)
    assert (final.phase, final.step) == ("promoted", 4)  # went on from step 3, not from 0
    assert home.store.history(rollout.id)[-1]["actor"] == "controller b"
    assert home.champion() == "2"


def test_a_restarted_controller_resumes_where_the_state_is(home: Home) -> None:
    t0 = time.time()
    rollout = ops.start(home.settings, PAUSES, registry=home.registry, store=home.store, now=t0)
    first = _controller(home, "first").start()
    deadline = time.time() + 10
    while home.store.get(rollout.id).weight != 60 and time.time() < deadline:
        time.sleep(0.05)
    first.stop()  # a clean stop hands the lease back at once
    mid = home.store.get(rollout.id)
    assert (mid.phase, mid.weight) == ("progressing", 60)
    second = _controller(home, "second", interval=0.1).start()
    try:
        deadline = time.time() + 10
        while home.store.get(rollout.id).active and time.time() < deadline:
            time.sleep(0.05)
    finally:
        second.stop()
    assert home.store.get(rollout.id).phase == "promoted"
    actors = [r["actor"] for r in home.store.history(rollout.id)]
    assert actors == ["cli", "controller first", "controller second"]


def test_an_analysis_without_data_ends_inconclusive_never_promoted(home: Home) -> None:
    from ridecast.monitoring import PredictionLog

    PredictionLog(home.settings.resolved_prediction_log_url).close()  # exists, and is empty
    t0 = time.time()
    rollout = ops.start(home.settings, ANALYSIS, registry=home.registry, store=home.store, now=t0)
    c = _controller(home, "judge")
    final = _run(c, home.store, rollout, t0, 10)
    assert c.last_error is None
    assert (final.phase, final.weight) == ("inconclusive", 0)
    assert "inconclusive" in final.reason
    assert home.champion() == "1"
    info = ops.status(home.settings, rollout.id, store=home.store)
    assert [a["verdict"] for a in info["analysis"]] == ["inconclusive"]
    figures = info["analysis"][0]["figures"]
    assert figures["timeout_s"] == 2.0 and figures["elapsed_s"] >= 2.0
    assert info["weights"] == {"1": 100, "2": 0}


def test_a_promotion_waits_while_the_registry_is_down(
    home: Home, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ridecast.registry import Registry, configure_mlflow

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    down = Registry(home.settings.model_copy(update={"tracking_uri": "http://127.0.0.1:9"}))
    configure_mlflow(trained.settings)
    t0 = time.time()
    rollout = ops.start(home.settings, PAUSES, registry=home.registry, store=home.store, now=t0)
    c = Controller(home.settings, down, home.store, holder="cut-off")
    c.tick(now=t0 + 1.5)  # to weight 60: no registry needed
    c.tick(now=t0 + 3)  # the last pause is over: promotion needs the registry
    state = home.store.get(rollout.id)
    assert (state.phase, state.weight) == ("progressing", 60)
    assert c.last_error is not None and "cannot move ride-duration@champion" in c.last_error
    assert home.champion() == "1"
    c.registry = home.registry  # the registry is back
    c.tick(now=t0 + 4)
    assert home.store.get(rollout.id).phase == "promoted"
    assert home.champion() == "2"


def test_a_hand_change_between_read_and_write_wins(home: Home) -> None:
    t0 = time.time()
    rollout = ops.start(home.settings, PAUSES, registry=home.registry, store=home.store, now=t0)
    c = _controller(home, "slow")
    assert c.tick(now=t0) is True
    read = home.store.get(rollout.id)
    ops.pause(home.settings, store=home.store)  # a person, after the controller's read
    assert c.advance(read, t0 + 1.5) is None  # its save is refused, nothing is overwritten
    assert home.store.get(rollout.id).phase == "paused"
    assert "changed while" in (c.last_error or "")
    c.tick(now=t0 + 5)  # and on the next tick it reads the paused state and leaves it
    assert home.store.get(rollout.id).phase == "paused"


def test_an_unreachable_prediction_log_waits_and_the_thread_keeps_ticking(
    trained: Trained, tmp_path: Path
) -> None:
    with private_home(
        trained,
        tmp_path / "home",
        rollout_lease_seconds=1.0,
        prediction_log_url="postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=1",
        state_url=f"sqlite:///{tmp_path / 'state.db'}",
    ) as home:
        rollout = ops.start(home.settings, ANALYSIS, registry=home.registry, store=home.store)
        c = _controller(home, "blind", interval=0.05).start()
        try:
            deadline = time.time() + 10
            while c.ticks < 5 and time.time() < deadline:
                time.sleep(0.05)
            assert c.ticks >= 5 and c._thread is not None and c._thread.is_alive()
        finally:
            c.stop()
        assert c.last_error is not None and rollout.id in c.last_error
        # A failed query is not "no data": the rollout neither halts nor aborts; it waits.
        assert home.store.get(rollout.id) == rollout
