"""What a deployment tells its operators: Prometheus metrics and the prediction log.

Both are built to cost almost nothing on the hot path:

- :class:`MetricSet` keeps counters and histograms in plain dicts (a dict update per request, a
  numpy ``searchsorted`` per batch) and renders the Prometheus text format when scraped. Worker
  processes of one server share their numbers through small snapshot files, so a scrape of any
  worker reports the whole server.
- :class:`PredictionLog` only appends a batch to a queue; a writer thread inserts the rows in
  batches into SQLite (default) or PostgreSQL, with the ground truth arriving later in
  ``feedback``. The web service, the batch job and the stream consumers share it.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
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
        snapshots = [self.snapshot()]
        if self.share_dir is not None and self.share_dir.is_dir():
            own = f"{os.getpid()}.json"
            for path in sorted(self.share_dir.glob("*.json")):
                if path.name == own:
                    continue
                try:
                    snapshots.append(json.loads(path.read_text(encoding="utf-8")))
                except (OSError, ValueError):
                    continue  # a file being replaced right now; its numbers come next scrape
        for snap in snapshots:
            for name, rows in snap.items():
                metric = by_name.get(name)
                if metric is not None:
                    metric.merge(rows)
        return merged

    def render(self) -> bytes:
        """The Prometheus text exposition of all workers' metrics."""
        merged = self._merged() if self.share_dir is not None else self
        lines: list[str] = []
        for metric in merged.all:
            lines.extend(metric.render())
        return ("\n".join(lines) + "\n").encode()


# --------------------------------------------------------------------------------------------
# The prediction log


@dataclass
class PredictionBatch:
    """Predictions of one model call, as the hot path hands them over (no per-row objects)."""

    model: str
    version: str
    source: str
    pu: np.ndarray
    do: np.ndarray
    distance: np.ndarray
    predictions: np.ndarray
    latency_ms: Sequence[float] | float
    ride_ids: Sequence[Any] | None = None
    user_ids: Sequence[Any] | None = None
    at: float = 0.0


def _tables(metadata: Any) -> tuple[Any, Any]:
    from sqlalchemy import Column, DateTime, Float, Integer, String, Table

    predictions = Table(
        "predictions",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("ts", DateTime(timezone=True), nullable=False),
        Column("model", String(64), nullable=False),
        Column("version", String(32), nullable=False),
        Column("ride_id", String(128), index=True),
        Column("user_id", String(128)),
        Column("pu_location_id", Integer, nullable=False),
        Column("do_location_id", Integer, nullable=False),
        Column("trip_distance", Float, nullable=False),
        Column("prediction", Float, nullable=False),
        Column("latency_ms", Float, nullable=False),
        Column("source", String(32), nullable=False),
    )
    feedback = Table(
        "feedback",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("ts", DateTime(timezone=True), nullable=False),
        Column("ride_id", String(128), nullable=False, index=True),
        Column("target", String(16), nullable=False),
        Column("actual", Float, nullable=False),
    )
    return predictions, feedback


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


class PredictionLog:
    """Every prediction (ride_id, model version, inputs, output, latency, time) and the feedback
    that arrives later, in a SQL database.

    :meth:`log` and :meth:`log_feedback` only enqueue; a writer thread inserts what has queued up
    every ``flush_interval`` seconds, in one transaction. If the database is unreachable the
    writer keeps the rows (up to ``max_pending``) and retries; rows beyond that are dropped,
    counted in :attr:`dropped`, and a warning says so. :meth:`close` writes what is left.
    """

    def __init__(
        self,
        url: str,
        *,
        flush_interval: float = 0.5,
        max_pending: int = 1_000_000,
        metrics: MetricSet | None = None,
    ) -> None:
        from sqlalchemy import MetaData, create_engine, event

        self.url = url
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.metrics = metrics
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":

            @event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
                # WAL lets worker processes write while readers read; busy_timeout makes
                # concurrent writers wait instead of failing.
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA busy_timeout=10000")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

        self.metadata = MetaData()
        self.predictions, self.feedback = _tables(self.metadata)
        self._pending: collections.deque[PredictionBatch] = collections.deque()
        self._pending_feedback: collections.deque[tuple[float, str, str, float]] = (
            collections.deque()
        )
        self._pending_rows = 0
        self.written = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()  # one flush at a time (writer thread vs. flush())
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ensure_tables()
        marks = {"sqlite": "?", "postgresql": "%s"}
        mark = marks.get(self.engine.dialect.name, "%s")
        self._insert_prediction = (
            "INSERT INTO predictions (ts, model, version, ride_id, user_id, pu_location_id, "
            "do_location_id, trip_distance, prediction, latency_ms, source) VALUES ("
            + ", ".join([mark] * 11)
            + ")"
        )
        self._insert_feedback = (
            "INSERT INTO feedback (ts, ride_id, target, actual) VALUES ("
            + ", ".join([mark] * 4)
            + ")"
        )

    def _ensure_tables(self) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            self.metadata.create_all(self.engine, checkfirst=True)
        except SQLAlchemyError as exc:
            # Another worker may be creating the same tables right now; check again.
            time.sleep(0.2)
            try:
                self.metadata.create_all(self.engine, checkfirst=True)
            except SQLAlchemyError:
                from ridecast.errors import RidecastError

                raise RidecastError(
                    f"the prediction log at {self.engine.url.render_as_string()} is not usable: "
                    f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}; check "
                    "RIDECAST_PREDICTION_LOG_URL"
                ) from exc

    # --- the hot path: enqueue only ---

    def log(self, batch: PredictionBatch) -> None:
        n = len(batch.predictions)
        if self._pending_rows + n > self.max_pending:
            self._drop(n, "the queue is full")
            return
        if not batch.at:
            batch.at = time.time()
        self._pending.append(batch)
        self._pending_rows += n

    def log_feedback(self, ride_id: Any, target: str, actual: float) -> None:
        self._pending_feedback.append((time.time(), str(ride_id), target, float(actual)))

    def _drop(self, n: int, why: str) -> None:
        if self.dropped == 0 or self.dropped // 100_000 != (self.dropped + n) // 100_000:
            log.warning("prediction log %s: dropped %d rows so far (%s)", self.url, n, why)
        self.dropped += n
        if self.metrics is not None:
            self.metrics.log_rows.inc(("dropped",), n)

    # --- the writer ---

    def start(self) -> PredictionLog:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="ridecast-prediction-log", daemon=True
            )
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write everything queued now; returns the rows written. Safe from any thread."""
        from sqlalchemy.exc import SQLAlchemyError

        with self._lock:
            batches: list[PredictionBatch] = []
            while self._pending:
                batches.append(self._pending.popleft())
            feedback: list[tuple[float, str, str, float]] = []
            while self._pending_feedback:
                feedback.append(self._pending_feedback.popleft())
            if not batches and not feedback:
                return 0
            rows = self._rows(batches, text_time=self.engine.dialect.name == "sqlite")
            try:
                with self.engine.begin() as conn:
                    if rows:
                        conn.exec_driver_sql(self._insert_prediction, rows)  # type: ignore[arg-type]
                    if feedback:
                        conn.exec_driver_sql(  # type: ignore[call-overload]
                            self._insert_feedback,
                            [(datetime.fromtimestamp(t, UTC), r, g, a) for t, r, g, a in feedback],
                        )
            except SQLAlchemyError as exc:
                self.last_error = f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}"
                log.warning("prediction log %s: write failed, will retry: %s", self.url, exc)
                # Keep the rows for the next attempt, unless they are already too many.
                self._pending.extendleft(reversed(batches))
                self._pending_feedback.extendleft(reversed(feedback))
                if self._pending_rows > self.max_pending:
                    overflow = self._pending.popleft()
                    self._pending_rows -= len(overflow.predictions)
                    self._drop(len(overflow.predictions), "the database is unreachable")
                return 0
            self._pending_rows -= len(rows)
            self.written += len(rows)
            self.last_error = None
            if self.metrics is not None and rows:
                self.metrics.log_rows.inc(("written",), len(rows))
            return len(rows)

    @staticmethod
    def _rows(batches: list[PredictionBatch], text_time: bool = False) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for b in batches:
            n = len(b.predictions)
            ts: Any = datetime.fromtimestamp(b.at, UTC)
            if text_time:  # SQLite stores text; formatting once per batch saves a µs per row
                ts = ts.strftime("%Y-%m-%d %H:%M:%S.%f")
            ride_ids = b.ride_ids if b.ride_ids is not None else [None] * n
            user_ids = b.user_ids if b.user_ids is not None else [None] * n
            latency = (
                [float(b.latency_ms)] * n
                if isinstance(b.latency_ms, int | float)
                else list(b.latency_ms)
            )
            rows.extend(
                zip(
                    [ts] * n,
                    [b.model] * n,
                    [b.version] * n,
                    map(_optional_text, ride_ids),
                    map(_optional_text, user_ids),
                    b.pu.tolist(),
                    b.do.tolist(),
                    b.distance.tolist(),
                    b.predictions.tolist(),
                    latency,
                    [b.source] * n,
                    strict=True,
                )
            )
        return rows

    @property
    def pending(self) -> int:
        return self._pending_rows

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer after writing what is queued (retrying for up to ``timeout``)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while (self._pending or self._pending_feedback) and time.monotonic() < deadline:
            if self.flush() == 0 and self.last_error is not None:
                time.sleep(0.2)
        if self._pending:
            self._drop(self._pending_rows, "the server stopped before they could be written")
        self.engine.dispose()
