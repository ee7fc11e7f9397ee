"""The prediction log: every answer of every mode, and the outcomes that arrive later, in SQL.

:meth:`PredictionLog.log`, :meth:`~PredictionLog.log_feedback` and
:meth:`~PredictionLog.log_errors` only enqueue; a writer thread writes what has queued up every
``flush_interval`` seconds: COPY on PostgreSQL; on SQLite one ``INSERT … SELECT`` over a JSON
array of the rows, so that SQLite parses and indexes the whole flush in one step without the GIL
(a row-by-row ``executemany`` hands the GIL back and forth once per row, and a busy event loop
makes that slow for both); one batched insert elsewhere. What the database
refuses is dropped one batch at a time and counted; while the database is away the rows wait (up
to ``max_pending``) and are retried. Nothing the writer meets stops it.

Each write of predictions or feedback also writes, in its transaction, the rollout outcomes it
completes (:mod:`ridecast.monitoring.outcomes`): the analysis reads those instead of a join.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection

from ridecast.monitoring import feedback as fb
from ridecast.monitoring import migrate, outcomes, schema
from ridecast.monitoring.database import first_line, is_transient, make_engine, mask_url
from ridecast.monitoring.metrics import log_metrics
from ridecast.monitoring.records import PredictionBatch, rows_of

log = logging.getLogger("ridecast.monitoring")

ErrorKey = tuple[str, str, str, str | None, str, str]  # model, version, arm, rollout, source, kind
Row = tuple[Any, ...]
_RIDE = schema.PREDICTION_COLUMNS.index("ride_id")
_ROLLOUT = schema.PREDICTION_COLUMNS.index("rollout_id")


class PredictionLog:
    """Every prediction (ride, version, arm, rollout, inputs, output, latency, time), the feedback
    that arrives later, and failed predictions, in a SQL database (SQLite or PostgreSQL).

    The schema is upgraded to the newest migration when the log opens. Feedback is one row per
    (ride_id, target); see :mod:`ridecast.monitoring.feedback` for what is refused and why.
    """

    def __init__(
        self,
        url: str,
        *,
        flush_interval: float = 0.5,
        max_pending: int = 1_000_000,
        max_pending_feedback: int = 100_000,
        feedback_grace: float = 10.0,
    ) -> None:
        self.url = url  # as given, password included: never print it; print safe_url
        self.flush_interval = flush_interval
        self.max_pending = max_pending
        self.max_pending_feedback = max_pending_feedback
        self.feedback_grace = feedback_grace
        self.metrics = log_metrics()  # rows and feedback by state, in every mode
        self.engine = make_engine(url)
        self.metadata = schema.metadata
        self.predictions = schema.predictions
        self.feedback = schema.feedback
        self.prediction_errors = schema.prediction_errors
        dialect = self.engine.dialect
        self._sqlite = dialect.name == "sqlite"
        self._copy = dialect.name == "postgresql" and dialect.driver == "psycopg"
        # ``->>`` on json_each needs SQLite 3.38; older libraries take the executemany path.
        self._json_insert = self._sqlite and sqlite3.sqlite_version_info >= (3, 38, 0)
        self._dbapi = getattr(dialect, "loaded_dbapi", None) or getattr(dialect, "dbapi", None)

        self._pending: collections.deque[PredictionBatch] = collections.deque()
        self._pending_rows = 0
        self._pending_feedback: collections.deque[fb.Entry] = collections.deque()
        self._waiting_feedback: list[fb.Entry] = []  # rides not predicted yet, within the grace
        self._pending_errors: dict[ErrorKey, list[float]] = {}
        self.written = 0
        self.dropped = 0
        self.rejected = 0  # rows the database refused (a subset of dropped)
        self.last_error: str | None = None  # why writing fails now (None once it works again)
        self.last_refusal: str | None = None  # the last thing the database refused, and why
        self._feedback_counts = dict.fromkeys(fb.STATES, 0)
        self._reported: set[str] = set()  # refusals already logged, by error class
        self._lock = threading.Lock()  # one flush at a time (writer thread vs. flush())
        self._state = threading.Lock()  # queues and counters, shared with the hot path
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ensure_schema()
        mark = "?" if dialect.paramstyle == "qmark" else "%s"

        def insert(table: str, columns: Sequence[str], tail: str = "") -> str:
            marks = ", ".join([mark] * len(columns))
            return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}){tail}"

        self._insert_prediction = insert("predictions", schema.PREDICTION_COLUMNS)
        on_conflict = (
            " ON CONFLICT (ride_id, target) DO NOTHING"
            if dialect.name in ("sqlite", "postgresql")
            else ""
        )
        self._insert_feedback = insert("feedback", schema.FEEDBACK_COLUMNS, on_conflict)
        self._insert_error = insert("prediction_errors", schema.ERROR_COLUMNS)
        columns = ", ".join(schema.PREDICTION_COLUMNS)
        self._copy_prediction = f"COPY predictions ({columns}) FROM STDIN"
        picks = ", ".join(f"value ->> {i}" for i in range(len(schema.PREDICTION_COLUMNS)))
        self._json_prediction = (
            f"INSERT INTO predictions ({columns}) SELECT {picks} FROM json_each(?)"
        )

    @property
    def safe_url(self) -> str:
        """The database URL with any password masked: the one to print or show."""
        return mask_url(self.url)

    def __repr__(self) -> str:
        return f"PredictionLog({self.safe_url!r})"

    def _ensure_schema(self) -> None:
        try:
            migrate.upgrade(self.engine)
        except Exception as exc:
            from ridecast.errors import RidecastError

            raise RidecastError(
                f"the prediction log at {self.safe_url} is not usable: {first_line(exc)}; "
                "check RIDECAST_PREDICTION_LOG_URL"
            ) from exc

    # --- the hot path: enqueue only ---

    def log(self, batch: PredictionBatch) -> None:
        n = len(batch.predictions)
        if not batch.at:
            batch.at = time.time()
        with self._state:
            accepted = self._pending_rows + n <= self.max_pending
            if accepted:
                self._pending.append(batch)
                self._pending_rows += n
        if not accepted:
            self._drop(n, "the queue is full")

    def log_feedback(self, ride_id: Any, target: str, actual: float) -> None:
        """Queue a ride's real outcome; the writer decides at its next flush whether it counts."""
        entry = (time.time(), str(ride_id), str(target), float(actual))
        with self._state:
            full = (
                len(self._pending_feedback) + len(self._waiting_feedback)
                >= self.max_pending_feedback
            )
            if not full:
                self._pending_feedback.append(entry)
        if full:
            self._count_feedback("dropped", 1)
            if self._feedback_counts["dropped"] == 1:
                log.warning(
                    "prediction log %s: over %d feedback pending, dropping feedback",
                    self.safe_url,
                    self.max_pending_feedback,
                )

    def log_errors(
        self,
        model: str,
        version: str,
        arm: str,
        rollout_id: str | None,
        source: str,
        count: int = 1,
        *,
        kind: str = "failed",
    ) -> None:
        """Count failed predictions (``kind="failed"``), or shadow copies dropped unasked
        (``"dropped"``); a flush writes one row per (model, version, arm, ..., kind)."""
        key = (model, version, arm, rollout_id, source, kind)
        with self._state:
            entry = self._pending_errors.get(key)
            if entry is None:
                self._pending_errors[key] = [time.time(), float(count)]
            else:
                entry[1] += count

    @property
    def pending(self) -> int:
        return self._pending_rows

    @property
    def feedback_counts(self) -> dict[str, int]:
        """Feedback by state: recorded, duplicate, unknown_ride, dropped, rejected."""
        with self._state:
            return dict(self._feedback_counts)

    def _count_feedback(self, state: str, n: int) -> None:
        if n <= 0:
            return
        with self._state:
            self._feedback_counts[state] += n
        self.metrics.feedback.labels(state).inc(n)

    def _drop(self, n: int, why: str) -> None:
        with self._state:
            before = self.dropped
            self.dropped += n
        if before == 0 or before // 100_000 != (before + n) // 100_000:
            log.warning(
                "prediction log %s: dropped %d rows so far (%s)", self.safe_url, before + n, why
            )
        self.metrics.rows.labels("dropped").inc(n)

    # --- the writer ---

    def start(self) -> PredictionLog:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="ridecast-prediction-log", daemon=True
            )
            self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        """True while the writer thread runs (False before start and after close)."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # flush keeps its rows; the writer must outlive anything
                self._note_failure(exc)

    def _note_failure(self, exc: BaseException) -> None:
        message = first_line(exc)
        if message != self.last_error:
            log.warning("prediction log %s: write failed, will retry: %s", self.safe_url, message)
        self.last_error = message

    def _refused(self, what: str, n: int, exc: BaseException) -> None:
        message = first_line(exc)
        self.last_refusal = f"{n} {what}: {message}"
        kind = f"{what}:{exc.__class__.__name__}"
        if kind not in self._reported:
            self._reported.add(kind)
            log.error(
                "prediction log %s: the database refused %d %s, dropped: %s",
                self.safe_url,
                n,
                what,
                message,
            )

    def flush(self) -> int:
        """Write everything queued now; returns the prediction rows written. Safe from any
        thread."""
        with self._lock:
            with self._state:
                batches = list(self._pending)
                self._pending.clear()
                new_feedback = list(self._pending_feedback)
                self._pending_feedback.clear()
                errors, self._pending_errors = self._pending_errors, {}
            if not (batches or new_feedback or errors or self._waiting_feedback):
                return 0
            written, ok = self._write_predictions(batches)
            errors_ok = ok and self._write_errors(errors)
            feedback_ok = errors_ok and self._write_feedback(new_feedback)
            with self._state:
                if not feedback_ok:
                    self._pending_feedback.extendleft(reversed(new_feedback))
                if not errors_ok:
                    for key, (at, count) in errors.items():
                        entry = self._pending_errors.setdefault(key, [at, 0.0])
                        entry[1] += count
            if feedback_ok:
                self.last_error = None
            return written

    # predictions

    def _write_predictions(self, batches: list[PredictionBatch]) -> tuple[int, bool]:
        built: list[tuple[PredictionBatch, list[tuple[Any, ...]]]] = []
        for b in batches:
            try:
                built.append((b, rows_of(b, self._ts(b.at))))
            except Exception as exc:  # a malformed batch: no retry can mend it
                self._reject(b, exc)
        if not built:
            return 0, True
        try:
            self._insert_rows([row for _, rows in built for row in rows])
            done = built
        except Exception as exc:
            if is_transient(exc, self._dbapi):
                self._retry_later([b for b, _ in built], exc)
                return 0, False
            # One batch may hold the value the database refuses: write them one by one.
            done = []
            for i, (b, rows) in enumerate(built):
                try:
                    self._insert_rows(rows)
                    done.append((b, rows))
                except Exception as exc_one:
                    if is_transient(exc_one, self._dbapi):
                        self._count_written(done)
                        self._retry_later([b for b, _ in built[i:]], exc_one)
                        return sum(len(rows) for _, rows in done), False
                    self._reject(b, exc_one)
        return self._count_written(done), True

    def _count_written(self, done: list[tuple[PredictionBatch, list[tuple[Any, ...]]]]) -> int:
        n = sum(len(rows) for _, rows in done)
        with self._state:
            self._pending_rows -= n
            self.written += n
        if n:
            self.metrics.rows.labels("written").inc(n)
        return n

    def _reject(self, batch: PredictionBatch, exc: BaseException) -> None:
        n = len(batch.predictions)
        with self._state:
            self._pending_rows -= n
            self.rejected += n
        self._refused("prediction rows", n, exc)
        self._drop(n, "refused by the database")

    def _retry_later(self, batches: list[PredictionBatch], exc: BaseException) -> None:
        self._note_failure(exc)
        overflow: list[PredictionBatch] = []
        with self._state:
            self._pending.extendleft(reversed(batches))
            while self._pending_rows > self.max_pending and self._pending:
                oldest = self._pending.popleft()
                self._pending_rows -= len(oldest.predictions)
                overflow.append(oldest)
        for b in overflow:
            self._drop(len(b.predictions), "the database is unreachable")

    def _insert_rows(self, rows: list[tuple[Any, ...]]) -> None:
        with self.engine.begin() as conn:
            if self._copy:
                raw = conn.connection.driver_connection
                assert raw is not None
                with raw.cursor() as cur, cur.copy(self._copy_prediction) as copy:
                    for row in rows:
                        copy.write_row(row)
            elif self._json_insert:
                conn.exec_driver_sql(self._json_prediction, (orjson.dumps(rows),))
            else:
                conn.exec_driver_sql(self._insert_prediction, rows)  # type: ignore[arg-type]
            # Answers written after their ride's feedback (rides with no feedback yet: nothing).
            outcomes.after_predictions(
                conn, [r[_RIDE] for r in rows if r[_ROLLOUT] is not None and r[_RIDE] is not None]
            )

    def _ts(self, at: float) -> Any:
        ts = datetime.fromtimestamp(at, UTC)
        # SQLite stores text; SQLAlchemy's own format, so that its bound datetimes compare.
        return ts.strftime("%Y-%m-%d %H:%M:%S.%f") if self._sqlite else ts

    # errors and feedback

    def _write_each(
        self,
        what: str,
        statement: str,
        rows: list[Row],
        then: Callable[[Connection, list[Row]], None] | None = None,
    ) -> tuple[int, int] | None:
        """Insert ``rows``, then run ``then`` on them in the same transaction; on a refusal, row
        by row, dropping only the refused ones. Returns (rows the database changed, rows
        refused), or None when it is away (retry later)."""

        def write(conn: Connection, some: list[Row]) -> int:
            params: Any = some if len(some) > 1 else some[0]
            changed = int(conn.exec_driver_sql(statement, params).rowcount)
            if then is not None:
                then(conn, some)
            return changed

        try:
            with self.engine.begin() as conn:
                return write(conn, rows), 0
        except Exception as exc:
            if is_transient(exc, self._dbapi):
                self._note_failure(exc)
                return None
        changed = refused = 0
        for row in rows:
            try:
                with self.engine.begin() as conn:
                    changed += write(conn, [row])
            except Exception as exc:
                if is_transient(exc, self._dbapi):
                    self._note_failure(exc)
                    return None
                self._refused(what, 1, exc)
                refused += 1
        return changed, refused

    def _write_errors(self, errors: dict[ErrorKey, list[float]]) -> bool:
        if not errors:
            return True
        rows = [(self._ts(at), *key, int(count)) for key, (at, count) in errors.items()]
        return self._write_each("error counts", self._insert_error, rows) is not None

    def _write_feedback(self, new: list[fb.Entry]) -> bool:
        entries = self._waiting_feedback + new
        if not entries:
            return True
        try:
            with self.engine.connect() as conn:
                predicted = fb.predicted_rides(conn, (e[1] for e in entries))
        except Exception as exc:
            self._note_failure(exc)
            if not is_transient(exc, self._dbapi):
                log.exception("prediction log %s: feedback lookup failed", self.safe_url)
            return False
        settled = fb.settle(entries, predicted, time.time(), self.feedback_grace)
        if settled.insert:
            rows = [(self._ts(t), r, g, a) for t, r, g, a in settled.insert]
            outcome = self._write_each(
                "feedback",
                self._insert_feedback,
                rows,
                lambda conn, done: outcomes.after_feedback(conn, [r[1] for r in done]),
            )
            if outcome is None:
                return False
            changed, refused = outcome
            self._count_feedback("recorded", changed)
            self._count_feedback("rejected", refused)
            # The unique index refused feedback already stored (here or by another process).
            settled.duplicate += len(rows) - changed - refused
        self._waiting_feedback = settled.waiting
        self._count_feedback("duplicate", settled.duplicate)
        self._count_feedback("unknown_ride", settled.unknown_ride)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer after writing what is queued (retrying for up to ``timeout``).
        Feedback still waiting for its ride's prediction is dropped and counted."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while True:
            self.flush()
            busy = self._pending or self._pending_feedback or self._pending_errors
            if not busy or time.monotonic() >= deadline:
                break
            if self.last_error is not None:
                time.sleep(0.2)
        if self._pending:
            self._drop(self._pending_rows, "the server stopped before they could be written")
        left = len(self._pending_feedback) + len(self._waiting_feedback)
        if left:
            log.warning(
                "prediction log %s: %d feedback not recorded at shutdown (ride not predicted "
                "yet, or the database away)",
                self.safe_url,
                left,
            )
            self._count_feedback("dropped", left)
            self._pending_feedback.clear()
            self._waiting_feedback = []
        self.engine.dispose()
