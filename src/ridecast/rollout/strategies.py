"""The five strategies as pure state machines: state and a window's measurements in, decision out.

The controller calls :func:`window` to learn what to measure, measures it, and hands the figures to
:func:`advance`; it saves ``Decision.state`` (after moving the champion alias when
``Decision.promote`` is set). The people's commands are :func:`promote`, :func:`abort`,
:func:`pause` and :func:`resume`. Nothing here reads a clock or a database, so every path is
unit-tested with hand-built measurements. ``docs/rollout.md`` describes each machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ridecast.errors import RolloutError
from ridecast.rollout.analysis import (
    Judgement,
    Thresholds,
    ab_figures,
    run_analysis,
    shadow_report,
)
from ridecast.rollout.measurements import ArmFigures, Measurements, PairedFigures
from ridecast.rollout.spec import Analysis, RolloutSpec, spec_of
from ridecast.rollout.state import RolloutState


@dataclass(frozen=True)
class Decision:
    """What the controller saves. ``promote``: move the champion alias to the candidate first."""

    state: RolloutState
    changed: bool
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)
    promote: bool = False
    verdict: str | None = None  # pass | fail | inconclusive, when an analysis reached one


# ------------------------------------------------------------------------------ transitions


def _set(state: RolloutState, now: float, reason: str, **changes: Any) -> RolloutState:
    return state.evolve(updated_at=now, reason=reason, **changes)


def _promoted(state: RolloutState, now: float, reason: str) -> RolloutState:
    memory = {**state.memory, "promoted_at": now}
    if state.strategy == "blue_green":  # blue stays loaded a while, so a rollback is instant
        memory["keep_stable_until"] = now + spec_of(state).blue_green.scale_down_delay
    return _set(
        state,
        now,
        reason,
        phase="promoted",
        weight=100,
        shadow_percent=0,
        preview=False,
        memory=memory,
    )


def _aborted(state: RolloutState, now: float, reason: str) -> RolloutState:
    memory = {**state.memory, "moved": 0} if "moved" in state.memory else state.memory
    return _set(
        state,
        now,
        reason,
        phase="aborted",
        weight=0,
        shadow_percent=0,
        preview=False,
        memory=memory,
    )


def _halted(state: RolloutState, now: float, reason: str) -> RolloutState:
    """Inconclusive: every request back on the stable version, the traffic remembered for resume."""
    memory = dict(state.memory)
    memory["halted"] = {
        "weight": state.weight,
        "shadow_percent": state.shadow_percent,
        "preview": state.preview,
        "moved": state.memory.get("moved"),
    }
    if "moved" in memory:
        memory["moved"] = 0
    return _set(state, now, reason, phase="inconclusive", weight=0, shadow_percent=0, memory=memory)


def _paused(state: RolloutState, now: float, reason: str, by: str) -> RolloutState:
    return _set(state, now, reason, phase="paused", memory={**state.memory, "paused_by": by})


def _promote_decision(
    state: RolloutState,
    now: float,
    reason: str,
    figures: dict[str, Any],
    verdict: str | None = "pass",
) -> Decision:
    return Decision(_promoted(state, now, reason), True, reason, figures, True, verdict)


def _wait(state: RolloutState, reason: str, figures: dict[str, Any]) -> Decision:
    return Decision(state, False, reason, figures)


def _fail(state: RolloutState, now: float, reason: str, figures: dict[str, Any]) -> Decision:
    return Decision(_aborted(state, now, reason), True, reason, figures, verdict="fail")


def _halt(state: RolloutState, now: float, reason: str, figures: dict[str, Any]) -> Decision:
    return Decision(_halted(state, now, reason), True, reason, figures, verdict="inconclusive")


# --------------------------------------------------------------------------------- analysis


def _waiting(state: RolloutState, now: float, a: Analysis, j: Judgement, label: str) -> str:
    left = a.duration - (now - state.step_started_at)
    if left > 0:
        return f"{label}: gathering data, {left:.0f}s to go"
    return f"{label}: waiting for data: {j.reason}"


# ----------------------------------------------------------------------------------- canary


def _enter_canary(state: RolloutState, spec: RolloutSpec, now: float) -> RolloutState:
    """Apply the set_weight steps from ``state.step`` on, stopping at a pause or an analysis."""
    steps = spec.steps or []
    while state.step < len(steps) and steps[state.step].set_weight is not None:
        weight = steps[state.step].set_weight
        state = state.evolve(
            weight=weight,
            step=state.step + 1,
            step_started_at=now,
            updated_at=now,
            reason=f"step {state.step}: weight {weight}%",
        )
    return state


def _canary_next(
    state: RolloutState,
    spec: RolloutSpec,
    now: float,
    reason: str,
    figures: dict[str, Any],
    verdict: str | None,
) -> Decision:
    nxt = _enter_canary(state.evolve(step=state.step + 1, step_started_at=now), spec, now)
    if nxt.step >= len(spec.steps or []):
        return _promote_decision(nxt, now, f"{reason}; all steps done: promoted", figures, verdict)
    nxt = _set(nxt, now, f"{reason}; now at step {nxt.step} (weight {nxt.weight}%)")
    return Decision(nxt, True, nxt.reason, figures, verdict=verdict)


def _advance_canary(
    state: RolloutState, spec: RolloutSpec, m: Measurements | None, now: float
) -> Decision:
    steps = spec.steps or []
    if state.step >= len(steps):
        return _promote_decision(state, now, "all steps done: promoted", {})
    step = steps[state.step]
    label = f"step {state.step}"
    if step.set_weight is not None:
        st = _enter_canary(state, spec, now)
        if st.step >= len(steps):
            return _promote_decision(st, now, "all steps done: promoted", {})
        return Decision(st, True, st.reason, {})
    if step.pause is not None:
        if step.pause.duration is None:
            reason = f"{label}: paused until resumed or promoted"
            return Decision(_paused(state, now, reason, "step"), True, reason, {})
        if now - state.step_started_at < step.pause.duration:
            return _wait(state, f"{label}: pausing for {step.pause.duration:.0f}s", {})
        return _canary_next(state, spec, now, f"{label}: pause done", {}, None)
    a = step.analysis or Analysis()
    outcome, j = run_analysis(spec, a, m, now - state.step_started_at)
    figures = {**j.figures, "step": state.step}
    if outcome == "pass":
        return _canary_next(
            state, spec, now, f"{label}: analysis passed ({j.reason})", figures, "pass"
        )
    if outcome == "fail":
        reason = f"{label}: analysis failed: {j.reason}; all traffic back on stable"
        return _fail(state, now, reason, figures)
    if outcome == "timeout":
        reason = f"{label}: inconclusive at the timeout: {j.reason}; all traffic back on stable"
        return _halt(state, now, reason, figures)
    return _wait(state, _waiting(state, now, a, j, label), figures)


# ------------------------------------------------------------------------------- blue/green


def _arm_from(data: dict[str, Any]) -> ArmFigures:
    return ArmFigures(**{k: data[k] for k in ArmFigures.__dataclass_fields__ if k in data})


def _advance_blue_green(
    state: RolloutState, spec: RolloutSpec, m: Measurements | None, now: float
) -> Decision:
    bg = spec.blue_green
    if state.step == 0:  # pre-promotion: green on preview and shadow traffic
        a, label = bg.pre_promotion, "pre-promotion analysis"
        outcome, j = run_analysis(spec, a, m, now - state.step_started_at)
        figures = {**j.figures, "stage": "pre_promotion"}
        if outcome == "pass" and m is not None:
            reason = f"{label} passed ({j.reason}): all traffic switched to green"
            memory = {**state.memory, "switched_at": now, "baseline": m.stable.to_dict()}
            st = _set(
                state,
                now,
                reason,
                step=1,
                weight=100,
                shadow_percent=0,
                step_started_at=now,
                memory=memory,
            )
            return Decision(st, True, reason, figures, verdict="pass")
    else:  # post-promotion: green on all live traffic, judged against blue's pre-switch figures
        a, label = bg.post_promotion, "post-promotion analysis"
        baseline = _arm_from(
            state.memory.get("baseline", {"version": state.stable_version, "arm": state.stable_arm})
        )
        if m is not None:
            m = replace(m, stable=baseline, paired=PairedFigures())
        outcome, j = run_analysis(spec, a, m, now - state.step_started_at)
        figures = {
            **j.figures,
            "stage": "post_promotion",
            "switched_at": state.memory.get("switched_at"),
        }
        if outcome == "pass":
            return _promote_decision(state, now, f"{label} passed ({j.reason}): promoted", figures)
    if outcome == "fail":
        back = "; switched back to blue" if state.weight else ""
        reason = f"{label} failed: {j.reason}{back}"
        return _fail(state, now, reason, figures)
    if outcome == "timeout":
        reason = f"{label} inconclusive: {j.reason}; all traffic on blue"
        return _halt(state, now, reason, figures)
    return _wait(state, _waiting(state, now, a, j, label), figures)


# ----------------------------------------------------------------------------------- shadow


def _advance_shadow(
    state: RolloutState, spec: RolloutSpec, m: Measurements | None, now: float
) -> Decision:
    sh = spec.shadow
    a = Analysis(duration=sh.duration)
    outcome, j = run_analysis(spec, a, m, now - state.step_started_at)
    figures = {**j.figures, "shadow_report": shadow_report(m)}
    if now - state.step_started_at < sh.duration:
        return _wait(state, _waiting(state, now, a, j, "shadow"), figures)
    if sh.promote:
        if outcome == "pass":
            return _promote_decision(state, now, f"shadow passed ({j.reason}): promoted", figures)
        if outcome == "wait":
            return _wait(state, _waiting(state, now, a, j, "shadow"), figures)
    reason = f"shadow finished: promote or abort (analysis {j.verdict}: {j.reason})"
    return Decision(
        _paused(state, now, reason, "shadow_end"), True, reason, figures, verdict=j.verdict
    )


# --------------------------------------------------------------------------------------- A/B


def _advance_ab(
    state: RolloutState, spec: RolloutSpec, m: Measurements | None, now: float
) -> Decision:
    ab = spec.ab
    since = float(state.memory.get("since", state.step_started_at))
    elapsed = now - since
    figures: dict[str, Any] = {"elapsed_s": elapsed}
    if m is not None:
        t = Thresholds.merged(spec.analysis.model_dump())
        c = m.candidate
        figures.update(m.to_dict(), ab=ab_figures(m, spec))
        rate = c.error_rate
        if (
            t.max_error_rate is not None
            and rate is not None
            and c.attempts >= t.min_samples
            and rate > t.max_error_rate
        ):
            reason = f"A/B: b's error_rate {rate:.4g} > max {t.max_error_rate:.4g}"
            return _fail(state, now, reason, figures)
        interval = figures["ab"]["interval"]
        if interval is not None:
            lo, hi = interval
            shown = f"MAE_b − MAE_a = {figures['ab']['d_hat']:.4g} in [{lo:.4g}, {hi:.4g}]"
            if hi < 0:
                if ab.promote_winner:
                    return _promote_decision(
                        state, now, f"A/B: b is better ({shown}): promoted", figures
                    )
                reason = f"A/B: b is better ({shown}): promote or abort"
                return Decision(
                    _paused(state, now, reason, "ab_winner"), True, reason, figures, verdict="pass"
                )
            if lo > 0:
                reason = f"A/B: a is better ({shown}): aborted"
                return _fail(state, now, reason, figures)
        n = int(figures["ab"]["n"])
        if ab.max_samples is not None and n >= ab.max_samples:
            reason = f"A/B: inconclusive: no difference found in {n} rides (max_samples)"
            return _halt(state, now, reason, figures)
    if elapsed >= ab.max_duration:
        reason = f"A/B: inconclusive: no difference found in {elapsed:.0f}s (max_duration)"
        return _halt(state, now, reason, figures)
    return _wait(state, "A/B: no decision yet", figures)


# ---------------------------------------------------------------------------------- rolling


# A worker's report older than this says nothing: it reports every 2 s while it follows a rolling
# rollout, so a silent worker is gone (or stuck), not ready.
WORKER_REPORT_STALE_S = 10.0


def _not_ready(state: RolloutState, m: Measurements | None, moved: int) -> dict[int, str] | None:
    """The moved workers (index → why) that do not say they serve the candidate. None when no
    indexed worker reports at all: then only processes that split by share (stream consumers,
    batch jobs, a one-process server) follow the rollout, and their traffic is the evidence."""
    fresh = [w for w in (m.workers if m else ()) if w.age_s <= WORKER_REPORT_STALE_S]
    if not fresh:
        return None
    why: dict[int, str] = {}
    for i in range(moved):
        mine = [w for w in fresh if w.worker == i]
        if not mine:
            why[i] = "has not reported"
            continue
        for w in mine:
            if w.rollout_id != state.id or w.answering != state.candidate_version:
                said = f"answers with v{w.answering}" + (f": {w.error}" if w.error else "")
                why[i] = f"on {w.host} {said}"
                break
    return why


def _advance_rolling(
    state: RolloutState, spec: RolloutSpec, m: Measurements | None, now: float
) -> Decision:
    r = spec.rolling
    moved = int(state.memory.get("moved", 0))
    t = Thresholds.merged(spec.analysis.model_dump())
    c = m.candidate if m is not None else None
    figures: dict[str, Any] = {**(m.to_dict() if m else {}), "moved": moved, "workers": r.workers}
    rate = c.error_rate if c is not None else None
    if rate is not None and t.max_error_rate is not None and rate > t.max_error_rate:
        reason = (
            f"rolling: moved workers fail: error_rate {rate:.4g} > max "
            f"{t.max_error_rate:.4g}; all workers back on stable"
        )
        return _fail(state, now, reason, figures)
    elapsed = now - state.step_started_at
    if elapsed < r.interval:
        return _wait(state, f"rolling: {moved} of {r.workers} moved", figures)
    not_ready = _not_ready(state, m, moved)
    figures["not_ready"] = {str(i): why for i, why in (not_ready or {}).items()}
    waiting = ""
    if not_ready:
        waiting = "; ".join(f"worker {i} {why}" for i, why in sorted(not_ready.items()))
        waiting = f"not every moved worker serves v{state.candidate_version}: {waiting}"
    elif c is None or c.requests == 0:
        waiting = "the moved workers answered nothing"
    if waiting:
        timeout = spec.analysis.timeout or max(3.0 * r.interval, 60.0)
        if elapsed >= timeout:
            reason = f"rolling: inconclusive after {elapsed:.0f}s: {waiting}; all on stable"
            return _halt(state, now, reason, figures)
        return _wait(state, f"rolling: waiting: {waiting}", figures)
    evidence = "answered" if not_ready is None else "serve the candidate and answered"
    if moved >= r.workers:
        return _promote_decision(
            state, now, f"rolling: all {r.workers} workers {evidence}, healthy: promoted", figures
        )
    reason = (
        f"rolling: moved worker {moved + 1} of {r.workers} (the {moved} moved before "
        f"{evidence}, healthy)"
    )
    moved += 1
    st = _set(
        state,
        now,
        reason,
        step=moved,
        weight=round(100 * moved / r.workers),
        step_started_at=now,
        memory={**state.memory, "moved": moved, "workers": r.workers},
    )
    return Decision(st, True, reason, figures, verdict="pass")


# ------------------------------------------------------------------------------------ public

_ADVANCE = {
    "canary": _advance_canary,
    "blue_green": _advance_blue_green,
    "shadow": _advance_shadow,
    "ab": _advance_ab,
    "rolling": _advance_rolling,
}


def start(state: RolloutState, spec: RolloutSpec, now: float) -> RolloutState:
    """Apply a new rollout's first step (see :func:`ridecast.rollout.spec.initial_state`)."""
    if spec.strategy == "canary":
        return _enter_canary(state, spec, now)
    if spec.strategy == "blue_green":
        return state.evolve(weight=0, preview=True, shadow_percent=spec.blue_green.shadow_percent)
    if spec.strategy == "shadow":
        return state.evolve(weight=0, shadow_percent=spec.shadow.percent)
    if spec.strategy == "ab":
        return state.evolve(weight=spec.ab.weight, memory={"since": now})
    n = spec.rolling.workers
    return state.evolve(step=1, weight=round(100 / n), memory={"moved": 1, "workers": n})


def window(state: RolloutState, now: float) -> tuple[float, float] | None:
    """The prediction-log window ``(since, until)`` to measure now; None when none is needed."""
    if state.phase != "progressing":
        return None
    if state.strategy == "canary":
        steps = spec_of(state).steps or []
        if state.step >= len(steps) or steps[state.step].analysis is None:
            return None
    if state.strategy == "ab":
        return (float(state.memory.get("since", state.step_started_at)), now)
    return (state.step_started_at, now)


def advance(state: RolloutState, measurements: Measurements | None, now: float) -> Decision:
    """One tick of the state's strategy. Only a progressing rollout moves on its own."""
    if state.phase != "progressing":
        return Decision(state, False, f"rollout is {state.phase}: {state.reason}", {})
    return _ADVANCE[state.strategy](state, spec_of(state), measurements, now)


def _require(state: RolloutState, action: str, allowed: tuple[str, ...]) -> None:
    if state.phase not in allowed:
        raise RolloutError(
            f"cannot {action} rollout {state.id}: it is {state.phase} "
            f"(only a {' or '.join(allowed)} rollout can be {action}d)"
        )


def promote(state: RolloutState, now: float, reason: str = "promoted by hand") -> Decision:
    """All traffic to the candidate now, and the champion alias with it."""
    _require(state, "promote", ("progressing", "paused", "inconclusive"))
    return Decision(_promoted(state, now, reason), True, reason, {}, promote=True)


def abort(state: RolloutState, now: float, reason: str = "aborted by hand") -> Decision:
    """All traffic back to the stable version; the alias stays where it was."""
    _require(state, "abort", ("progressing", "paused", "inconclusive"))
    return Decision(_aborted(state, now, reason), True, reason, {})


def pause(state: RolloutState, now: float) -> Decision:
    """Hold the rollout where it is: the traffic stays as it is and no step moves."""
    _require(state, "pause", ("progressing",))
    reason = f"paused by hand at step {state.step}"
    return Decision(_paused(state, now, reason, "hand"), True, reason, {})


def resume(state: RolloutState, now: float) -> Decision:
    """Go on: past an open-ended pause step, or re-run the current step with fresh data."""
    _require(state, "resume", ("paused", "inconclusive"))
    spec = spec_of(state)
    memory = {k: v for k, v in state.memory.items() if k not in ("paused_by", "halted")}
    st = state.evolve(phase="progressing", step_started_at=now, memory=memory)
    if state.phase == "inconclusive":
        halted = state.memory.get("halted", {})
        st = st.evolve(
            weight=int(halted.get("weight", state.weight)),
            shadow_percent=int(halted.get("shadow_percent", state.shadow_percent)),
            preview=bool(halted.get("preview", state.preview)),
        )
        if halted.get("moved") is not None:
            st = st.evolve(memory={**st.memory, "moved": halted["moved"]})
        if state.strategy == "ab":
            st = st.evolve(memory={**st.memory, "since": now})
        reason = f"resumed: re-running step {state.step}"
    elif state.memory.get("paused_by") == "step":
        return _canary_next(st, spec, now, f"step {state.step}: resumed", {}, None)
    else:
        reason = f"resumed at step {state.step}"
    st = _set(st, now, reason)
    return Decision(st, True, reason, {})
