"""The rollout file: a minimal file per strategy works, and each mistake names its field."""

from __future__ import annotations

from pathlib import Path

import pytest

from ridecast.errors import RolloutError
from ridecast.rollout.spec import RolloutSpec, initial_state, load_spec, parse_duration, parse_spec

HEAD = "model: ride-duration\ncandidate: challenger\n"
C = HEAD + "strategy: canary\nsteps:\n"


def _error(text: str) -> str:
    with pytest.raises(RolloutError) as info:
        parse_spec(text)
    message = str(info.value)
    assert "\n" not in message and message.startswith("rollout file: ")
    return message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("candidate: challenger\nstrategy: canary\n", "rollout file: model is required"),
        ("", "rollout file: model is required"),
        (
            "model: m\ncandiate: c\nstrategy: canary\n",
            "rollout file: unknown field 'candiate' (did you mean 'candidate'?)",
        ),
        (HEAD + "strategy: canery\n", "strategy: must be one of canary, blue_green, shadow, ab"),
        (HEAD, "rollout file: strategy is required"),
        (
            C + " - set_weight: 20\n - set_weight: 140\n",
            "rollout file: steps.1.set_weight: must be 0..100 (got 140)",
        ),
        (
            C + " - set_weight: -5\n",
            "steps.0.set_weight: must be 0..100",
        ),
        (
            C + " - set_weight: 20\n - analysis: {duration: 20 sec}\n",
            "steps.1.analysis.duration: must be a duration like 20s",
        ),
        (C + " - pause: {duration: -1}\n", "steps.0.pause.duration"),
        (
            C + " - set_wieght: 20\n",
            "steps.0: unknown field 'set_wieght' (did you mean 'set_weight'?)",
        ),
        (C + " - {set_weight: 5, pause: {}}\n", "steps.0: a step is"),
        (HEAD + "strategy: canary\nsteps: []\n", "steps: a canary needs at least one step"),
        (C + " - analysis: {}\n", "steps.0.analysis: the candidate"),
        (HEAD + "strategy: shadow\nsteps:\n - set_weight: 5\n", "steps: only a canary takes steps"),
        (
            HEAD + "strategy: ab\nanalysis: {min_sample: 3}\n",
            "analysis: unknown field 'min_sample'",
        ),
        (
            HEAD + "strategy: ab\nanalysis: {max_error_rate: 2}\n",
            "analysis.max_error_rate: must be",
        ),
        (HEAD + "strategy: ab\nab: {weight: 100}\n", "ab.weight: must be 1..99 (got 100)"),
        (HEAD + "strategy: ab\nab: {alpha: 0}\n", "ab.alpha: must be between 0 and 1"),
        (HEAD + "strategy: shadow\nshadow: {percent: 0}\n", "shadow.percent: must be 1..100"),
        (
            HEAD + "strategy: blue_green\nblue_green: {shadow_percent: 101}\n",
            "blue_green.shadow_percent: must be 0..100",
        ),
        (
            HEAD + "strategy: rolling\nrolling: {workers: 0}\n",
            "rolling.workers: must be at least 1",
        ),
        (HEAD + "strategy: canary\nsteps: 3\n", "steps: must be a list"),
        ("- just\n- a list\n", "rollout file: must be a mapping of fields (got list)"),
        ("model: [unclosed\n", "rollout file: not valid YAML at line"),
    ],
)
def test_each_mistake_names_its_field(text: str, expected: str) -> None:
    assert expected in _error(text)


@pytest.mark.parametrize("strategy", ["canary", "blue_green", "shadow", "ab", "rolling"])
def test_a_minimal_file_per_strategy_works(strategy: str) -> None:
    spec = parse_spec(HEAD + f"strategy: {strategy}\n")
    assert spec.strategy == strategy and spec.stable == "champion"
    assert (spec.steps is not None) == (strategy == "canary")
    # The stored form validates back to the same spec: the state carries it this way.
    assert RolloutSpec.model_validate(spec.model_dump(mode="json")) == spec


def test_the_issue_example_parses_with_its_values() -> None:
    spec = parse_spec(
        HEAD
        + """strategy: canary
steps:
  - set_weight: 20
  - analysis: {duration: 20s}
  - set_weight: 50
  - pause: {duration: 1m30s}
  - pause: {}
  - analysis: {duration: 2m, max_mae_ratio: 1.1}
analysis:
  min_samples: 300
  max_mae_ratio: 1.05
  max_error_rate: 0.02
  max_p99_latency_ms: 80
"""
    )
    steps = spec.steps or []
    assert [s.kind for s in steps] == [
        "set_weight",
        "analysis",
        "set_weight",
        "pause",
        "pause",
        "analysis",
    ]
    assert steps[1].analysis is not None and steps[1].analysis.duration == 20.0
    assert steps[3].pause is not None and steps[3].pause.duration == 90.0
    assert steps[4].pause is not None and steps[4].pause.duration is None
    assert steps[5].analysis is not None and steps[5].analysis.max_mae_ratio == 1.1
    assert spec.analysis.min_samples == 300 and spec.analysis.max_p99_latency_ms == 80


def test_candidate_given_as_a_version_number() -> None:
    assert parse_spec("model: m\ncandidate: 2\nstrategy: ab\n").candidate == "2"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("20s", 20),
        ("5m", 300),
        ("1h", 3600),
        ("1m30s", 90),
        (45, 45),
        ("2.5", 2.5),
        ("250ms", 0.25),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "20 sec", "5d", "m", True, None, 0, -3, "1s2"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_load_spec_reads_a_file_and_names_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "rollout.yaml"
    path.write_text(HEAD + "strategy: shadow\nshadow: {percent: 25, duration: 5m}\n")
    spec = load_spec(path)
    assert spec.shadow.percent == 25 and spec.shadow.duration == 300
    with pytest.raises(RolloutError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


def _start(text: str):  # type: ignore[no-untyped-def]
    return initial_state(
        parse_spec(HEAD + text),
        rollout_id="r1",
        stable_version="1",
        candidate_version="2",
        now=100.0,
    )


def test_initial_state_applies_the_first_step() -> None:
    canary = _start(
        "strategy: canary\nsteps:\n - set_weight: 10\n - set_weight: 30\n - pause: {}\n"
    )
    assert (canary.phase, canary.step, canary.weight, canary.shadow_percent) == (
        "progressing",
        2,
        30,
        0,
    )
    assert canary.spec["steps"][0]["set_weight"] == 10 and canary.created_at == 100.0

    bg = _start("strategy: blue_green\nblue_green: {shadow_percent: 40}\n")
    assert (bg.weight, bg.preview, bg.shadow_percent, bg.step) == (0, True, 40, 0)

    shadow = _start("strategy: shadow\nshadow: {percent: 60}\n")
    assert (shadow.weight, shadow.shadow_percent) == (0, 60)

    ab = _start("strategy: ab\nab: {weight: 30}\n")
    assert (ab.weight, ab.shadow_percent, ab.memory["since"]) == (30, 0, 100.0)

    rolling = _start("strategy: rolling\nrolling: {workers: 4}\n")
    assert (rolling.memory["moved"], rolling.weight) == (1, 25)
    for state in (canary, bg, shadow, ab, rolling):
        assert state.phase == "progressing" and state.stable_version == "1"
        assert state.id == "r1" and state.step_started_at == 100.0
