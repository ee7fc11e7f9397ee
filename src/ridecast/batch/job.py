"""Score one month: read → check → features → predict → write, chunk by chunk, then commit once.

Memory is bounded by the chunk size, not by the month: each chunk is read, scored and handed to
the sink before the next one is read. Rows the model cannot score are not dropped: each gets one
reason (the first that applies, in the order of :data:`REJECT_REASONS`) and goes to the rejects.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ridecast.batch import ride_ids
from ridecast.batch.figures import Comparison, Split
from ridecast.batch.outputs import REJECT_SCHEMA, MonthKey, constant, prediction_table
from ridecast.batch.plan import ChunkScores, ScoringPlan
from ridecast.batch.sinks import MonthWriter, Sink
from ridecast.batch.sources import TripChunk, TripSource
from ridecast.data.schema import Month, TaxiType
from ridecast.errors import DataError, ModelError
from ridecast.features import RideArrays
from ridecast.predictor import Predictor
from ridecast.rides import distances_in_range, in_zone_table

if TYPE_CHECKING:
    # Not at run time: every Spark Python worker imports this module, and the dashboard's
    # records (SQLAlchemy, Alembic) cost it most of a second.
    from ridecast.batch.predlog import BatchLog
    from ridecast.monitoring.batch_results import BatchResults, DurationHistogram

# Why a row is not scored, in the order they are checked.
REJECT_REASONS: tuple[str, ...] = (
    "missing_time",  # pickup or dropoff time is null
    "pickup_outside_month",  # the record belongs to another month (clock errors)
    "missing_zone",  # PULocationID or DOLocationID is null
    "unknown_zone",  # a zone id that is not in the TLC zone table (ridecast.rides)
    "missing_distance",  # trip_distance is null or NaN
    "negative_distance",
    "distance_out_of_range",  # above MAX_TRIP_DISTANCE (500 miles) or infinite: an odometer error
    "duration_out_of_range",  # not a ride as the course defines it: 1..60 minutes
)
MIN_DURATION, MAX_DURATION = 1.0, 60.0
_MICROS_PER_MINUTE = 60_000_000


@dataclass
class ScoreSummary:
    """What a run did; ``read == scored + sum(rejected.values())`` always holds."""

    taxi_type: TaxiType
    month: Month
    model_name: str
    model_version: str
    run_id: str
    source: str
    sink: str
    rows_read: int = 0
    rows_scored: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECT_REASONS, 0))
    prediction_sum: float = 0.0
    prediction_sq_sum: float = 0.0
    error_sq_sum: float = 0.0
    # Tallied by the local engine (None where an engine does not measure them).
    abs_error_sum: float | None = None
    predicted_histogram: DurationHistogram | None = None
    actual_histogram: DurationHistogram | None = None
    seconds: float = 0.0
    kind: str = "score"  # score, compare (--candidate) or rollout (rows split by a rollout)
    comparison: Comparison | None = None
    split: Split | None = None
    logged: dict[str, Any] | None = None  # prediction-log rows written / dropped, when logging
    key: MonthKey | None = None  # where the run went in the sink

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def mean(self) -> float:
        return self.prediction_sum / self.rows_scored if self.rows_scored else math.nan

    @property
    def std(self) -> float:
        if not self.rows_scored:
            return math.nan
        variance = self.prediction_sq_sum / self.rows_scored - self.mean**2
        return math.sqrt(max(variance, 0.0))

    @property
    def rmse(self) -> float:
        return math.sqrt(self.error_sq_sum / self.rows_scored) if self.rows_scored else math.nan

    @property
    def mae(self) -> float:
        if not self.rows_scored or self.abs_error_sum is None:
            return math.nan
        return self.abs_error_sum / self.rows_scored

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else math.nan

    def record(self) -> dict[str, Any]:
        """The JSON stored with the run in the sink."""
        extra: dict[str, Any] = {}
        if self.comparison is not None:
            extra["comparison"] = self.comparison.record()
        if self.split is not None:
            extra["rollout"] = self.split.record()
        if self.logged is not None:
            extra["prediction_log"] = self.logged
        if self.predicted_histogram is not None and self.actual_histogram is not None:
            extra["histograms"] = {
                "predicted": self.predicted_histogram.to_dict(),
                "actual": self.actual_histogram.to_dict(),
            }
        return extra | {
            "kind": self.kind,
            "taxi_type": self.taxi_type.value,
            "month": str(self.month),
            "model_name": self.model_name,
            "model_version": self.model_version,
            "run_id": self.run_id,
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_scored": self.rows_scored,
            "rows_rejected": self.rows_rejected,
            "rejected": {k: v for k, v in self.rejected.items() if v},
            "mean_prediction": self.mean,
            "std_prediction": self.std,
            "rmse": self.rmse,
            "mae": self.mae,
            "seconds": round(self.seconds, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


def score_month(
    taxi_type: TaxiType,
    month: Month,
    plan: ScoringPlan | Predictor,
    source: TripSource,
    sink: Sink,
    *,
    chunk_rows: int = 250_000,
    min_duration: float = MIN_DURATION,
    max_duration: float = MAX_DURATION,
    run_id: str | None = None,
    on_chunk: Callable[[int], None] | None = None,
    log: BatchLog | None = None,
    results: BatchResults | None = None,
) -> ScoreSummary:
    """Score every ride of ``source`` as ``plan`` says and replace the month's run in ``sink``.

    ``log``, when given, receives every answer (live and shadow) for the prediction log;
    ``results``, the run's record once the month is committed (for the dashboard)."""
    if isinstance(plan, Predictor):
        plan = ScoringPlan(plan)
    started = time.perf_counter()
    summary = start_summary(taxi_type, month, plan, str(source), str(sink), run_id)
    assert summary.key is not None
    key = summary.key
    writer = _WriteBehind(sink.open_month(key))
    try:
        for chunk in source.chunks(chunk_rows):
            if chunk.source_row[-1] >= ride_ids.ROWS_PER_MONTH:
                raise DataError(f"more than {ride_ids.ROWS_PER_MONTH:,} rows in one month's input")
            scored = score_chunk(plan, key, chunk, min_duration, max_duration)
            after = None
            if log is not None:
                after = _log_job(
                    log, plan, scored.rides, scored.ids, scored.scores, scored.latency_ms
                )
            writer.write(scored.table, reject_table(key, chunk, scored.reasons), after)
            tally(summary, scored.reasons, scored.actual, scored.scores)
            if on_chunk is not None:
                on_chunk(len(chunk))
        summary.seconds = time.perf_counter() - started
        if log is not None:
            writer.wait()
            summary.logged = log.figures()
        writer.commit(summary.record())
    except BaseException:
        writer.abort()
        raise
    summary.seconds = time.perf_counter() - started
    if results is not None:
        results.publish(summary.record())
    return summary


def start_summary(
    taxi_type: TaxiType,
    month: Month,
    plan: ScoringPlan,
    source: str,
    sink: str,
    run_id: str | None = None,
) -> ScoreSummary:
    """A run's summary before its first row: its key (a new run id unless ``run_id`` is given)
    and the comparison or rollout-split figures its plan adds. ModelError if a version of the
    plan does not predict durations. Both engines start here."""
    for predictor in (plan.stable, plan.candidate, plan.rollout_candidate):
        if predictor is not None and predictor.target != "duration":
            raise ModelError(
                f"{predictor.name} predicts {predictor.target}; batch scoring writes ride "
                "durations (actual_duration, predicted_duration), so pass a duration model, "
                "e.g. models:/ride-duration@champion"
            )
    stable = plan.stable
    key = MonthKey(
        taxi_type,
        month,
        stable.name,
        stable.version,
        run_id or new_run_id(),
        candidate_version=plan.candidate.version if plan.candidate is not None else None,
        rollout_id=plan.rollout_id,
    )
    summary = ScoreSummary(
        taxi_type, month, key.model_name, key.model_version, key.run_id, source, sink
    )
    summary.kind, summary.key = key.kind, key
    if plan.candidate is not None:
        summary.comparison = Comparison(stable.version, plan.candidate.version)
    if plan.deployment is not None and plan.deployment.state is not None:
        state = plan.deployment.state
        summary.split = Split(
            state.id,
            state.strategy,
            state.phase,
            state.step,
            state.weight,
            state.shadow_percent,
            plan.versions,
            plan.arms,
        )
    return summary


@dataclass(frozen=True)
class ScoredChunk:
    """One chunk after checking and scoring: what the sink, the log and the summary take."""

    reasons: np.ndarray  # per row of the chunk: 0 scored, else 1 + index in REJECT_REASONS
    rides: RideArrays  # the scored rows' features
    ids: np.ndarray  # their ride ids
    actual: np.ndarray  # their actual duration, minutes
    scores: ChunkScores
    table: pa.Table  # their output rows, in the columns of the run's kind
    latency_ms: float  # model time per scored row


def score_chunk(
    plan: ScoringPlan,
    key: MonthKey,
    chunk: TripChunk,
    min_duration: float = MIN_DURATION,
    max_duration: float = MAX_DURATION,
) -> ScoredChunk:
    """Check, score and lay out one chunk: the one path from rows to output rows, run by the
    local engine in this process and by the Spark engine on each Arrow batch."""
    reasons, duration = check_rides(chunk, key.month, min_duration, max_duration)
    ok = reasons == 0
    rides = RideArrays(
        pu=chunk.pu[ok].astype(np.int64),
        do=chunk.do[ok].astype(np.int64),
        distance=chunk.distance[ok],
    )
    ids = ride_ids.ride_ids(key.taxi_type, key.month, chunk.source_row[ok])
    scored_at = time.perf_counter()
    scores = plan.score(rides, ids)
    latency_ms = (time.perf_counter() - scored_at) * 1000 / max(len(ids), 1)
    actual = duration[ok]
    table = prediction_table(
        key,
        ids,
        chunk.pickup[ok],
        rides.pu,
        rides.do,
        actual,
        scores.predicted,
        candidate=scores.candidate,
        version_index=scores.version_index,
        versions=plan.versions,
        arms=plan.arms,
    )
    return ScoredChunk(reasons, rides, ids, actual, scores, table, latency_ms)


def _log_job(
    log: BatchLog,
    plan: ScoringPlan,
    rides: RideArrays,
    ids: np.ndarray,
    scores: ChunkScores,
    latency_ms: float,
) -> Callable[[], None]:
    def run() -> None:
        log.write(plan, rides, ids, scores, latency_ms)

    return run


def check_rides(
    chunk: TripChunk,
    month: Month,
    min_duration: float = MIN_DURATION,
    max_duration: float = MAX_DURATION,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: 0 if the model can score it, else 1 + the index of its reason; and the duration
    in minutes (meaningless where the times are missing). Zones and distance follow
    :mod:`ridecast.rides`, as the web service and the stream consumers do."""
    pickup_us = chunk.pickup.view(np.int64)
    minutes = (chunk.dropoff.view(np.int64) - pickup_us) / _MICROS_PER_MINUTE
    start = np.datetime64(month.start, "us")
    end = np.datetime64(month.end, "us")
    checks = (
        np.isnat(chunk.pickup) | np.isnat(chunk.dropoff),
        (chunk.pickup < start) | (chunk.pickup >= end),
        np.isnan(chunk.pu) | np.isnan(chunk.do),
        ~(in_zone_table(chunk.pu) & in_zone_table(chunk.do)),
        np.isnan(chunk.distance),
        chunk.distance < 0,
        ~distances_in_range(chunk.distance),
        ~((minutes >= min_duration) & (minutes <= max_duration)),
    )
    reasons = np.zeros(len(chunk), dtype=np.int8)
    # Last reason first, so the earliest that applies is the one that stays.
    for code in range(len(checks), 0, -1):
        reasons[checks[code - 1]] = code
    return reasons, minutes


def reject_table(key: MonthKey, chunk: TripChunk, reasons: np.ndarray) -> pa.Table:
    bad = np.flatnonzero(reasons)  # few rows: gather by index
    n = int(bad.shape[0])
    if n == 0:
        return REJECT_SCHEMA.empty_table()
    names = pa.array(REJECT_REASONS, type=pa.string())
    return pa.Table.from_arrays(
        [
            pa.array(ride_ids.ride_ids(key.taxi_type, key.month, chunk.source_row[bad])),
            names.take(pa.array(reasons[bad].astype(np.int32) - 1)),
            pa.array(chunk.pickup[bad]),
            pa.array(chunk.dropoff[bad]),
            pa.array(chunk.pu[bad], from_pandas=True),
            pa.array(chunk.do[bad], from_pandas=True),
            pa.array(chunk.distance[bad], from_pandas=True),
            constant(key.slot, n),
            constant(key.run_id, n),
        ],
        schema=REJECT_SCHEMA,
    )


class _WriteBehind:
    """Hands each chunk to a writer thread, so writing one chunk overlaps reading and scoring
    the next (parquet encoding and database I/O release the GIL). At most one chunk waits, so
    memory stays bounded by about three chunks; a write error surfaces at the next call."""

    def __init__(self, writer: MonthWriter) -> None:
        self.writer = writer
        self._pending: Future[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ridecast-writer")

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def write(
        self, predictions: pa.Table, rejects: pa.Table, after: Callable[[], None] | None = None
    ) -> None:
        """Queue the chunk; ``after`` (the prediction log's share) runs on the same thread."""
        self._wait()

        def job() -> None:
            self.writer.write(predictions, rejects)
            if after is not None:
                after()

        self._pending = self._pool.submit(job)

    def wait(self) -> None:
        self._wait()

    def commit(self, record: dict[str, Any]) -> None:
        try:
            self._wait()
            self.writer.commit(record)
        finally:
            self._pool.shutdown(wait=True)

    def abort(self) -> None:
        try:
            with contextlib.suppress(BaseException):
                self._wait()
        finally:
            self._pool.shutdown(wait=True)
            self.writer.abort()


def tally(
    summary: ScoreSummary, reasons: np.ndarray, actual: np.ndarray, scores: ChunkScores
) -> None:
    """Add one chunk's rows to the summary: ``reasons`` for every row read (0 = scored),
    ``actual`` and ``scores`` for the scored ones."""
    from ridecast.monitoring.batch_results import DurationHistogram

    predicted = scores.predicted
    summary.rows_read += int(reasons.shape[0])
    summary.rows_scored += int(predicted.shape[0])
    counts = np.bincount(reasons[reasons != 0], minlength=len(REJECT_REASONS) + 1)
    for code, reason in enumerate(REJECT_REASONS, start=1):
        summary.rejected[reason] += int(counts[code])
    summary.prediction_sum += float(predicted.sum())
    summary.prediction_sq_sum += float(np.dot(predicted, predicted))
    error = actual - predicted
    summary.error_sq_sum += float(np.dot(error, error))
    summary.abs_error_sum = (summary.abs_error_sum or 0.0) + float(np.abs(error).sum())
    if summary.predicted_histogram is None or summary.actual_histogram is None:
        summary.predicted_histogram, summary.actual_histogram = (
            DurationHistogram(),
            DurationHistogram(),
        )
    summary.predicted_histogram.add(predicted)
    summary.actual_histogram.add(actual)
    if summary.comparison is not None and scores.candidate is not None:
        summary.comparison.add(actual, predicted, scores.candidate)
    if summary.split is not None and scores.version_index is not None:
        shadowed = int(scores.shadow.sum()) if scores.shadow is not None else 0
        summary.split.add(actual, predicted, scores.version_index, shadowed)


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
