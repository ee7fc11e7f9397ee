"""The rollouts page: one rollout's state, its analyses and transitions, and for A/B and shadow
runs the figures behind their decisions, drawn over time.

The state, every transition with its reason, and the figures of each analysis come from the
rollout state store (what ``ridecast rollout status/history`` show). The controller saves a
transition only when something changes, so the figures of the window in progress, the A/B
confidence sequence over time and the shadow's pairs are measured here from the prediction log,
with the same SQL and the same statistics the controller uses
(:mod:`ridecast.control.measure`, :mod:`ridecast.rollout.stats`).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, case, func, select

from ridecast.control import ops
from ridecast.control.measure import measure
from ridecast.dashboard.sources import Sources, bucket_index, nice_step
from ridecast.monitoring.schema import feedback, predictions
from ridecast.monitoring.schema import rollouts as rollouts_table
from ridecast.rollout import strategies
from ridecast.rollout.analysis import ab_figures, shadow_report
from ridecast.rollout.measurements import FAR_APART_MINUTES
from ridecast.rollout.spec import spec_of
from ridecast.rollout.state import SHADOW_ARM, RolloutState
from ridecast.rollout.stats import two_sample_sequence

SCATTER_POINTS = 1500  # the most recent pairs drawn; the share that differ counts every pair
SEQUENCE_POINTS = 80
RECENT = 20


def _target(model: str) -> str:
    from ridecast.model import TARGETS

    return TARGETS.get(model, "duration")


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _variance(n: int, total: float, squares: float) -> float | None:
    if n < 2:
        return None
    return max(0.0, (squares - total * total / n) / (n - 1))


def _end(state: RolloutState, now: float) -> float:
    """Until when the rollout's answers count: now while it runs, else when it stopped."""
    return now if state.active else max(state.updated_at, state.created_at)


def rollouts_view(
    sources: Sources, rollout_id: str | None = None, now: float | None = None
) -> dict[str, Any]:
    """The page's data for ``rollout_id``, or the active rollout, or the latest one."""
    now = time.time() if now is None else now
    out: dict[str, Any] = {"empty": True, "rollouts": [], "rollout": None}
    store = sources.store
    if not sources.has(store.engine, rollouts_table.name):
        return out
    recent = store.recent(RECENT)
    out["rollouts"] = [
        {
            "id": s.id,
            "model": s.model,
            "strategy": s.strategy,
            "phase": s.phase,
            "active": s.active,
            "stable_version": s.stable_version,
            "candidate_version": s.candidate_version,
            "created_at": s.created_at,
        }
        for s in recent
    ]
    state = None
    if rollout_id:
        state = store.get(rollout_id)
    if state is None:
        state = next((s for s in recent if s.active), None) or (recent[0] if recent else None)
    if state is None:
        return out
    out["empty"] = False
    status = ops.describe(state, store, now)
    history = store.history(state.id)
    status["history"] = [
        {
            "ts": row["ts"],
            "phase": row["phase"],
            "step": row["step"],
            "weight": row["weight"],
            "shadow_percent": row["shadow_percent"],
            "reason": row["reason"],
            "actor": row["actor"],
            "verdict": (row.get("figures") or {}).get("verdict"),
        }
        for row in history
    ]
    status["analyses"] = [_analysis(row) for row in history if _verdict(row) is not None]
    status["weights_over_time"] = _weights(history, state, now)
    status["current"] = _current(sources, state, now)
    if state.strategy == "ab":
        status["ab"] = _ab(sources, state, now, status["current"])
    if state.strategy == "shadow" or (state.strategy == "blue_green" and state.step == 0):
        status["shadow"] = _shadow(sources, state, now)
    status.pop("spec", None)
    status.pop("analysis", None)  # the last five again: "analyses" holds them all
    out["rollout"] = status
    return out


def _verdict(row: dict[str, Any]) -> str | None:
    return (row.get("figures") or {}).get("verdict")


def _arm(data: dict[str, Any] | None) -> dict[str, Any] | None:
    if not data:
        return None
    keys = ("version", "arm", "requests", "errors", "error_rate", "p99_latency_ms")
    more = ("mean_prediction", "joined", "mae")
    return {k: data.get(k) for k in (*keys, *more)}


def _analysis(row: dict[str, Any]) -> dict[str, Any]:
    """One saved analysis: its verdict, reason, checks and each arm's figures."""
    figures = row.get("figures") or {}
    return {
        "ts": row["ts"],
        "step": row["step"],
        "phase": row["phase"],
        "verdict": figures.get("verdict"),
        "reason": row["reason"],
        "checks": figures.get("checks") or [],
        "computed": figures.get("computed") or {},
        "stable": _arm(figures.get("stable")),
        "candidate": _arm(figures.get("candidate")),
        "ab": figures.get("ab"),
        "shadow_report": figures.get("shadow_report"),
        "elapsed_s": figures.get("elapsed_s"),
    }


def _weights(history: list[dict[str, Any]], state: RolloutState, now: float) -> dict[str, Any]:
    """The candidate's share of live traffic (and of shadow copies) after each transition."""
    t = [float(r["ts"]) for r in history]
    weight = [int(r["weight"]) for r in history]
    shadow = [int(r["shadow_percent"]) for r in history]
    if history:  # hold the last value until now (or the end), so the step is drawn
        t.append(max(_end(state, now), t[-1]))
        weight.append(weight[-1])
        shadow.append(shadow[-1])
    return {"t": t, "weight": weight, "shadow_percent": shadow}


def _current(sources: Sources, state: RolloutState, now: float) -> dict[str, Any] | None:
    """The figures of the window being judged now (None when nothing is being measured)."""
    window = strategies.window(state, now)
    if window is None or not sources.has(sources.log, predictions.name):
        return None
    m = measure(sources.log, state, window[0], window[1], _target(state.model))
    current: dict[str, Any] = {
        "since": window[0],
        "until": window[1],
        "stable": _arm(m.stable.to_dict()),
        "candidate": _arm(m.candidate.to_dict()),
    }
    if state.strategy == "ab":
        current["ab"] = ab_figures(m, spec_of(state))
    if state.shadow_percent or state.strategy == "shadow":
        current["shadow_report"] = shadow_report(m)
    return current


# ------------------------------------------------------------------------------------- A/B


def _ab(
    sources: Sources, state: RolloutState, now: float, current: dict[str, Any] | None
) -> dict[str, Any]:
    """Per variant n and MAE, and MAE_b − MAE_a with its always-valid interval after each
    bucket of time, as the feedback that had arrived by then gave it."""
    spec = spec_of(state)
    since = float(state.memory.get("since", state.step_started_at))
    until = _end(state, now)
    out: dict[str, Any] = {
        "alpha": spec.ab.alpha,
        "min_samples": spec.analysis.min_samples or 1,
        "variants": None,
        "sequence": None,
    }
    if not (sources.has(sources.log, predictions.name) and sources.has(sources.log, "feedback")):
        return out
    target = _target(state.model)
    if current is not None and "ab" in current:
        out["variants"] = current["ab"]
    else:  # a finished test: the same figures over its whole run
        out["variants"] = ab_figures(measure(sources.log, state, since, until, target), spec)
    step = nice_step(max(until - since, 1.0), SEQUENCE_POINTS)
    buckets = max(1, math.ceil((until - since) / step))
    p, f = predictions, feedback
    (arm_a, arm_b), versions = state.arms, (state.stable_version, state.candidate_version)
    error = func.abs(p.c.prediction - f.c.actual)
    bucket = bucket_index(sources.log, f.c.ts, since, step).label("bucket")
    a_rows, b_rows = (
        and_(p.c.arm == arm, p.c.version == v) for arm, v in zip(state.arms, versions, strict=True)
    )
    query = (
        select(p.c.arm, bucket, func.count(), func.sum(error), func.sum(error * error))
        .select_from(p.join(f, and_(f.c.ride_id == p.c.ride_id, f.c.target == target)))
        .where(
            p.c.rollout_id == state.id,
            p.c.arm.in_((arm_a, arm_b)),
            p.c.ts >= _utc(since),
            p.c.ts <= _utc(until),
            a_rows | b_rows,
        )
        .group_by(p.c.arm, bucket)
    )
    with sources.log.connect() as conn:
        rows = conn.execute(query).all()
    sums = {arm: [[0, 0.0, 0.0] for _ in range(buckets)] for arm in (arm_a, arm_b)}
    for arm, b, n, total, squares in rows:
        i = min(max(int(b), 0), buckets - 1)
        cell = sums[arm][i]
        cell[0] += int(n)
        cell[1] += float(total or 0.0)
        cell[2] += float(squares or 0.0)
    seq: dict[str, list[Any]] = {
        k: [] for k in ("t", "n_a", "n_b", "mae_a", "mae_b", "d_hat", "low", "high")
    }
    running = {arm: [0, 0.0, 0.0] for arm in (arm_a, arm_b)}
    readable = out["min_samples"]  # the test is not read before each arm has this many
    for i in range(buckets):
        for arm in (arm_a, arm_b):
            for k in range(3):
                running[arm][k] += sums[arm][i][k]
        (n_a, s_a, q_a), (n_b, s_b, q_b) = running[arm_a], running[arm_b]
        seq["t"].append(since + (i + 1) * step)
        seq["n_a"].append(n_a)
        seq["n_b"].append(n_b)
        seq["mae_a"].append(s_a / n_a if n_a else None)
        seq["mae_b"].append(s_b / n_b if n_b else None)
        var_a, var_b = _variance(int(n_a), s_a, q_a), _variance(int(n_b), s_b, q_b)
        if var_a is None or var_b is None or var_a + var_b <= 0 or min(n_a, n_b) < readable:
            for name in ("d_hat", "low", "high"):
                seq[name].append(None)
            continue
        d_hat, _v, _tau2, radius = two_sample_sequence(
            s_a / n_a,
            var_a,
            int(n_a),
            s_b / n_b,
            var_b,
            int(n_b),
            alpha=spec.ab.alpha,
            tau2=spec.ab.tau2,
            decision_n=spec.ab.decision_n,
        )
        seq["d_hat"].append(d_hat)
        seq["low"].append(d_hat - radius)
        seq["high"].append(d_hat + radius)
    out["sequence"] = seq
    return out


# ---------------------------------------------------------------------------------- shadow


def _shadow(sources: Sources, state: RolloutState, now: float) -> dict[str, Any]:
    """Live against shadow answers, paired by request (else ride): the most recent pairs for a
    scatter, and over every pair of the run the share more than FAR_APART_MINUTES apart."""
    out: dict[str, Any] = {"far_apart_minutes": FAR_APART_MINUTES, "n": 0, "points": None}
    if not sources.has(sources.log, predictions.name):
        return out
    p = predictions
    since, until = state.created_at, _end(state, now)
    key = func.coalesce(p.c.request_id, p.c.ride_id)
    live_arms = tuple(a for a in dict.fromkeys(state.arms) if a != SHADOW_ARM)
    in_shadow = and_(p.c.arm == SHADOW_ARM, p.c.version == state.candidate_version)
    in_live = p.c.arm.in_(live_arms)
    pairs = (
        select(
            func.avg(case((in_live, p.c.prediction))).label("live"),
            func.avg(case((in_shadow, p.c.prediction))).label("shadow"),
            func.max(p.c.id).label("last_id"),
        )
        .where(
            p.c.rollout_id == state.id,
            p.c.arm.in_((*live_arms, SHADOW_ARM)),
            p.c.ts >= _utc(since),
            p.c.ts <= _utc(until),
            key.is_not(None),
        )
        .group_by(key)
        .having(and_(func.count(case((in_live, 1))) > 0, func.count(case((in_shadow, 1))) > 0))
        .subquery("pairs")
    )
    diff = func.abs(pairs.c.shadow - pairs.c.live)
    with sources.log.connect() as conn:
        n, far, mean_abs = conn.execute(
            select(
                func.count(),
                func.sum(case((diff > FAR_APART_MINUTES, 1), else_=0)),
                func.avg(diff),
            ).select_from(pairs)
        ).one()
        recent = conn.execute(
            select(pairs.c.live, pairs.c.shadow)
            .order_by(pairs.c.last_id.desc())
            .limit(SCATTER_POINTS)
        ).all()
    n = int(n or 0)
    out.update(
        n=n,
        far_apart=int(far or 0),
        share_far_apart=(int(far or 0) / n) if n else None,
        mean_abs_diff=float(mean_abs) if mean_abs is not None else None,
    )
    if recent:
        points = sorted((float(a), float(b)) for a, b in recent)
        out["points"] = {"live": [a for a, _ in points], "shadow": [b for _, b in points]}
    return out
