"""The figures a rollout's analysis judges, as one window of the prediction log yields them.

Built by :mod:`ridecast.control.measure` from SQL; built by hand in unit tests. Every figure is
``None`` (not zero) when there was nothing to measure, so "no data" can never pass for "good".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Two versions' answers for one ride "differ" when more than this many minutes apart: the
# shadow report's share_over_2_min, the batch comparison's and the dashboard's.
FAR_APART_MINUTES = 2.0


@dataclass(frozen=True)
class ArmFigures:
    """One version's traffic in the window."""

    version: str
    arm: str
    requests: int = 0  # predictions answered (or shadowed) by this version
    errors: int = 0  # predictions this version was asked for and failed (model errors)
    p99_latency_ms: float | None = None
    mean_prediction: float | None = None
    joined: int = 0  # predictions with feedback (the ride finished)
    mae: float | None = None  # mean |prediction − actual| over the joined rides
    abs_error_var: float | None = None  # sample variance of |prediction − actual|

    @property
    def attempts(self) -> int:
        """Predictions asked of this version: answered or failed."""
        return self.requests + self.errors

    @property
    def error_rate(self) -> float | None:
        """Failed / asked: a version that only fails has rate 1, not "no data"."""
        attempts = self.attempts
        return None if attempts == 0 else self.errors / attempts

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "arm": self.arm,
            "requests": self.requests,
            "errors": self.errors,
            "attempts": self.attempts,
            "error_rate": self.error_rate,
            "p99_latency_ms": self.p99_latency_ms,
            "mean_prediction": self.mean_prediction,
            "joined": self.joined,
            "mae": self.mae,
            "abs_error_var": self.abs_error_var,
        }


@dataclass(frozen=True)
class PairedFigures:
    """Rides both versions answered (live + shadow, or both batch predictions) with feedback:
    d_i = |candidate_i − actual_i| − |stable_i − actual_i|."""

    n: int = 0
    mean_diff: float | None = None
    var_diff: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean_diff": self.mean_diff, "var_diff": self.var_diff}


@dataclass(frozen=True)
class ShadowFigures:
    """Live answers against shadow answers, paired by request (ride)."""

    n: int = 0
    mean_abs_diff: float | None = None
    mean_signed_diff: float | None = None  # shadow − live
    correlation: float | None = None
    share_over_2_min: float | None = None  # of pairs more than FAR_APART_MINUTES apart
    p95_abs_diff: float | None = None
    shadow_p99_latency_ms: float | None = None
    dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean_abs_diff": self.mean_abs_diff,
            "mean_signed_diff": self.mean_signed_diff,
            "correlation": self.correlation,
            "share_over_2_min": self.share_over_2_min,
            "p95_abs_diff": self.p95_abs_diff,
            "shadow_p99_latency_ms": self.shadow_p99_latency_ms,
            "dropped": self.dropped,
        }


@dataclass(frozen=True)
class WorkerReport:
    """What one indexed serving worker last said it answers with (rolling rollouts)."""

    worker: int
    host: str
    rollout_id: str | None
    answering: str  # the version every request to this worker gets now
    versions: tuple[str, ...]  # what it has loaded
    error: str | None  # why it does not serve what the rollout asks, when it knows
    age_s: float  # seconds since it said so

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "host": self.host,
            "rollout_id": self.rollout_id,
            "answering": self.answering,
            "versions": list(self.versions),
            "error": self.error,
            "age_s": round(self.age_s, 3),
        }


@dataclass(frozen=True)
class Measurements:
    """What happened in one window ``[since, until]`` (unix seconds) of one rollout."""

    since: float
    until: float
    stable: ArmFigures
    candidate: ArmFigures
    paired: PairedFigures = field(default_factory=PairedFigures)
    shadow: ShadowFigures = field(default_factory=ShadowFigures)
    # Rolling: the indexed serving workers' reports (from the state store, not the log).
    workers: tuple[WorkerReport, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {
            "since": self.since,
            "until": self.until,
            "stable": self.stable.to_dict(),
            "candidate": self.candidate.to_dict(),
            "paired": self.paired.to_dict(),
            "shadow": self.shadow.to_dict(),
        }
        if self.workers:
            out["worker_reports"] = [w.to_dict() for w in self.workers]
        return out
