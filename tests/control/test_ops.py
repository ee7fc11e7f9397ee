"""The rollout operations on a real registry and a real SQLite state store: bad input changes
nothing and says which field was wrong; promotion moves the alias, abort leaves it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ridecast.control import ops
from ridecast.errors import RolloutError
from ridecast.rollout.state import RolloutState

from ..conftest import Trained
from . import CANARY, Home, private_home


@pytest.fixture
def home(trained: Trained, tmp_path: Path) -> Iterator[Home]:
    with private_home(trained, tmp_path / "home") as h:
        yield h


def _snapshot(home: Home) -> tuple[list[dict[str, object]], list[list[dict[str, object]]], str]:
    states = [s.to_dict() for s in home.store.recent(100)]
    return states, [home.store.history(str(s["id"])) for s in states], home.champion()


def _start(home: Home, text: str = CANARY) -> RolloutState:
    return ops.start(home.settings, text, registry=home.registry, store=home.store)


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (CANARY.replace("strategy:", "stratgy:"), ["unknown field 'stratgy'", "strategy"]),
        (CANARY.replace("model: ride-duration\n", ""), ["model is required"]),
        (
            CANARY.replace("model: ride-duration", "model: ride-durtion"),
            ["model: ride-durtion is not a registered model", "ride-duration", "ride-tip"],
        ),
        (CANARY.replace("challenger", "challengr"), ["candidate:", "@challengr", "@challenger"]),
        (CANARY.replace("challenger", "7"), ["candidate:", "version 7", "versions 1, 2"]),
        (CANARY.replace("challenger", "champion"), ["candidate:", "already serves"]),
        (CANARY.replace("set_weight: 50", "set_weight: 150"), ["steps.2.set_weight", "0..100"]),
        (CANARY.replace("set_weight: 20", "set_weight: -1"), ["steps.0.set_weight", "0..100"]),
        ("model: [unclosed", ["rollout file", "YAML"]),
    ],
)
def test_bad_rollout_files_name_the_field_and_change_nothing(
    home: Home, text: str, needles: list[str]
) -> None:
    before = _snapshot(home)
    with pytest.raises(RolloutError) as info:
        _start(home, text)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("rollout file:")
    for needle in needles:
        assert needle in message
    assert _snapshot(home) == before


def test_a_second_rollout_of_the_model_is_refused_and_changes_nothing(home: Home) -> None:
    first = _start(home)
    before = _snapshot(home)
    with pytest.raises(RolloutError) as info:
        _start(home, CANARY.replace("challenger", "2"))
    assert "\n" not in str(info.value)
    assert "model: ride-duration already has an active rollout" in str(info.value)
    assert first.id in str(info.value)
    assert _snapshot(home) == before


def test_start_from_a_file_resolves_versions_and_applies_the_first_step(
    home: Home, tmp_path: Path
) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text(CANARY.replace("challenger", "v2"), encoding="utf-8")
    state = ops.start(home.settings, path, registry=home.registry, store=home.store)
    assert state.id.startswith("ride-duration-") and len(state.id) < 64
    assert (state.stable_version, state.candidate_version) == ("1", "2")
    assert (state.phase, state.step, state.weight) == ("progressing", 1, 20)
    assert home.store.active("ride-duration") == state
    info = ops.status(home.settings, store=home.store)
    assert info["phase"] == "progressing" and info["strategy"] == "canary"
    assert info["step"] == {
        "index": 1,
        "count": 4,
        "spec": {"analysis": info["step"]["spec"]["analysis"]},
    }
    assert info["step"]["spec"]["analysis"]["duration"] == 20.0
    assert info["weights"] == {"1": 80, "2": 20} and info["shadow_percent"] == 0
    assert info["analysis"] == [] and info["lease"] is None
    assert "v1" in info["reason"] and "v2" in info["reason"]
    rows = ops.history(home.settings, "ride-duration", store=home.store)
    assert [r["actor"] for r in rows] == ["cli"]


def test_a_missing_file_is_one_line(home: Home, tmp_path: Path) -> None:
    with pytest.raises(RolloutError, match="rollout file: cannot read") as info:
        ops.start(home.settings, tmp_path / "nope.yaml", registry=home.registry)
    assert "\n" not in str(info.value)
    secret = tmp_path / "secret"
    secret.write_text("top-secret-word\n", encoding="utf-8")
    with pytest.raises(RolloutError) as text_info:  # a str is YAML text, never a path to read
        ops.start(home.settings, str(secret), registry=home.registry)
    assert "top-secret-word" not in str(text_info.value)


def test_promote_moves_champion_then_saves(home: Home) -> None:
    state = _start(home)
    assert home.champion() == "1"
    promoted = ops.promote(
        home.settings,
        "ride-duration",
        registry=home.registry,
        store=home.store,
        reason="looks good",
    )
    assert home.champion() == "2"
    assert (promoted.phase, promoted.weight) == ("promoted", 100)
    assert home.store.active("ride-duration") is None
    assert home.store.get(state.id).phase == "promoted"
    assert ops.history(home.settings, state.id, store=home.store)[-1]["reason"] == "looks good"
    with pytest.raises(RolloutError, match="promoted"):  # a finished rollout stays finished
        ops.abort(home.settings, state.id, store=home.store)
    assert home.champion() == "2"


def test_abort_leaves_the_alias(home: Home) -> None:
    state = _start(home)
    aborted = ops.abort(home.settings, store=home.store, reason="too slow")
    assert (aborted.id, aborted.phase, aborted.weight) == (state.id, "aborted", 0)
    assert home.champion() == "1"
    assert ops.status(home.settings, store=home.store)["phase"] == "aborted"  # the latest
    with pytest.raises(RolloutError, match="no active rollout"):
        ops.pause(home.settings, store=home.store)
    assert _start(home).id != state.id  # the model is free for a new rollout


def test_pause_and_resume(home: Home) -> None:
    _start(home)
    assert ops.pause(home.settings, store=home.store).phase == "paused"
    with pytest.raises(RolloutError, match="cannot pause"):
        ops.pause(home.settings, store=home.store)
    resumed = ops.resume(home.settings, store=home.store)
    assert (resumed.phase, resumed.weight) == ("progressing", 20)
    phases = [r["phase"] for r in ops.history(home.settings, store=home.store)]
    assert phases == ["progressing", "paused", "progressing"]


def test_promote_when_the_registry_refuses_changes_nothing(
    home: Home, trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ridecast.registry import Registry, configure_mlflow

    state = _start(home)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    down = Registry(home.settings.model_copy(update={"tracking_uri": "http://127.0.0.1:9"}))
    configure_mlflow(trained.settings)
    with pytest.raises(RolloutError) as info:
        ops.promote(home.settings, registry=down, store=home.store)
    message = str(info.value)
    assert "\n" not in message
    assert "cannot move ride-duration@champion to v2" in message and "nothing changed" in message
    assert home.store.get(state.id) == state
    assert home.champion() == "1"


def test_no_rollout_and_several_rollouts_ask_clearly(home: Home) -> None:
    with pytest.raises(RolloutError, match="no rollout yet"):
        ops.status(home.settings, store=home.store)
    with pytest.raises(RolloutError, match="no rollout of a model or with the id ride-cost"):
        ops.history(home.settings, "ride-cost", store=home.store)
    _start(home)
    other = RolloutState(
        id="ride-tip-x",
        model="ride-tip",
        strategy="canary",
        stable_version="1",
        candidate_version="2",
        spec={"steps": []},
    )
    home.store.create(other, reason="test")
    with pytest.raises(RolloutError, match="--model") as info:
        ops.status(home.settings, store=home.store)
    assert "ride-duration, ride-tip" in str(info.value)
    assert ops.status(home.settings, "ride-tip", store=home.store)["id"] == "ride-tip-x"
