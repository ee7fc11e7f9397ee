"""The figures a comparison or a rollout-following run adds to the job's summary.

They are running sums over the chunks (memory does not grow with the month), turned into the
numbers people read: each version's error against the actual durations, how far apart the two
versions are, and, for a rollout, how many rows each version got.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ridecast.rollout.measurements import FAR_APART_MINUTES


@dataclass
class ErrorSums:
    rows: int = 0
    abs_sum: float = 0.0
    sq_sum: float = 0.0

    def add(self, actual: np.ndarray, predicted: np.ndarray) -> None:
        error = actual - predicted
        self.rows += int(error.shape[0])
        self.abs_sum += float(np.abs(error).sum())
        self.sq_sum += float(np.dot(error, error))

    @property
    def mae(self) -> float:
        return self.abs_sum / self.rows if self.rows else math.nan

    @property
    def rmse(self) -> float:
        return math.sqrt(self.sq_sum / self.rows) if self.rows else math.nan


@dataclass
class Comparison:
    """The stable version and the candidate, on the same rows."""

    stable_version: str
    candidate_version: str
    stable: ErrorSums = field(default_factory=ErrorSums)
    candidate: ErrorSums = field(default_factory=ErrorSums)
    diff_sum: float = 0.0
    abs_diff_sum: float = 0.0
    far_apart: int = 0

    def add(self, actual: np.ndarray, stable: np.ndarray, candidate: np.ndarray) -> None:
        self.stable.add(actual, stable)
        self.candidate.add(actual, candidate)
        diff = candidate - stable
        self.diff_sum += float(diff.sum())
        self.abs_diff_sum += float(np.abs(diff).sum())
        self.far_apart += int((np.abs(diff) > FAR_APART_MINUTES).sum())

    @property
    def rows(self) -> int:
        return self.stable.rows

    @property
    def better(self) -> str:
        """``candidate``, ``stable`` or ``tie``, by MAE against the actual durations."""
        if not self.rows or self.candidate.mae == self.stable.mae:
            return "tie"
        return "candidate" if self.candidate.mae < self.stable.mae else "stable"

    def record(self) -> dict[str, Any]:
        n = self.rows
        return {
            "rows": n,
            "stable": {
                "version": self.stable_version,
                "mae": self.stable.mae,
                "rmse": self.stable.rmse,
            },
            "candidate": {
                "version": self.candidate_version,
                "mae": self.candidate.mae,
                "rmse": self.candidate.rmse,
            },
            "mean_diff": self.diff_sum / n if n else math.nan,
            "mean_abs_diff": self.abs_diff_sum / n if n else math.nan,
            "share_abs_diff_over_2min": self.far_apart / n if n else math.nan,
            "better": self.better,
        }


@dataclass
class Split:
    """How the rollout's router split the rows, and each version's error on its own rows."""

    rollout_id: str
    strategy: str
    phase: str
    step: int
    weight: int
    shadow_percent: int
    versions: list[str]
    arms: list[str]
    errors: list[ErrorSums] = field(default_factory=list)
    shadow_rows: int = 0

    def __post_init__(self) -> None:
        self.errors = [ErrorSums() for _ in self.versions]

    def add(
        self, actual: np.ndarray, predicted: np.ndarray, index: np.ndarray, shadow_rows: int
    ) -> None:
        for i, sums in enumerate(self.errors):
            rows = index == i
            sums.add(actual[rows], predicted[rows])
        self.shadow_rows += shadow_rows

    @property
    def rows(self) -> int:
        return sum(e.rows for e in self.errors)

    def record(self) -> dict[str, Any]:
        total = self.rows
        return {
            "rollout_id": self.rollout_id,
            "strategy": self.strategy,
            "phase": self.phase,
            "step": self.step,
            "weight": self.weight,
            "shadow_percent": self.shadow_percent,
            "rows": total,
            "versions": [
                {
                    "version": version,
                    "arm": arm,
                    "rows": sums.rows,
                    "share": sums.rows / total if total else math.nan,
                    "mae": sums.mae,
                    "rmse": sums.rmse,
                }
                for version, arm, sums in zip(self.versions, self.arms, self.errors, strict=True)
            ],
            "shadow_rows": self.shadow_rows,
        }
