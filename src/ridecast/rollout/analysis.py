"""Judging one window of measurements against the analysis thresholds.

Each figure needs its own data before it counts:

- error rate: ``min_samples`` predictions asked of the candidate, answered or failed (so a
  candidate that fails every prediction fails the analysis, rather than having "no data");
- p99 latency: ``min_samples`` candidate requests answered;
- mean-prediction shift: ``min_samples`` requests on each version;
- MAE ratio: ``min_samples`` feedback-joined rides on each version (or that many paired rides).

A figure with enough data that breaks its threshold fails the analysis, whatever the others say.
The analysis passes only when every judged figure has its data and is within its threshold; in
any other case it is ``inconclusive``. "No data" is never "good": a missing figure is ``None``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from ridecast.rollout.measurements import ArmFigures, Measurements
from ridecast.rollout.spec import Analysis, RolloutSpec
from ridecast.rollout.stats import paired_ci, paired_sequence, two_sample_sequence

EPS = 1e-12


@dataclass(frozen=True)
class Thresholds:
    """The thresholds one analysis judges by; a ``max_*`` of ``None`` is not judged."""

    min_samples: int = 200
    max_mae_ratio: float | None = 1.05
    max_error_rate: float | None = 0.01
    max_p99_latency_ms: float | None = 100.0
    max_mean_shift: float | None = 0.25

    @classmethod
    def merged(cls, base: dict[str, Any], override: dict[str, Any] | None = None) -> Thresholds:
        """The file's ``analysis`` block, with one analysis' non-null overrides on top."""
        values: dict[str, Any] = {k: base.get(k) for k in cls.__dataclass_fields__ if k in base}
        for key, value in (override or {}).items():
            if key in cls.__dataclass_fields__ and value is not None:
                values[key] = value
        if values.get("min_samples") is None:
            values["min_samples"] = 1
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Judgement(NamedTuple):
    verdict: str  # pass | fail | inconclusive
    reason: str
    figures: dict[str, Any]


def _check(
    name: str, value: float | None, limit: float | None, enough: bool, need: str
) -> dict[str, Any]:
    ok: bool | None = None
    if limit is not None and value is not None and enough:
        ok = value <= limit + EPS
    return {"figure": name, "value": value, "threshold": limit, "ok": ok, "needs": need}


def mae_ratio(m: Measurements, min_samples: int) -> tuple[float | None, str]:
    """Candidate MAE / stable MAE, and how it was measured (``arms``, ``paired`` or ``""``)."""
    s, c = m.stable, m.candidate
    if (
        s.mae is not None
        and c.mae is not None
        and s.joined >= min_samples
        and c.joined >= min_samples
    ):
        return c.mae / max(s.mae, EPS), "arms"
    p = m.paired
    if p.n >= min_samples and p.mean_diff is not None and s.mae is not None and s.mae > 0:
        # The rides both versions answered: (MAE_stable + mean(|c−y| − |s−y|)) / MAE_stable.
        return (s.mae + p.mean_diff) / s.mae, "paired"
    return None, ""


def mean_shift(m: Measurements) -> float | None:
    """|mean candidate prediction − mean stable prediction| / |mean stable prediction|."""
    s, c = m.stable.mean_prediction, m.candidate.mean_prediction
    if s is None or c is None:
        if s is not None and m.shadow.n > 0 and m.shadow.mean_signed_diff is not None:
            return abs(m.shadow.mean_signed_diff) / max(abs(s), EPS)  # shadow − live, paired
        return None
    return abs(c - s) / max(abs(s), EPS)


def judge(m: Measurements | None, t: Thresholds) -> Judgement:
    """The verdict on one window: ``pass``, ``fail`` or ``inconclusive``, why, and the figures."""
    if m is None:
        return Judgement(
            "inconclusive",
            "no measurements yet",
            {"thresholds": t.to_dict(), "checks": [], "computed": {}},
        )
    n = t.min_samples
    s, c = m.stable, m.candidate
    ratio, ratio_from = mae_ratio(m, n)
    shift = mean_shift(m)
    traffic = c.requests >= n
    checks = [
        _check(
            "error_rate",
            c.error_rate,
            t.max_error_rate,
            c.attempts >= n,  # failed predictions count: a candidate that only fails has data
            f"{n} candidate predictions asked (answered or failed)",
        ),
        _check(
            "p99_latency_ms",
            c.p99_latency_ms,
            t.max_p99_latency_ms,
            traffic,
            f"{n} candidate requests",
        ),
        _check(
            "mae_ratio",
            ratio,
            t.max_mae_ratio,
            ratio is not None,
            f"{n} feedback-joined rides per version",
        ),
        _check(
            "mean_shift",
            shift,
            t.max_mean_shift,
            traffic and (s.requests >= n or m.shadow.n >= n),
            f"{n} requests per version",
        ),
    ]
    judged = [ch for ch in checks if ch["threshold"] is not None]
    computed = {
        "candidate_error_rate": c.error_rate,
        "mae_ratio": ratio,
        "mae_ratio_from": ratio_from or None,
        "mean_shift": shift,
    }
    figures = {**m.to_dict(), "thresholds": t.to_dict(), "checks": checks, "computed": computed}
    failed = [ch for ch in judged if ch["ok"] is False]
    if failed:
        return Judgement("fail", "; ".join(_broken(ch) for ch in failed), figures)
    missing = [ch for ch in judged if ch["ok"] is None]
    if not traffic:
        missing.insert(0, {"figure": "traffic", "needs": f"{n} candidate requests"})
    if missing:
        return Judgement("inconclusive", _too_little(missing, s, c), figures)
    return Judgement(
        "pass", "within thresholds: " + ", ".join(_within(ch) for ch in judged), figures
    )


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def _broken(ch: dict[str, Any]) -> str:
    return f"{ch['figure']} {_fmt(ch['value'])} > max {_fmt(ch['threshold'])}"


def _within(ch: dict[str, Any]) -> str:
    return f"{ch['figure']} {_fmt(ch['value'])} ≤ {_fmt(ch['threshold'])}"


def _too_little(missing: list[dict[str, Any]], s: ArmFigures, c: ArmFigures) -> str:
    seen: dict[str, list[str]] = {}
    for ch in missing:
        seen.setdefault(ch["needs"], []).append(ch["figure"])
    wants = "; ".join(f"{', '.join(names)} need {need}" for need, names in seen.items())
    return (
        f"too little data: {wants} (have stable {s.requests} requests / {s.joined} joined, "
        f"candidate {c.requests} requests / {c.errors} failed / {c.joined} joined)"
    )


# ------------------------------------------------------------------ one analysis over time


def timeout_of(spec: RolloutSpec, analysis: Analysis) -> float:
    """How long an analysis may wait for data: its own, the file's, or 3 × duration (≥ 60 s)."""
    if analysis.timeout is not None:
        return analysis.timeout
    if spec.analysis.timeout is not None:
        return spec.analysis.timeout
    return max(3.0 * analysis.duration, 60.0)


def run_analysis(
    spec: RolloutSpec, a: Analysis, m: Measurements | None, elapsed: float
) -> tuple[str, Judgement]:
    """``wait`` (before the duration, or too little data before the timeout), ``pass``, ``fail``
    or ``timeout`` (still too little data at the timeout), with the judgement behind it."""
    t = Thresholds.merged(spec.analysis.model_dump(), a.model_dump())
    j = judge(m, t)
    timeout = timeout_of(spec, a)
    j.figures.update(elapsed_s=elapsed, duration_s=a.duration, timeout_s=timeout)
    if elapsed < a.duration:
        return "wait", j
    if j.verdict in ("pass", "fail"):
        return j.verdict, j
    return ("timeout" if elapsed >= timeout else "wait"), j


# ------------------------------------------------------------------ shadow and A/B reports


def shadow_report(m: Measurements | None, alpha: float = 0.05) -> dict[str, Any]:
    """The shadow comparison: the paired answers, and both versions' MAE once feedback came."""
    if m is None:
        return {}
    report: dict[str, Any] = {
        **m.shadow.to_dict(),
        "stable_mae": m.stable.mae,
        "shadow_mae": m.candidate.mae,
        "paired_n": m.paired.n,
        "paired_mae_diff": m.paired.mean_diff,
        "paired_ci": None,
        "paired_ci_level": 1.0 - alpha,
    }
    p = m.paired
    if p.n >= 2 and p.mean_diff is not None and p.var_diff is not None:
        report["paired_ci"] = list(paired_ci(p.mean_diff, p.var_diff, p.n, alpha))
    return report


def ab_figures(m: Measurements, spec: RolloutSpec) -> dict[str, Any]:
    """Per variant n and MAE, and the always-valid interval on d = MAE_b − MAE_a (or None)."""
    ab, n_min = spec.ab, spec.analysis.min_samples or 1
    a, b, p = m.stable, m.candidate, m.paired
    out: dict[str, Any] = {
        "a": {"version": a.version, "n": a.joined, "mae": a.mae},
        "b": {"version": b.version, "n": b.joined, "mae": b.mae},
        "alpha": ab.alpha,
        "paired": False,
        "d_hat": None,
        "V": None,
        "tau2": None,
        "interval": None,
        "n": a.joined + b.joined,
        "min_samples": n_min,
    }
    seq = None
    if p.n >= n_min and p.mean_diff is not None and p.var_diff is not None and p.var_diff > 0:
        out.update(paired=True, n=p.n)
        seq = paired_sequence(
            p.mean_diff, p.var_diff, p.n, alpha=ab.alpha, tau2=ab.tau2, decision_n=ab.decision_n
        )
    elif (
        min(a.joined, b.joined) >= max(n_min, 2)
        and None not in (a.mae, b.mae)
        and a.abs_error_var is not None
        and b.abs_error_var is not None
        and a.abs_error_var + b.abs_error_var > 0
    ):
        seq = two_sample_sequence(
            a.mae or 0.0,
            a.abs_error_var,
            a.joined,
            b.mae or 0.0,
            b.abs_error_var,
            b.joined,
            alpha=ab.alpha,
            tau2=ab.tau2,
            decision_n=ab.decision_n,
        )
    if seq is not None:
        d_hat, V, tau2, r = seq
        out.update(d_hat=d_hat, V=V, tau2=tau2, interval=[d_hat - r, d_hat + r])
    return out
