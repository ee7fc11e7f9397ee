"""Shadow traffic off the request path: copies of live requests answered by the candidate.

The request handler only appends a job to a bounded queue (a full queue drops the job and counts
it, in Prometheus and in the prediction log, where the shadow report's ``dropped`` comes from)
and wakes nothing: one worker thread drains the queue every few milliseconds (a wake-up per
job would cost the event loop a thread switch per batch), predicts with the candidate and writes
the answers to the prediction log with arm ``shadow``, paired with the live answers by request
id. Callers never wait for, or see, a shadow answer, and a failing shadow never fails a live
request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ridecast.features import RideArrays
from ridecast.monitoring import PredictionBatch, PredictionLog
from ridecast.monitoring.metrics import WebMetrics
from ridecast.monitoring.schema import DROPPED_KIND
from ridecast.rollout.state import SHADOW_ARM

if TYPE_CHECKING:
    from ridecast.predictor import Predictor

log = logging.getLogger("ridecast.web")


@dataclass(slots=True)
class ShadowJob:
    model: str
    predictor: Predictor
    arrays: RideArrays
    ride_ids: Sequence[Any] | None
    user_ids: Sequence[Any] | None
    request_ids: Sequence[Any]
    rollout_id: str | None
    source: str
    at: float = 0.0  # when the live request was answered (the log's time for both answers)
    queued: float = 0.0  # perf_counter at submit, for the shadow's latency


# A shadow model call takes whatever is queued, up to this many rides: a model with a high
# per-call cost (tree ensembles) keeps up with the live traffic by predicting in bulk.
MAX_COALESCED_RIDES = 4096
# How often the shadow thread looks for work when the queue was empty.
TICK_SECONDS = 0.005


class ShadowRunner:
    """A bounded queue and one thread that answers shadow jobs."""

    def __init__(
        self, metrics: WebMetrics, prediction_log: PredictionLog | None, maxsize: int = 10_000
    ) -> None:
        self.copies = metrics.shadow  # shadow copies by model, version and result
        self.prediction_log = prediction_log
        self.maxsize = maxsize
        self._jobs: deque[ShadowJob] = deque()  # append/popleft are atomic: no lock, no wake
        self.answered = 0
        self.dropped = 0
        self.failed = 0
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, job: ShadowJob) -> bool:
        """Hand a job over without waiting; False (and counted) when the queue is full."""
        if len(self._jobs) >= self.maxsize:
            n = len(job.request_ids)
            self.dropped += n
            self.copies.labels(job.model, job.predictor.version, "dropped").inc(n)
            if self.prediction_log is not None:  # a counter bump: the shadow report reads it
                self.prediction_log.log_errors(
                    job.model,
                    job.predictor.version,
                    SHADOW_ARM,
                    job.rollout_id,
                    job.source,
                    n,
                    kind=DROPPED_KIND,
                )
            return False
        job.queued = time.perf_counter()
        job.at = job.at or time.time()
        self._jobs.append(job)
        return True

    def start(self) -> ShadowRunner:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="ridecast-shadow", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            if not self._jobs:
                if self._stop.is_set():
                    return
                self._stop.wait(TICK_SECONDS)
                continue
            jobs: list[ShadowJob] = []
            rides = 0
            while self._jobs and rides < MAX_COALESCED_RIDES:
                job = self._jobs.popleft()
                jobs.append(job)
                rides += len(job.request_ids)
            groups: dict[tuple[int, str | None, str], list[ShadowJob]] = {}
            for j in jobs:
                groups.setdefault((id(j.predictor), j.rollout_id, j.source), []).append(j)
            for group in groups.values():
                try:
                    self._answer(group)
                except Exception:  # the shadow thread must outlive any one job
                    log.exception("shadow answers failed")

    def _answer(self, jobs: list[ShadowJob]) -> None:
        """One model call for every queued job of one candidate version."""
        job = jobs[0]
        if len(jobs) > 1:
            job = ShadowJob(
                job.model,
                job.predictor,
                RideArrays(
                    pu=np.concatenate([j.arrays.pu for j in jobs]),
                    do=np.concatenate([j.arrays.do for j in jobs]),
                    distance=np.concatenate([j.arrays.distance for j in jobs]),
                ),
                _joined([j.ride_ids for j in jobs], [len(j.request_ids) for j in jobs]),
                _joined([j.user_ids for j in jobs], [len(j.request_ids) for j in jobs]),
                [r for j in jobs for r in j.request_ids],
                job.rollout_id,
                job.source,
                job.at,
                job.queued,
            )
        n = len(job.request_ids)
        version = job.predictor.version
        try:
            predictions = job.predictor.predict_arrays(job.arrays)
        except Exception as exc:
            self.failed += n
            self.copies.labels(job.model, version, "failed").inc(n)
            message = f"{type(exc).__name__}: {exc}"
            if message != self._last_error:
                log.warning("shadow v%s failed (live answers unaffected): %s", version, message)
                self._last_error = message
            if self.prediction_log is not None:
                self.prediction_log.log_errors(
                    job.model, version, SHADOW_ARM, job.rollout_id, job.source, n
                )
            return
        self.answered += n
        self.copies.labels(job.model, version, "answered").inc(n)
        if self.prediction_log is None:
            return
        now = time.perf_counter()
        latency = [(now - j.queued) * 1000.0 for j in jobs for _ in j.request_ids]
        try:
            self.prediction_log.log(
                PredictionBatch(
                    job.model,
                    version,
                    job.source,
                    job.arrays.pu,
                    job.arrays.do,
                    job.arrays.distance,
                    predictions,
                    latency,
                    job.ride_ids,
                    job.user_ids,
                    at=job.at,
                    arm=SHADOW_ARM,
                    rollout_id=job.rollout_id,
                    request_ids=job.request_ids,
                )
            )
        except Exception:  # the log's trouble must not stop the shadow thread
            log.exception("shadow answers could not be logged")

    @property
    def pending(self) -> int:
        return len(self._jobs)

    def stop(self, timeout: float = 5.0) -> None:
        """Answer what is queued (up to ``timeout``), then stop."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=timeout)
        self._thread = None


def _joined(parts: list[Sequence[Any] | None], sizes: list[int]) -> list[Any] | None:
    """Concatenate per-job id lists (a job without ids contributes Nones)."""
    if all(p is None for p in parts):
        return None
    out: list[Any] = []
    for p, n in zip(parts, sizes, strict=True):
        out.extend(p if p is not None else [None] * n)
    return out
