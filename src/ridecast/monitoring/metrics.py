"""Prometheus metrics for every mode, through prometheus_client.

Each group of metrics is created once per process, on prometheus_client's default registry, by
the function that names it: :func:`web_metrics` (the web service), :func:`log_metrics` (the
prediction log, in every mode), :func:`rollout_metrics` (following and advancing rollouts, in
every mode). The stream consumers' own metrics are in :mod:`ridecast.stream.stats`, the batch
job's in :mod:`ridecast.batch.metrics`.

``ridecast serve --workers N`` runs prometheus_client's multiprocess mode: the serving process
sets ``PROMETHEUS_MULTIPROC_DIR`` for its workers (emptied at start, see
:func:`prepare_multiprocess_dir`), each worker writes its numbers to files there, and any
worker's ``/metrics`` adds them up (:func:`exposition`). Counters and histograms keep the counts
of a worker that has exited, because those requests happened; every gauge uses a ``live`` mode,
so once the supervisor reports a worker dead (:func:`mark_worker_dead`) its gauges, such as the
versions it served, leave ``/metrics``.

The web service's request path does not call prometheus_client itself: :class:`RequestTally`
counts in plain dicts and adds its counts to the metrics every second (why: docs/web.md).
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    push_to_gateway,
    values,
    write_to_textfile,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ridecast.rollout.measurements import ArmFigures, Measurements
    from ridecast.rollout.state import RolloutState

log = logging.getLogger("ridecast.monitoring")

# A ``<name>_created`` series per labelled counter and histogram doubles what Prometheus stores
# and tells nothing a dashboard uses; multiprocess mode never has them, so no mode does.
disable_created_metrics()

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PREDICTION_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 200, 500)
MODEL_CALL_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


# --- the web service ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WebMetrics:
    """What ``ridecast serve`` exports besides the prediction log's and the rollouts' metrics."""

    requests: Counter
    errors: Counter
    latency: Histogram
    predictions: Counter
    prediction_value: Histogram
    model_call_rides: Histogram
    model_info: Gauge
    shadow: Counter


@lru_cache(maxsize=1)
def web_metrics() -> WebMetrics:
    return WebMetrics(
        requests=Counter(
            "ridecast_http_requests",
            "HTTP requests by endpoint, status and the model version that answered.",
            ("endpoint", "status", "model_version"),
        ),
        errors=Counter(
            "ridecast_http_request_errors",
            "HTTP requests answered with status >= 400, by endpoint, status and model version.",
            ("endpoint", "status", "model_version"),
        ),
        latency=Histogram(
            "ridecast_http_request_duration_seconds",
            "Time from a request's arrival to its response, by endpoint and model version.",
            ("endpoint", "model_version"),
            buckets=LATENCY_BUCKETS,
        ),
        predictions=Counter(
            "ridecast_predictions",
            "Rides predicted, by model and version.",
            ("model", "model_version"),
        ),
        prediction_value=Histogram(
            "ridecast_prediction_value",
            "Predicted values in the model's unit (minutes of ride, dollars of tip or cost), by "
            "model and version.",
            ("model", "model_version"),
            buckets=PREDICTION_BUCKETS,
        ),
        model_call_rides=Histogram(
            "ridecast_model_call_rides",
            "Rides per model call (micro-batches and list requests), by model.",
            ("model",),
            buckets=MODEL_CALL_BUCKETS,
        ),
        model_info=Gauge(
            "ridecast_model_info",
            "1 for each model version this worker has loaded now (with --workers N, one series "
            "per worker, labelled pid).",
            ("model", "model_version"),
            multiprocess_mode="liveall",
        ),
        shadow=Counter(
            "ridecast_shadow_predictions",
            "Shadow copies of live requests by model, candidate version and result: answered, "
            "dropped (the shadow queue was full) or failed (callers never see either).",
            ("model", "model_version", "result"),
        ),
    )


def add_observations(child: Histogram, counts: Sequence[float], total: float) -> None:
    """Add many observations to one labelled histogram at once: ``counts`` per bucket (the last
    is +Inf, as prometheus_client orders them) and ``total``, their sum.

    prometheus_client only observes one value per call (a lock and, in multiprocess mode, a file
    write per call); this adds to the same bucket values ``observe`` adds to.
    """
    buckets = child._buckets  # the values observe() increments
    if len(buckets) != len(counts):
        raise ValueError(f"{len(counts)} bucket counts for a histogram of {len(buckets)} buckets")
    for value, n in zip(buckets, counts, strict=True):
        if n:
            value.inc(n)
    if total:
        child._sum.inc(total)


def _bucket_counts(bounds: Sequence[float], values: np.ndarray) -> tuple[list[float], float]:
    """Counts per bucket (``value <= bound``, then +Inf) and the sum of the finite ``values``."""
    counts = [0.0] * (len(bounds) + 1)
    if len(values) <= 32:  # numpy's per-call overhead outweighs a short Python loop
        total = 0.0
        for v in values.tolist():
            if math.isfinite(v):
                counts[bisect.bisect_left(bounds, v)] += 1
                total += v
        return counts, total
    finite = values[np.isfinite(values)]
    found = np.bincount(np.searchsorted(bounds, finite, side="left"), minlength=len(counts))
    return [float(c) for c in found.tolist()], float(finite.sum())


class RequestTally:
    """The web request path's counts, added to :func:`web_metrics` by :meth:`flush`.

    :meth:`record_request` (every request) and :meth:`record_batch` (every model call) update
    plain dicts on the event loop and take no lock. The dicts only grow: :meth:`flush` adds the
    difference since its last run, so an update racing a flush is counted by the next one. A
    thread flushes every ``interval`` seconds, ``/metrics`` flushes before it answers and
    :meth:`stop` flushes last, so another worker's numbers in ``/metrics`` lag by at most
    ``interval``.
    """

    def __init__(self, metrics: WebMetrics | None = None, interval: float = 1.0) -> None:
        self.metrics = metrics or web_metrics()
        self.interval = interval
        self._latency_bounds = LATENCY_BUCKETS
        self._value_bounds = tuple(float(b) for b in PREDICTION_BUCKETS)
        self._call_bounds = tuple(float(b) for b in MODEL_CALL_BUCKETS)
        # Running totals. Histogram rows: one count per bucket (+Inf last), then the sum.
        self._requests: dict[tuple[str, int, str], int] = {}
        self._latency: dict[tuple[str, str], list[float]] = {}
        self._predictions: dict[tuple[str, str], list[float]] = {}  # rides, then value buckets
        self._calls: dict[str, list[float]] = {}
        self._flushed: dict[tuple[str, Any], Any] = {}
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the request path (the event loop) ---

    def record_request(self, endpoint: str, status: int, version: str, seconds: float) -> None:
        """One answered request: its count and its latency. About a microsecond."""
        key = (endpoint, status, version)
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1
        row = self._latency.get((endpoint, version))
        if row is None:
            row = self._latency[(endpoint, version)] = [0.0] * (len(self._latency_bounds) + 2)
        row[bisect.bisect_left(self._latency_bounds, seconds)] += 1
        row[-1] += seconds

    def record_batch(self, model: str, version: str, predictions: np.ndarray) -> None:
        """One model call: the rides it predicted and their values."""
        n = len(predictions)
        row = self._predictions.get((model, version))
        if row is None:
            row = self._predictions[(model, version)] = [0.0] * (len(self._value_bounds) + 3)
        counts, total = _bucket_counts(self._value_bounds, predictions)
        row[0] += n
        for i, c in enumerate(counts, start=1):
            if c:
                row[i] += c
        row[-1] += total
        calls = self._calls.get(model)
        if calls is None:
            calls = self._calls[model] = [0.0] * (len(self._call_bounds) + 2)
        calls[bisect.bisect_left(self._call_bounds, n)] += 1
        calls[-1] += n

    # --- into prometheus_client ---

    def _delta(self, kind: str, key: Any, now: list[float]) -> list[float]:
        before = self._flushed.get((kind, key))
        self._flushed[(kind, key)] = now
        return now if before is None else [a - b for a, b in zip(now, before, strict=True)]

    def flush(self) -> None:
        """Add everything counted since the last flush to the metrics. Any thread."""
        m = self.metrics
        with self._flush_lock:
            for (endpoint, status, version), total in list(self._requests.items()):
                (n,) = self._delta("requests", (endpoint, status, version), [total])
                if n:
                    m.requests.labels(endpoint, str(status), version).inc(n)
                    if status >= 400:
                        m.errors.labels(endpoint, str(status), version).inc(n)
            for (endpoint, version), row in list(self._latency.items()):
                d = self._delta("latency", (endpoint, version), list(row))
                if any(d[:-1]):
                    add_observations(m.latency.labels(endpoint, version), d[:-1], d[-1])
            for (model, version), row in list(self._predictions.items()):
                d = self._delta("predictions", (model, version), list(row))
                if d[0]:
                    m.predictions.labels(model, version).inc(d[0])
                if any(d[1:-1]):
                    add_observations(m.prediction_value.labels(model, version), d[1:-1], d[-1])
            for model, row in list(self._calls.items()):
                d = self._delta("calls", model, list(row))
                if any(d[:-1]):
                    add_observations(m.model_call_rides.labels(model), d[:-1], d[-1])

    def start(self) -> RequestTally:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="ridecast-metrics", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:  # the metrics must never take the server down
                log.exception("could not add the request counts to the metrics")

    def stop(self) -> None:
        """Stop the thread and flush what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush()


# --- the prediction log (every mode) -----------------------------------------------------------


@dataclass(frozen=True)
class LogMetrics:
    rows: Counter
    feedback: Counter


@lru_cache(maxsize=1)
def log_metrics() -> LogMetrics:
    return LogMetrics(
        rows=Counter(
            "ridecast_prediction_log_rows",
            "Prediction-log rows by state: written or dropped (queue full or database down).",
            ("state",),
        ),
        feedback=Counter(
            "ridecast_feedback",
            "Feedback by state: recorded, duplicate (counted once), unknown_ride (no prediction "
            "after the grace period), dropped (too much pending) or rejected (refused by the "
            "database).",
            ("state",),
        ),
    )


# --- rollouts (every mode) ---------------------------------------------------------------------


class FollowsRollout(Protocol):
    """Anything that follows a model's rollout (a :class:`~ridecast.control.follower.Follower`)."""

    @property
    def rollout_state(self) -> RolloutState | None: ...


class RolloutStates(Collector):
    """The active rollouts this process follows, read when scraped: phase, step, live weights
    and shadow share. A rollout that ends (or a follower that is gone) leaves at once, and every
    worker of a server reports the same state, so one worker's view is the server's."""

    def __init__(self) -> None:
        self._followers: weakref.WeakSet[Any] = weakref.WeakSet()

    def follow(self, follower: FollowsRollout) -> None:
        self._followers.add(follower)

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        states: dict[str, RolloutState] = {}
        for follower in list(self._followers):
            state = follower.rollout_state
            if state is not None:
                states.setdefault(state.id, state)
        return self._families(sorted(states.values(), key=lambda s: s.id))

    @staticmethod
    def _families(states: Sequence[RolloutState] = ()) -> Iterator[Metric]:
        labels = ["model", "rollout", "strategy"]
        phase = GaugeMetricFamily(
            "ridecast_rollout_phase",
            "1 for the phase of each active rollout (progressing or paused).",
            labels=[*labels, "phase"],
        )
        step = GaugeMetricFamily(
            "ridecast_rollout_step", "The step each active rollout is at.", labels=labels
        )
        weight = GaugeMetricFamily(
            "ridecast_rollout_weight_percent",
            "Share of live traffic each version answers, by version and arm.",
            labels=[*labels, "model_version", "arm"],
        )
        shadow = GaugeMetricFamily(
            "ridecast_rollout_shadow_percent",
            "Share of requests also copied to the candidate (answers never returned).",
            labels=labels,
        )
        for s in states:
            common = [s.model, s.id, s.strategy]
            phase.add_metric([*common, s.phase], 1.0)
            step.add_metric(common, float(s.step))
            weights = s.weights
            for version, arm in (
                (s.stable_version, s.stable_arm),
                (s.candidate_version, s.candidate_arm),
            ):
                weight.add_metric([*common, version, arm], float(weights[version]))
            shadow.add_metric(common, float(s.shadow_percent))
        yield from (phase, step, weight, shadow)


@dataclass(frozen=True)
class RolloutMetrics:
    """Following (every mode) and advancing (the lease holder) rollouts."""

    states: RolloutStates
    reloads: Counter
    transitions: Counter
    analyses: Counter
    analysis_requests: Gauge
    analysis_error_ratio: Gauge
    analysis_latency_p99: Gauge
    analysis_feedback: Gauge
    analysis_mae: Gauge
    analysis_mean_prediction: Gauge
    shadow_pairs: Gauge
    shadow_differing: Gauge

    def measured(self, state: RolloutState, m: Measurements) -> None:
        """The figures of the analysis window the controller just measured."""
        for arm in (m.stable, m.candidate):
            self._arm(state, arm)
        key = (state.model, state.id)
        self.shadow_pairs.labels(*key).set(m.shadow.n)
        self.shadow_differing.labels(*key).set(_or_nan(m.shadow.share_over_2_min))

    def _arm(self, state: RolloutState, a: ArmFigures) -> None:
        key = (state.model, state.id, a.version, a.arm)
        self.analysis_requests.labels(*key).set(a.requests)
        self.analysis_error_ratio.labels(*key).set(_or_nan(a.error_rate))
        p99 = a.p99_latency_ms
        self.analysis_latency_p99.labels(*key).set(math.nan if p99 is None else p99 / 1000.0)
        self.analysis_feedback.labels(*key).set(a.joined)
        self.analysis_mae.labels(*key).set(_or_nan(a.mae))
        self.analysis_mean_prediction.labels(*key).set(_or_nan(a.mean_prediction))

    def retire(self, state: RolloutState) -> None:
        """A rollout that is no longer active: its figures stop (NaN, which graphs leave blank;
        in multiprocess mode a worker's last value cannot be removed, only replaced)."""
        arm_gauges = (
            self.analysis_requests,
            self.analysis_error_ratio,
            self.analysis_latency_p99,
            self.analysis_feedback,
            self.analysis_mae,
            self.analysis_mean_prediction,
        )
        for version, arm in (
            (state.stable_version, state.stable_arm),
            (state.candidate_version, state.candidate_arm),
        ):
            for gauge in arm_gauges:
                _retire(gauge, (state.model, state.id, version, arm))
        for gauge in (self.shadow_pairs, self.shadow_differing):
            _retire(gauge, (state.model, state.id))


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _retire(gauge: Gauge, labels: tuple[str, ...]) -> None:
    if labels in gauge._metrics:  # only series this process set
        retire(gauge, labels, math.nan)


def retire(gauge: Gauge, labels: Sequence[str], last: float) -> None:
    """A series this process no longer reports: removed, or in multiprocess mode (where
    prometheus_client cannot remove one, only replace its value until the process exits) set to
    ``last``."""
    gauge.labels(*labels).set(last)
    if not values.ValueClass._multiprocess:
        gauge.remove(*labels)


@lru_cache(maxsize=1)
def rollout_metrics() -> RolloutMetrics:
    states = RolloutStates()
    REGISTRY.register(states)
    arm = ("model", "rollout", "model_version", "arm")

    def figure(name: str, documentation: str, labels: tuple[str, ...] = arm) -> Gauge:
        # The lease holder sets these; the lease may move to another worker, whose newer
        # values win.
        return Gauge(name, documentation, labels, multiprocess_mode="livemostrecent")

    return RolloutMetrics(
        states=states,
        reloads=Counter(
            "ridecast_model_reloads",
            "Versions loaded after the first (alias moves, rollout candidates) by model and "
            "result: ok or failed (the previous versions keep serving).",
            ("model", "result"),
        ),
        transitions=Counter(
            "ridecast_rollout_transitions",
            "Rollout transitions saved by this process (the controller's steps and verdicts, "
            "people's commands), by the phase they lead to.",
            ("model", "rollout", "strategy", "phase"),
        ),
        analyses=Counter(
            "ridecast_rollout_analyses",
            "Analysis verdicts the controller acted on: pass, fail or inconclusive.",
            ("model", "rollout", "strategy", "verdict"),
        ),
        analysis_requests=figure(
            "ridecast_rollout_analysis_requests",
            "Predictions each version answered in the rollout's last analysis window.",
        ),
        analysis_error_ratio=figure(
            "ridecast_rollout_analysis_error_ratio",
            "Failed predictions ÷ predictions in the last analysis window (NaN: none yet).",
        ),
        analysis_latency_p99=figure(
            "ridecast_rollout_analysis_latency_p99_seconds",
            "99th percentile of prediction latency in the last analysis window.",
        ),
        analysis_feedback=figure(
            "ridecast_rollout_analysis_feedback_rides",
            "Predictions joined to feedback (the ride ended) in the last analysis window.",
        ),
        analysis_mae=figure(
            "ridecast_rollout_analysis_mean_absolute_error",
            "Mean |prediction − actual| over the joined rides, in the model's unit (minutes or "
            "dollars), in the last analysis window.",
        ),
        analysis_mean_prediction=figure(
            "ridecast_rollout_analysis_mean_prediction",
            "Mean prediction in the last analysis window, in the model's unit.",
        ),
        shadow_pairs=figure(
            "ridecast_rollout_analysis_shadow_pairs",
            "Requests answered by both the live and the shadow version in the last window.",
            ("model", "rollout"),
        ),
        shadow_differing=figure(
            "ridecast_rollout_analysis_shadow_differing_ratio",
            "Share of those pairs whose answers differ by more than 2 minutes.",
            ("model", "rollout"),
        ),
    )


# --- exposition and sharing --------------------------------------------------------------------


def exposition(multiprocess_dir: Path | None = None) -> bytes:
    """The Prometheus text of this process, or with ``multiprocess_dir`` of every worker that
    writes there (plus the rollouts this worker follows, which every worker shares)."""
    if multiprocess_dir is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, str(multiprocess_dir))
    registry.register(rollout_metrics().states)
    return generate_latest(registry)


def prepare_multiprocess_dir(path: Path) -> None:
    """Create ``path``, or empty it of the metric files an earlier server left (a restarted
    container has the same pid, and would otherwise add the old counts to its own)."""
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink(missing_ok=True)


def mark_worker_dead(pid: int, multiprocess_dir: Path) -> None:
    """Drop a worker that exited from the gauges (its counts stay: they happened)."""
    multiprocess.mark_process_dead(pid, str(multiprocess_dir))


def publish(
    registry: CollectorRegistry,
    *,
    job: str,
    grouping: dict[str, str],
    pushgateway: str | None,
    textfile_dir: Path | None,
) -> list[str]:
    """Hand a finished job's metrics to Prometheus: push them to ``pushgateway`` (replacing the
    group ``job`` + ``grouping``) and/or write them to ``textfile_dir`` for node-exporter's
    textfile collector (one ``.prom`` file per group, replaced atomically). Returns where they
    went; raises OSError when either is unreachable."""
    went = []
    if pushgateway:
        push_to_gateway(pushgateway, job=job, registry=registry, grouping_key=grouping, timeout=10)
        went.append(pushgateway)
    if textfile_dir is not None:
        textfile_dir.mkdir(parents=True, exist_ok=True)
        name = "_".join([job, *grouping.values()])
        path = textfile_dir / (
            "".join(c if c.isalnum() or c in "-_" else "_" for c in name) + ".prom"
        )
        write_to_textfile(str(path), registry)
        went.append(str(path))
    return went
