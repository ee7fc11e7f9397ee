"""The batch job's answers in the prediction log, through the one writer every mode uses.

When a job follows a rollout or scores a candidate, its answers are evidence for the rollout's
analysis, so they go to :class:`ridecast.monitoring.PredictionLog` with their version, arm and
rollout id, like the web service's and the stream consumers'. A ``--candidate`` run is logged as
a full shadow: the stable version's answers on the stable arm (``stable``, or the rollout's own
stable arm when an active rollout compares the same two versions: ``blue`` for blue/green, ``a``
for A/B) and the candidate's on arm ``shadow``, paired by ride id, so that rollout's analysis
counts them. Each chunk is flushed before the next one is queued (on the job's
writer thread), so memory stays bounded by the chunk size; rows are logged as they are scored,
so a job killed mid-month leaves its logged rows in the log (the log is a record of answers
given, not the job's output).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ridecast.batch.plan import ChunkScores, ScoringPlan
from ridecast.features import RideArrays
from ridecast.rollout.state import NO_ROLLOUT_ARM, SHADOW_ARM

SOURCE = "batch"


class BatchLog:
    def __init__(
        self, url: str, rollout_id: str | None = None, stable_arm: str = NO_ROLLOUT_ARM
    ) -> None:
        from ridecast.monitoring import PredictionLog

        # Not started: the job flushes each chunk itself, so nothing queues up unbounded.
        self.log = PredictionLog(url, max_pending=10_000_000)
        self.rollout_id = rollout_id  # for a --candidate run: the rollout of these versions
        self.stable_arm = stable_arm  # ... and the arm its analysis reads the stable side from
        self.seconds = 0.0

    @property
    def safe_url(self) -> str:
        return self.log.safe_url

    def write(
        self,
        plan: ScoringPlan,
        rides: RideArrays,
        ids: np.ndarray,
        scores: ChunkScores,
        latency_ms: float,
    ) -> None:
        from ridecast.monitoring import PredictionBatch

        started = time.perf_counter()
        now = time.time()

        def batch(
            version: str, arm: str, mask: np.ndarray | None, values: np.ndarray, rollout: Any
        ) -> PredictionBatch:
            pick = (lambda a: a[mask]) if mask is not None else (lambda a: a)
            rows = pick(ids)
            return PredictionBatch(
                model=plan.stable.name,
                version=version,
                source=SOURCE,
                pu=pick(rides.pu),
                do=pick(rides.do),
                distance=pick(rides.distance),
                predictions=values,
                latency_ms=latency_ms,
                ride_ids=rows.tolist(),
                at=now,
                arm=arm,
                rollout_id=rollout,
                request_ids=rows.tolist() if arm == SHADOW_ARM else None,
            )

        batches: list[PredictionBatch] = []
        if plan.deployment is not None and scores.version_index is not None:
            versions, arms, rollout = plan.versions, plan.arms, plan.rollout_id
            for i, (version, arm) in enumerate(zip(versions, arms, strict=True)):
                mask = scores.version_index == i
                if mask.any():
                    batches.append(batch(version, arm, mask, scores.predicted[mask], rollout))
            if scores.shadow is not None and scores.shadow_predicted is not None:
                batches.append(
                    batch(versions[1], SHADOW_ARM, scores.shadow, scores.shadow_predicted, rollout)
                )
        else:
            arm = self.stable_arm if plan.candidate is not None else NO_ROLLOUT_ARM
            batches.append(batch(plan.stable.version, arm, None, scores.predicted, None))
            if plan.candidate is not None and scores.candidate is not None:
                batches[0].rollout_id = self.rollout_id
                batches.append(
                    batch(
                        plan.candidate.version, SHADOW_ARM, None, scores.candidate, self.rollout_id
                    )
                )
        for b in batches:
            self.log.log(b)
        self.log.flush()
        self.seconds += time.perf_counter() - started

    def figures(self) -> dict[str, Any]:
        return {
            "url": self.safe_url,
            "written": int(self.log.written),
            "dropped": int(getattr(self.log, "dropped", 0)),
            "seconds": round(self.seconds, 3),
        }

    def close(self) -> None:
        self.log.close()
