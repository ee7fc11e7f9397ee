"""The state of one rollout: the record every worker, replica, consumer and batch job follows."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

PHASES = ("progressing", "paused", "promoted", "aborted", "inconclusive")
ACTIVE_PHASES = ("progressing", "paused")
STRATEGIES = ("canary", "blue_green", "shadow", "ab", "rolling")

# The two arms of each strategy, as the prediction log names them: (stable's arm, candidate's).
ARMS: dict[str, tuple[str, str]] = {
    "canary": ("stable", "canary"),
    "blue_green": ("blue", "green"),
    "shadow": ("stable", "shadow"),
    "ab": ("a", "b"),
    "rolling": ("stable", "candidate"),
}
SHADOW_ARM = "shadow"
# The candidate answering the preview route or header (before it takes live traffic).
PREVIEW_ARM = "preview"
NO_ROLLOUT_ARM = "stable"


@dataclass(frozen=True)
class RolloutState:
    """One rollout of ``model`` from ``stable_version`` to ``candidate_version``.

    ``weight`` is the percentage of live traffic the candidate answers; ``shadow_percent`` the
    percentage of requests also copied to the candidate, whose answers callers never see.
    ``preview`` makes the candidate reachable by the preview route and header.
    """

    id: str
    model: str
    strategy: str
    stable_version: str
    candidate_version: str
    phase: str = "progressing"
    step: int = 0
    weight: int = 0
    shadow_percent: int = 0
    preview: bool = True
    step_started_at: float = 0.0
    created_at: float = 0.0
    updated_at: float = 0.0
    reason: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    # Strategy-specific memory between steps (e.g. blue/green's switch time), JSON-able.
    memory: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    @property
    def arms(self) -> tuple[str, str]:
        return ARMS[self.strategy]

    @property
    def stable_arm(self) -> str:
        return ARMS[self.strategy][0]

    @property
    def candidate_arm(self) -> str:
        return ARMS[self.strategy][1]

    @property
    def weights(self) -> dict[str, int]:
        """Live-traffic weights by version (the candidate's share and the rest)."""
        return {self.stable_version: 100 - self.weight, self.candidate_version: self.weight}

    def evolve(self, **changes: Any) -> RolloutState:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "strategy": self.strategy,
            "stable_version": self.stable_version,
            "candidate_version": self.candidate_version,
            "phase": self.phase,
            "step": self.step,
            "weight": self.weight,
            "shadow_percent": self.shadow_percent,
            "preview": self.preview,
            "step_started_at": self.step_started_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "reason": self.reason,
            "spec": self.spec,
            "memory": self.memory,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutState:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
