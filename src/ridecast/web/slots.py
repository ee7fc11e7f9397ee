"""The model versions a server serves, one slot per registered model, with hot reload.

A :class:`ModelSlot` holds the current :class:`~ridecast.predictor.Predictor` of one model.
Requests read ``slot.predictor`` once per model call; a reload builds and warms the new
Predictor first and then assigns it, so every request is answered by one whole version and none
fails during a swap. If the new version does not load, the old one keeps serving and
``last_error`` says why (``/health`` shows it, the log says it once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ridecast.features import RideArrays
from ridecast.monitoring import MetricSet, PredictionBatch, PredictionLog
from ridecast.predictor import Predictor
from ridecast.registry import ModelRef, Registry
from ridecast.web.batching import AdaptiveBatcher

log = logging.getLogger("ridecast.web")

# One queued single-ride request: pu, do, distance, ride_id, user_id, arrival (perf_counter).
RideItem = tuple[int, int, float, Any, Any, float]


class ModelSlot:
    """One served model: its current version, its micro-batcher, and its reload state."""

    def __init__(
        self,
        ref: ModelRef,
        registry: Registry,
        *,
        metrics: MetricSet,
        prediction_log: PredictionLog | None,
        batching: bool = True,
        max_batch_size: int = 256,
        max_batch_time: float = 0.0,
    ) -> None:
        self.ref = ref
        self.name = ref.name
        self.registry = registry
        self.metrics = metrics
        self.prediction_log = prediction_log
        self._predictor: Predictor | None = None
        self.loaded_at: float | None = None
        self.last_check: float | None = None
        self.last_error: str | None = None
        self._failed_version: str | None = None
        self._target = ""
        self.batcher: AdaptiveBatcher[RideItem, tuple[float, str]] = AdaptiveBatcher(
            self._predict_items,
            max_batch_size=max_batch_size,
            max_batch_time=max_batch_time,
            enabled=batching,
        )

    @property
    def predictor(self) -> Predictor:
        predictor = self._predictor
        if predictor is None:
            raise RuntimeError(f"{self.name} is not loaded yet")
        return predictor

    @property
    def ready(self) -> bool:
        return self._predictor is not None

    @property
    def version(self) -> str:
        return self._predictor.version if self._predictor is not None else ""

    @property
    def target(self) -> str:
        """The output's name: the same for every version of a model."""
        return self._target

    # --- loading and hot reload (called from a worker thread, never from the event loop) ---

    def load(self) -> Predictor:
        """Load the version the reference points at now, warm it, then swap it in."""
        loaded = self.registry.load(self.ref)
        predictor = Predictor(loaded)
        predictor.warm()
        old = self._predictor
        self._target = predictor.target
        self._predictor = predictor  # the swap: one reference assignment
        self.loaded_at = time.time()
        self.last_error = None
        self._failed_version = None
        if old is not None:
            self.metrics.model_info.remove((self.name, old.version))
        self.metrics.model_info.set((self.name, predictor.version), 1.0)
        return predictor

    def check(self) -> bool:
        """Reload if the alias moved. Returns True when a new version was swapped in."""
        self.last_check = time.time()
        try:
            version = self.registry.resolve(self.ref)
        except Exception as exc:
            self._fail(None, f"cannot resolve {self.ref.uri}: {exc}")
            return False
        if self._predictor is not None and version == self._predictor.version:
            return False
        if version == self._failed_version:
            return False  # already reported; try again when the alias moves once more
        old = self.version or "none"
        try:
            self.load()
        except Exception as exc:
            self._fail(version, f"{self.name} v{version} failed to load: {exc}")
            return False
        self.metrics.reloads.inc((self.name, "ok"))
        log.info("%s: %s moved v%s → v%s; swapped after warm-up", self.name, self.ref, old, version)
        return True

    def _fail(self, version: str | None, message: str) -> None:
        first_line = message.splitlines()[0] if message else message
        if version is not None:
            self._failed_version = version
            self.metrics.reloads.inc((self.name, "failed"))
        if first_line != self.last_error:
            log.error("%s; still serving v%s", first_line, self.version or "none")
        self.last_error = first_line

    # --- prediction (on the event loop) ---

    def predict(
        self,
        arrays: RideArrays,
        *,
        source: str,
        started: float,
        ride_ids: Sequence[Any] | None = None,
        user_ids: Sequence[Any] | None = None,
    ) -> tuple[np.ndarray, str]:
        """Predict a whole request's rides with the current version; metrics and log included."""
        predictor = self.predictor
        predictions = predictor.predict_arrays(arrays)
        version = predictor.version
        self.metrics.record_batch(self.name, version, predictions)
        if self.prediction_log is not None:
            self.prediction_log.log(
                PredictionBatch(
                    self.name,
                    version,
                    source,
                    arrays.pu,
                    arrays.do,
                    arrays.distance,
                    predictions,
                    (time.perf_counter() - started) * 1000.0,
                    ride_ids,
                    user_ids,
                )
            )
        return predictions, version

    def _predict_items(self, items: Sequence[RideItem]) -> list[tuple[float, str]]:
        """The micro-batcher's model call: many single-ride requests, one prediction."""
        n = len(items)
        pu, do, distance, ride_ids, user_ids, arrivals = zip(*items, strict=True)
        arrays = RideArrays(
            pu=np.fromiter(pu, dtype=np.int64, count=n),
            do=np.fromiter(do, dtype=np.int64, count=n),
            distance=np.fromiter(distance, dtype=np.float64, count=n),
        )
        predictor = self.predictor
        predictions = predictor.predict_arrays(arrays)
        version = predictor.version
        self.metrics.record_batch(self.name, version, predictions)
        if self.prediction_log is not None:
            now = time.perf_counter()
            self.prediction_log.log(
                PredictionBatch(
                    self.name,
                    version,
                    "web:/predict",
                    arrays.pu,
                    arrays.do,
                    arrays.distance,
                    predictions,
                    [(now - t) * 1000.0 for t in arrivals],
                    ride_ids,
                    user_ids,
                )
            )
        return [(value, version) for value in predictions.tolist()]


class ModelWatcher:
    """A daemon thread that checks every slot's alias every ``interval`` seconds."""

    def __init__(self, slots: Sequence[ModelSlot], interval: float) -> None:
        self.slots = list(slots)
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="ridecast-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for slot in self.slots:
                if slot.ref.version is None:  # a pinned version never moves
                    slot.check()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
