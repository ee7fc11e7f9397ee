"""The strategies as state machines, walked through with hand-built measurements."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ridecast.errors import RolloutError
from ridecast.rollout.measurements import (
    ArmFigures,
    Measurements,
    PairedFigures,
    ShadowFigures,
    WorkerReport,
)
from ridecast.rollout.spec import initial_state, parse_spec
from ridecast.rollout.state import RolloutState
from ridecast.rollout.strategies import (
    WORKER_REPORT_STALE_S,
    Decision,
    abort,
    advance,
    pause,
    promote,
    resume,
    window,
)

HEAD = "model: ride-duration\ncandidate: challenger\n"
CANARY = (
    HEAD
    + """strategy: canary
steps:
  - set_weight: 20
  - analysis: {duration: 20s}
  - set_weight: 50
  - analysis: {duration: 20s}
"""
)


def _start(text: str, now: float = 0.0) -> RolloutState:
    return initial_state(
        parse_spec(text), rollout_id="r1", stable_version="1", candidate_version="2", now=now
    )


def _arm(version: str, arm: str, **kw: Any) -> ArmFigures:
    figures: dict[str, Any] = dict(
        requests=1000,
        errors=0,
        p99_latency_ms=20.0,
        mean_prediction=15.0,
        joined=500,
        mae=3.0,
        abs_error_var=4.0,
    )
    figures.update(kw)
    return ArmFigures(version=version, arm=arm, **figures)


def _m(
    state: RolloutState,
    now: float,
    stable: dict[str, Any] | None = None,
    candidate: dict[str, Any] | None = None,
    **kw: Any,
) -> Measurements:
    since, until = window(state, now) or (state.step_started_at, now)
    return Measurements(
        since,
        until,
        _arm("1", state.stable_arm, **(stable or {})),
        _arm("2", state.candidate_arm, **(candidate or {})),
        **kw,
    )


def _tick(state: RolloutState, now: float, **kw: Any) -> Decision:
    return advance(state, _m(state, now, **kw), now)


# ------------------------------------------------------------------------------------ canary


def test_canary_better_candidate_walks_every_step_and_is_promoted() -> None:
    s = _start(CANARY)
    assert (s.step, s.weight) == (1, 20) and window(s, 5.0) == (0.0, 5.0)
    d = _tick(s, 5.0, candidate={"mae": 2.7})
    assert not d.changed and d.state is s and d.verdict is None  # still gathering data
    d = _tick(s, 21.0, candidate={"mae": 2.7})
    assert d.changed and d.verdict == "pass" and (d.state.step, d.state.weight) == (3, 50)
    assert d.state.step_started_at == 21.0 and not d.promote
    assert d.figures["computed"]["mae_ratio"] == pytest.approx(0.9)
    assert d.figures["candidate"]["mae"] == 2.7 and d.figures["stable"]["joined"] == 500
    d = _tick(d.state, 42.0, candidate={"mae": 2.7})
    assert d.promote and d.verdict == "pass"
    assert (d.state.phase, d.state.weight, d.state.shadow_percent) == ("promoted", 100, 0)
    assert window(d.state, 50.0) is None


@pytest.mark.parametrize(
    ("candidate", "figure", "threshold"),
    [
        ({"mae": 3.6}, "mae_ratio", "1.05"),
        ({"errors": 30}, "error_rate", "0.01"),
        ({"p99_latency_ms": 250.0}, "p99_latency_ms", "100"),
        ({"mean_prediction": 22.0}, "mean_shift", "0.25"),
    ],
)
def test_canary_worse_candidate_is_aborted_naming_the_figure(
    candidate: dict[str, Any], figure: str, threshold: str
) -> None:
    s = _start(CANARY)
    d = _tick(s, 21.0, candidate=candidate)
    assert d.verdict == "fail" and not d.promote
    assert (d.state.phase, d.state.weight, d.state.shadow_percent) == ("aborted", 0, 0)
    assert figure in d.reason and f"max {threshold}" in d.reason
    failed = [c for c in d.figures["checks"] if c["ok"] is False]
    assert [c["figure"] for c in failed] == [figure]


@pytest.mark.parametrize(
    "crashing",
    [
        # Nothing answered: no latency, no mean, no MAE; only the failures.
        {
            "requests": 0,
            "errors": 5000,
            "p99_latency_ms": None,
            "mean_prediction": None,
            "joined": 0,
            "mae": None,
            "abs_error_var": None,
        },
        {"requests": 100, "errors": 4900, "joined": 10},  # fewer answers than min_samples
    ],
)
def test_a_candidate_that_mostly_crashes_fails_on_its_error_rate(crashing: dict[str, Any]) -> None:
    """Failed predictions are data: errors / (answered + failed), judged once that many were
    asked, so a crashing candidate is aborted instead of waiting as "inconclusive"."""
    s = _start(CANARY)
    d = _tick(s, 21.0, candidate=crashing)
    assert d.verdict == "fail" and d.state.phase == "aborted" and d.state.weight == 0, d.reason
    assert "error_rate" in d.reason and "max 0.01" in d.reason
    rate = crashing["errors"] / (crashing["requests"] + crashing["errors"])
    assert d.figures["computed"]["candidate_error_rate"] == pytest.approx(rate)
    assert d.figures["candidate"]["attempts"] == 5000
    ab = _start(HEAD + "strategy: ab\n")
    assert _tick(ab, 30.0, candidate=crashing).state.phase == "aborted"


def test_canary_without_feedback_is_inconclusive_at_the_timeout_and_not_before() -> None:
    s = _start(CANARY)
    no_feedback = {"joined": 0, "mae": None, "abs_error_var": None}
    for now in (21.0, 40.0, 59.9):  # timeout: max(3 × 20 s, 60 s) = 60 s
        d = _tick(s, now, stable=no_feedback, candidate=no_feedback)
        assert not d.changed and d.state.phase == "progressing" and d.state.weight == 20
        assert "too little data" in d.reason and "mae_ratio" in d.reason
    d = _tick(s, 60.0, stable=no_feedback, candidate=no_feedback)
    assert d.verdict == "inconclusive" and d.state.phase == "inconclusive"
    assert d.state.weight == 0 and "too little data" in d.state.reason
    assert d.state.memory["halted"]["weight"] == 20


def test_canary_with_no_measurements_at_all_never_passes() -> None:
    s = _start(CANARY)
    assert not advance(s, None, 30.0).changed
    d = advance(s, None, 61.0)
    assert d.state.phase == "inconclusive" and d.state.weight == 0


def test_no_traffic_never_advances_an_analysis_step() -> None:
    s = _start(CANARY)
    silent = {
        "requests": 0,
        "joined": 0,
        "mae": None,
        "p99_latency_ms": None,
        "mean_prediction": None,
        "abs_error_var": None,
    }
    for now in (21.0, 30.0, 45.0, 59.0):
        d = _tick(s, now, candidate=silent)
        assert not d.changed and d.state.step == 1
    d = _tick(s, 60.0, candidate=silent)
    assert d.state.phase == "inconclusive" and d.verdict == "inconclusive"


def test_resume_from_inconclusive_reruns_the_analysis_with_fresh_data() -> None:
    s = advance(_start(CANARY), None, 61.0).state
    d = resume(s, 100.0)
    assert (d.state.phase, d.state.step, d.state.weight) == ("progressing", 1, 20)
    assert d.state.step_started_at == 100.0 and window(d.state, 110.0) == (100.0, 110.0)
    assert "halted" not in d.state.memory
    assert not _tick(d.state, 110.0).changed  # the 20 s start again
    assert _tick(d.state, 121.0).state.step == 3


def test_pause_steps_timed_and_open_ended() -> None:
    s = _start(
        HEAD + "strategy: canary\nsteps:\n - set_weight: 10\n - pause: {duration: 30s}\n"
        " - set_weight: 40\n - pause: {}\n - set_weight: 70\n"
    )
    assert window(s, 1.0) is None  # a pause measures nothing
    assert not advance(s, None, 29.0).changed
    d = advance(s, None, 30.0)
    assert (d.state.step, d.state.weight) == (3, 40)
    d = advance(d.state, None, 31.0)
    assert d.state.phase == "paused" and "until resumed" in d.reason
    assert not advance(d.state, None, 1000.0).changed  # waits for a person
    d = resume(d.state, 1001.0)  # past the pause: 70%, and that was the last step
    assert d.promote and d.state.phase == "promoted"


def test_hand_operations_and_invalid_transitions() -> None:
    s = _start(CANARY)
    paused = pause(s, 5.0).state
    assert paused.phase == "paused" and paused.weight == 20
    assert not advance(paused, _m(paused, 30.0), 30.0).changed  # a paused rollout holds
    with pytest.raises(RolloutError, match="paused"):
        pause(paused, 6.0)
    again = resume(paused, 40.0).state
    assert (again.phase, again.step_started_at, again.weight) == ("progressing", 40.0, 20)
    with pytest.raises(RolloutError, match="progressing"):
        resume(again, 41.0)
    done = promote(again, 50.0)
    assert done.promote and done.state.phase == "promoted" and done.reason == "promoted by hand"
    for op in (lambda st: promote(st, 60.0), lambda st: abort(st, 60.0, "x")):
        with pytest.raises(RolloutError, match="promoted"):
            op(done.state)
    stopped = abort(again, 55.0, "not today")
    assert (stopped.state.phase, stopped.state.weight, stopped.reason) == (
        "aborted",
        0,
        "not today",
    )
    assert not stopped.promote
    with pytest.raises(RolloutError, match="aborted"):
        promote(stopped.state, 60.0)
    inconclusive = advance(s, None, 61.0).state
    assert abort(inconclusive, 62.0, "give up").state.phase == "aborted"
    assert promote(inconclusive, 62.0).state.phase == "promoted"


def test_threshold_overrides_per_analysis_step() -> None:
    s = _start(
        HEAD + "strategy: canary\nsteps:\n - set_weight: 20\n"
        " - analysis: {duration: 10s, max_mae_ratio: 1.3, min_samples: 50}\n"
    )
    d = _tick(s, 11.0, candidate={"mae": 3.6, "joined": 60}, stable={"joined": 60})
    assert d.promote  # 1.2 ≤ 1.3, and 60 ≥ 50 joined rides


# -------------------------------------------------------------------------------- blue/green

BLUE_GREEN = (
    HEAD
    + """strategy: blue_green
blue_green:
  pre_promotion: {duration: 30s}
  post_promotion: {duration: 20s}
  scale_down_delay: 45s
"""
)


def _switched(now: float = 31.0) -> Decision:
    s = _start(BLUE_GREEN)
    assert (s.weight, s.preview, s.shadow_percent) == (0, True, 100)
    assert not _tick(s, 10.0).changed  # pre-promotion gathers 30 s of shadow traffic
    return _tick(
        s,
        now,
        stable={"mae": 3.2},
        candidate={"mae": 3.0},
        paired=PairedFigures(n=500, mean_diff=-0.2, var_diff=1.0),
    )


def test_blue_green_switches_atomically_then_promotes() -> None:
    d = _switched()
    s = d.state
    assert d.verdict == "pass" and not d.promote
    assert (s.weight, s.shadow_percent, s.step, s.step_started_at) == (100, 0, 1, 31.0)
    assert s.memory["switched_at"] == 31.0 and s.memory["baseline"]["mae"] == 3.2
    # After the switch blue answers nothing: green is judged against blue's pre-switch figures.
    live = {"requests": 0, "joined": 0, "mae": None, "mean_prediction": None}
    assert not _tick(s, 40.0, stable=live, candidate={"mae": 3.1}).changed
    done = _tick(s, 52.0, stable=live, candidate={"mae": 3.1})
    assert done.promote and done.state.phase == "promoted" and done.state.weight == 100
    assert done.figures["stable"]["mae"] == 3.2  # the baseline it was judged against
    assert done.state.memory["keep_stable_until"] == 52.0 + 45.0


def test_blue_green_switches_back_when_post_promotion_fails() -> None:
    s = _switched().state
    live = {"requests": 0, "joined": 0, "mae": None}
    d = _tick(s, 52.0, stable=live, candidate={"mae": 4.0})
    assert d.verdict == "fail" and not d.promote
    assert (d.state.phase, d.state.weight) == ("aborted", 0)
    assert "switched back to blue" in d.reason and "mae_ratio" in d.reason


def test_blue_green_pre_promotion_failure_never_switches() -> None:
    s = _start(BLUE_GREEN)
    d = _tick(s, 31.0, candidate={"errors": 100})
    assert (d.state.phase, d.state.weight, d.state.shadow_percent) == ("aborted", 0, 0)
    assert "error_rate" in d.reason


# ------------------------------------------------------------------------------------ shadow

SHADOW = HEAD + "strategy: shadow\nshadow: {percent: 50, duration: 60s}\n"
SHADOWED = ShadowFigures(
    n=900,
    mean_abs_diff=0.8,
    mean_signed_diff=-0.3,
    correlation=0.97,
    share_over_2_min=0.04,
    p95_abs_diff=1.9,
    shadow_p99_latency_ms=12.0,
)


def test_shadow_reports_the_comparison_and_pauses_for_a_person() -> None:
    s = _start(SHADOW)
    assert (s.weight, s.shadow_percent) == (0, 50)
    paired = PairedFigures(n=400, mean_diff=-0.25, var_diff=1.0)
    d = _tick(s, 30.0, candidate={"mae": 2.75}, shadow=SHADOWED, paired=paired)
    assert not d.changed
    report = d.figures["shadow_report"]
    assert report["mean_abs_diff"] == 0.8 and report["correlation"] == 0.97
    assert report["share_over_2_min"] == 0.04 and report["p95_abs_diff"] == 1.9
    assert report["shadow_p99_latency_ms"] == 12.0
    assert (report["stable_mae"], report["shadow_mae"]) == (3.0, 2.75)
    low, high = report["paired_ci"]
    assert low < -0.25 < high < 0  # 400 rides show the shadow is better
    d = _tick(s, 61.0, candidate={"mae": 2.75}, shadow=SHADOWED, paired=paired)
    assert d.state.phase == "paused" and d.reason.startswith("shadow finished: promote or abort")
    assert not d.promote and d.state.shadow_percent == 50
    again = resume(d.state, 70.0).state  # another round of shadowing
    assert again.phase == "progressing" and again.step_started_at == 70.0


def test_shadow_report_without_feedback_has_no_interval() -> None:
    s = _start(SHADOW)
    no_feedback = {"joined": 0, "mae": None}
    d = _tick(s, 10.0, stable=no_feedback, candidate=no_feedback, shadow=SHADOWED)
    assert d.figures["shadow_report"]["paired_ci"] is None
    assert d.figures["shadow_report"]["mean_signed_diff"] == -0.3


def test_shadow_promotes_itself_when_asked_and_the_analysis_passes() -> None:
    s = _start(HEAD + "strategy: shadow\nshadow: {duration: 20s, promote: true}\n")
    assert _tick(s, 21.0, candidate={"mae": 2.9}, shadow=SHADOWED).promote
    worse = _tick(s, 21.0, candidate={"mae": 3.9}, shadow=SHADOWED)
    assert worse.state.phase == "paused" and "analysis fail" in worse.reason


# --------------------------------------------------------------------------------------- A/B

AB = HEAD + "strategy: ab\nab: {weight: 50, max_samples: 20000, max_duration: 2h}\n"


def test_ab_decides_on_a_real_difference() -> None:
    s = _start(AB)
    assert s.weight == 50 and window(s, 10.0) == (0.0, 10.0)
    n = {"joined": 1500}
    better = _tick(s, 600.0, stable={"mae": 3.0, **n}, candidate={"mae": 2.6, **n})
    assert better.promote and better.state.phase == "promoted" and "b is better" in better.reason
    ab = better.figures["ab"]
    assert ab["d_hat"] == pytest.approx(-0.4) and ab["interval"][1] < 0 and not ab["paired"]
    assert ab["a"]["n"] == 1500 and ab["b"]["mae"] == 2.6
    worse = _tick(s, 600.0, stable={"mae": 3.0, **n}, candidate={"mae": 3.4, **n})
    assert worse.state.phase == "aborted" and worse.verdict == "fail"
    assert worse.figures["ab"]["interval"][0] > 0


def test_ab_keeps_going_without_a_difference_until_its_limits() -> None:
    s = _start(AB)
    same = {"mae": 3.0, "joined": 1500}
    d = _tick(s, 600.0, stable=same, candidate=same)
    lo, hi = d.figures["ab"]["interval"]
    assert not d.changed and lo < 0 < hi
    few = {"mae": 3.0, "joined": 100}  # fewer than min_samples: no interval yet
    assert (
        _tick(s, 600.0, stable=few, candidate={**few, "mae": 1.0}).figures["ab"]["interval"] is None
    )
    many = {"mae": 3.0, "joined": 10_000}
    assert _tick(s, 700.0, stable=many, candidate=many).state.phase == "inconclusive"
    late = _tick(s, 7200.0, stable=same, candidate=same)
    assert late.state.phase == "inconclusive" and "max_duration" in late.reason
    assert late.state.weight == 0
    assert resume(late.state, 8000.0).state.memory["since"] == 8000.0


def test_ab_uses_paired_differences_when_both_answered() -> None:
    s = _start(AB)
    same = {"mae": 3.0, "joined": 1500}
    paired = PairedFigures(n=1500, mean_diff=-0.1, var_diff=0.3)
    d = _tick(s, 600.0, stable=same, candidate=same, paired=paired)
    assert d.figures["ab"]["paired"] and d.promote  # pairs remove the riders' noise


def test_ab_without_promote_winner_waits_for_a_person() -> None:
    s = _start(HEAD + "strategy: ab\nab: {promote_winner: false}\n")
    n = {"joined": 1500}
    d = _tick(s, 600.0, stable={"mae": 3.0, **n}, candidate={"mae": 2.5, **n})
    assert d.state.phase == "paused" and not d.promote and "promote or abort" in d.reason


# ----------------------------------------------------------------------------------- rolling

ROLLING = HEAD + "strategy: rolling\nrolling: {workers: 3, interval: 10s}\n"


def test_rolling_moves_one_worker_at_a_time_then_promotes() -> None:
    s = _start(ROLLING)
    assert s.memory["moved"] == 1
    assert not _tick(s, 5.0, candidate={"requests": 50}).changed  # not before the interval
    d = _tick(s, 11.0, candidate={"requests": 50})
    assert d.state.memory["moved"] == 2 and d.state.weight == 67
    d = _tick(d.state, 22.0, candidate={"requests": 50})
    assert d.state.memory["moved"] == 3 and d.state.weight == 100 and not d.promote
    d = _tick(d.state, 33.0, candidate={"requests": 50})
    assert d.promote and d.state.phase == "promoted"


def test_rolling_aborts_on_errors_and_waits_on_silence() -> None:
    s = _start(ROLLING)
    d = _tick(s, 3.0, candidate={"requests": 50, "errors": 5})
    assert d.state.phase == "aborted" and d.state.memory["moved"] == 0
    silent = {"requests": 0}
    assert not _tick(s, 30.0, candidate=silent).changed
    halted = _tick(s, 61.0, candidate=silent).state
    assert halted.phase == "inconclusive" and halted.memory["moved"] == 0
    assert resume(halted, 70.0).state.memory["moved"] == 1


def _workers(*answering: str, error: str | None = None, age: float = 1.0) -> tuple[Any, ...]:
    """Reports of indexed workers 0, 1, …: the version each says it answers with."""
    return tuple(
        WorkerReport(i, "host-a", "r1", v, ("1", "2"), None if v == "2" else error, age)
        for i, v in enumerate(answering)
    )


def test_rolling_moves_the_next_worker_only_once_each_moved_worker_serves_the_candidate() -> None:
    s = _start(ROLLING)  # worker 0 moved
    traffic = {"requests": 50}
    # Worker 0 could not load v2 (its traffic may still come from elsewhere): nobody moves on.
    stuck = _workers("1", "1", "1", error="ride-duration v2 failed to load: disk full")
    d = _tick(s, 11.0, candidate=traffic, workers=stuck)
    assert not d.changed and "worker 0" in d.reason and "disk full" in d.reason
    halted = _tick(s, 61.0, candidate=traffic, workers=stuck)
    assert halted.state.phase == "inconclusive" and halted.state.memory["moved"] == 0
    assert "worker 0" in halted.reason and "v1" in halted.reason
    # A report older than the staleness bound is no evidence either (worker 0 went silent).
    stale = _workers("2", age=WORKER_REPORT_STALE_S + 1) + _workers("2", "1", "1")[1:]
    d = _tick(s, 11.0, candidate=traffic, workers=stale)
    assert not d.changed and "worker 0 has not reported" in d.reason

    d = _tick(s, 11.0, candidate=traffic, workers=_workers("2", "1", "1"))
    assert d.state.memory["moved"] == 2 and "the 1 moved before serve the candidate" in d.reason
    # Worker 1 has moved on the state but not yet in fact: wait for it.
    assert not _tick(d.state, 22.0, candidate=traffic, workers=_workers("2", "1", "1")).changed
    d = _tick(d.state, 22.0, candidate=traffic, workers=_workers("2", "2", "1"))
    assert d.state.memory["moved"] == 3
    assert not _tick(d.state, 33.0, candidate=traffic, workers=_workers("2", "2")).promote
    d = _tick(d.state, 33.0, candidate=traffic, workers=_workers("2", "2", "2"))
    assert d.promote and "all 3 workers serve the candidate" in d.reason
    assert d.figures["worker_reports"][2]["answering"] == "2"


def test_measurements_none_for_every_strategy_is_never_a_pass() -> None:
    for text in (CANARY, BLUE_GREEN, SHADOW, AB, ROLLING):
        s = _start(text)
        for now in (1.0, 30.0, 59.0):
            d = advance(s, None, now)
            assert not d.promote and not d.changed and d.state is s


def test_figures_and_states_are_plain_json() -> None:
    """The store persists figures and states as JSON, and status --json shows them."""
    for text in (CANARY, BLUE_GREEN, SHADOW, AB, ROLLING):
        s = _start(text)
        for now in (5.0, 31.0, 61.0, 7300.0):
            d = _tick(
                s,
                now,
                candidate={"mae": 2.0, "joined": 3000},
                shadow=SHADOWED,
                stable={"joined": 3000},
                paired=PairedFigures(n=9, mean_diff=0.1, var_diff=0.5),
            )
            json.dumps(d.figures, allow_nan=False)
            json.dumps(d.state.to_dict(), allow_nan=False)
            assert RolloutState.from_dict(json.loads(json.dumps(d.state.to_dict()))) == d.state
            s = d.state if d.state.active else s
