"""Prometheus metrics that cost almost nothing on the hot path.

:class:`MetricSet` keeps counters and histograms in plain dicts (a dict update per request, a numpy
``searchsorted`` per batch) and renders the Prometheus text format when scraped. Worker processes
of one server share their numbers through small snapshot files, so a scrape of any worker reports
the whole server.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("ridecast.monitoring")

Labels = tuple[str, ...]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PREDICTION_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 200, 500)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _label_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Counter:
    """A labelled counter; ``inc`` is one dict update."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str]) -> None:
        self.name, self.help, self.labelnames = name, help_text, tuple(labelnames)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def snapshot(self) -> list[Any]:
        return [[list(k), v] for k, v in dict(self.values).items()]

    def merge(self, rows: Iterable[Any]) -> None:
        for labels, value in rows:
            self.inc(tuple(labels), value)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for labels, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_label_text(self.labelnames, labels)} {_number(value)}")
        return lines


class Gauge(Counter):
    """A labelled gauge; ``set`` replaces the value. Merging workers adds their values."""

    kind = "gauge"

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value

    def remove(self, labels: Labels) -> None:
        self.values.pop(labels, None)

    def render(self) -> list[str]:
        lines = super().render()
        lines[1] = f"# TYPE {self.name} gauge"
        return lines


class Histogram:
    """A labelled histogram: per series, one count per bucket (the last is +Inf) and the sum."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name, self.help, self.labelnames = name, help_text, tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self._bounds_array = np.asarray(self.bounds, dtype=np.float64)
        self.series: dict[Labels, list[float]] = {}

    def _row(self, labels: Labels) -> list[float]:
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        return row

    def observe(self, labels: Labels, value: float) -> None:
        row = self.series.get(labels) or self._row(labels)
        row[bisect.bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def observe_many(self, labels: Labels, values: np.ndarray) -> None:
        if len(values) == 0:
            return
        if len(values) <= 32:  # numpy's per-call overhead outweighs a short Python loop
            row = self.series.get(labels) or self._row(labels)
            bounds = self.bounds
            for v in values.tolist():
                if v == v and v not in (float("inf"), float("-inf")):
                    row[bisect.bisect_left(bounds, v)] += 1
                    row[-1] += v
            return
        finite = values[np.isfinite(values)]
        row = self._row(labels)
        counts = np.bincount(
            np.searchsorted(self._bounds_array, finite, side="left"),
            minlength=len(self.bounds) + 1,
        )
        for i, c in enumerate(counts.tolist()):
            row[i] += c
        row[-1] += float(finite.sum())

    def snapshot(self) -> list[Any]:
        return [[list(k), list(v)] for k, v in dict(self.series).items()]

    def merge(self, rows: Iterable[Any]) -> None:
        for labels, values in rows:
            row = self._row(tuple(labels))
            for i, v in enumerate(values):
                row[i] += v

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, row in sorted(self.series.items()):
            cumulative = 0.0
            for bound, count in zip((*self.bounds, float("inf")), row[:-1], strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else _number(bound)
                text = _label_text(self.labelnames, labels, f'le="{le}"')
                lines.append(f"{self.name}_bucket{text} {_number(cumulative)}")
            base = _label_text(self.labelnames, labels)
            lines.append(f"{self.name}_sum{base} {_number(row[-1])}")
            lines.append(f"{self.name}_count{base} {_number(cumulative)}")
        return lines


Metric = Counter | Histogram


def _alive(pid_text: str) -> bool:
    """Whether the worker whose snapshot file is ``<pid>.json`` still runs (same host: the files
    live under the server's own run folder)."""
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except (ValueError, OSError):
        return True  # not a pid we can check, or alive but not ours to signal
    return True


class MetricSet:
    """The metrics of one serving process, with optional sharing between worker processes.

    With ``share_dir`` set, :meth:`export` writes this process's numbers to
    ``share_dir/<pid>.json`` (a background thread does it every second), and :meth:`render`
    adds the other workers' files, so any worker's ``/metrics`` reports the whole server.
    """

    def __init__(self, share_dir: Path | None = None) -> None:
        self.share_dir = share_dir
        self.requests = Counter(
            "ridecast_http_requests_total",
            "HTTP requests by endpoint, status and model version.",
            ("endpoint", "status", "model_version"),
        )
        self.errors = Counter(
            "ridecast_http_request_errors_total",
            "HTTP requests answered with status >= 400, by endpoint, status and model version.",
            ("endpoint", "status", "model_version"),
        )
        self.latency = Histogram(
            "ridecast_http_request_duration_seconds",
            "Time from a request's arrival to its response, by endpoint.",
            ("endpoint",),
            LATENCY_BUCKETS,
        )
        self.predictions = Counter(
            "ridecast_predictions_total",
            "Rides predicted, by model and version.",
            ("model", "model_version"),
        )
        self.prediction_value = Histogram(
            "ridecast_prediction_value",
            "Distribution of predicted values (minutes or dollars), by model and version.",
            ("model", "model_version"),
            PREDICTION_BUCKETS,
        )
        self.batch_size = Histogram(
            "ridecast_batch_size",
            "Rides per model call (micro-batches and list requests), by model.",
            ("model",),
            BATCH_SIZE_BUCKETS,
        )
        self.reloads = Counter(
            "ridecast_model_reloads_total",
            "Hot reloads by model and result (ok or failed).",
            ("model", "result"),
        )
        self.model_info = Gauge(
            "ridecast_model_info",
            "1 for each model version a worker serves now (summed over workers).",
            ("model", "model_version"),
        )
        self.log_rows = Counter(
            "ridecast_prediction_log_rows_total",
            "Prediction-log rows by state: written or dropped (queue full or database down).",
            ("state",),
        )
        self.feedback = Counter(
            "ridecast_feedback_total",
            "Feedback by state: recorded, duplicate (counted once), unknown_ride (no prediction "
            "after the grace period) or dropped (too much pending).",
            ("state",),
        )
        self.shadow = Counter(
            "ridecast_shadow_predictions_total",
            "Shadow copies of live requests by model, candidate version and result: answered, "
            "dropped (the shadow queue was full) or failed (callers never see either).",
            ("model", "model_version", "result"),
        )
        self.all: tuple[Metric, ...] = (
            self.requests,
            self.errors,
            self.latency,
            self.predictions,
            self.prediction_value,
            self.batch_size,
            self.reloads,
            self.model_info,
            self.log_rows,
            self.feedback,
            self.shadow,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record_request(self, endpoint: str, status: int, version: str, seconds: float) -> None:
        """One request: its count, its latency, and its error if any. About a microsecond."""
        key = (endpoint, str(status), version)
        self.requests.inc(key)
        if status >= 400:
            self.errors.inc(key)
        self.latency.observe((endpoint,), seconds)

    def record_batch(self, model: str, version: str, predictions: np.ndarray) -> None:
        self.predictions.inc((model, version), float(len(predictions)))
        self.prediction_value.observe_many((model, version), predictions)
        self.batch_size.observe((model,), float(len(predictions)))

    # --- sharing between worker processes ---

    def snapshot(self) -> dict[str, Any]:
        return {m.name: m.snapshot() for m in self.all}

    def export(self) -> None:
        if self.share_dir is None:
            return
        self.share_dir.mkdir(parents=True, exist_ok=True)
        path = self.share_dir / f"{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot()), encoding="utf-8")
        os.replace(tmp, path)

    def start_exporting(self, interval: float = 1.0) -> None:
        if self.share_dir is None or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.export()
                except OSError as exc:  # a full disk must not take the server down
                    log.warning("could not share metrics in %s: %s", self.share_dir, exc)

        self._thread = threading.Thread(target=loop, name="ridecast-metrics", daemon=True)
        self._thread.start()

    def stop_exporting(self) -> None:
        self._stop.set()
        if self.share_dir is not None:
            with contextlib.suppress(OSError):
                self.export()  # the final numbers stay visible to the remaining workers

    def _merged(self) -> MetricSet:
        merged = MetricSet()
        by_name = {m.name: m for m in merged.all}
        snapshots: list[tuple[dict[str, Any], bool]] = [(self.snapshot(), True)]
        if self.share_dir is not None and self.share_dir.is_dir():
            own = f"{os.getpid()}.json"
            for path in sorted(self.share_dir.glob("*.json")):
                if path.name == own:
                    continue
                try:
                    snap = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue  # a file being replaced right now; its numbers come next scrape
                snapshots.append((snap, _alive(path.stem)))
        for snap, alive in snapshots:
            for name, rows in snap.items():
                metric = by_name.get(name)
                # A worker that has exited (or was killed) keeps its counts, which happened,
                # but no longer reports a state: its gauges (what it serves now) are left out.
                if metric is not None and (alive or metric.kind != "gauge"):
                    metric.merge(rows)
        return merged

    def render(self) -> bytes:
        """The Prometheus text exposition of all workers' metrics."""
        merged = self._merged() if self.share_dir is not None else self
        lines: list[str] = []
        for metric in merged.all:
            lines.extend(metric.render())
        return ("\n".join(lines) + "\n").encode()
