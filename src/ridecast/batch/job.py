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
from typing import Any

import numpy as np
import pyarrow as pa

from ridecast.batch import ride_ids
from ridecast.batch.sinks import PREDICTION_SCHEMA, REJECT_SCHEMA, MonthKey, MonthWriter, Sink
from ridecast.batch.sources import TripChunk, TripSource
from ridecast.data.schema import Month, TaxiType
from ridecast.data.zones import VALID_ZONE_IDS
from ridecast.errors import DataError, ModelError
from ridecast.features import RideArrays
from ridecast.predictor import Predictor

# Why a row is not scored, in the order they are checked.
REJECT_REASONS: tuple[str, ...] = (
    "missing_time",  # pickup or dropoff time is null
    "pickup_outside_month",  # the record belongs to another month (clock errors)
    "missing_zone",  # PULocationID or DOLocationID is null
    "unknown_zone",  # a zone id that is not a TLC zone (1..265)
    "missing_distance",  # trip_distance is null or NaN
    "negative_distance",
    "duration_out_of_range",  # not a ride as the course defines it: 1..60 minutes
)
MIN_DURATION, MAX_DURATION = 1.0, 60.0
_MICROS_PER_MINUTE = 60_000_000
_ZONE_OK = np.zeros(max(VALID_ZONE_IDS) + 1, dtype=bool)
_ZONE_OK[sorted(VALID_ZONE_IDS)] = True


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
    seconds: float = 0.0

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
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else math.nan

    def record(self) -> dict[str, Any]:
        """The JSON stored with the run in the sink."""
        return {
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
            "seconds": round(self.seconds, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


def score_month(
    taxi_type: TaxiType,
    month: Month,
    predictor: Predictor,
    source: TripSource,
    sink: Sink,
    *,
    chunk_rows: int = 250_000,
    min_duration: float = MIN_DURATION,
    max_duration: float = MAX_DURATION,
    run_id: str | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> ScoreSummary:
    """Score every ride of ``source`` with ``predictor`` and replace the month in ``sink``."""
    if predictor.target != "duration":
        raise ModelError(
            f"{predictor.name} predicts {predictor.target}; batch scoring writes ride durations "
            "(actual_duration, predicted_duration), so pass a duration model, e.g. "
            "models:/ride-duration@champion"
        )
    started = time.perf_counter()
    key = MonthKey(taxi_type, month, predictor.name, predictor.version, run_id or _new_run_id())
    summary = ScoreSummary(
        taxi_type, month, key.model_name, key.model_version, key.run_id, str(source), str(sink)
    )
    writer = _WriteBehind(sink.open_month(key))
    try:
        for chunk in source.chunks(chunk_rows):
            reasons, duration = check_rides(chunk, month, min_duration, max_duration)
            ok = reasons == 0
            rides = RideArrays(
                pu=chunk.pu[ok].astype(np.int64),
                do=chunk.do[ok].astype(np.int64),
                distance=chunk.distance[ok],
            )
            predicted = predictor.predict_arrays(rides)
            writer.write(
                _predictions(key, chunk, ok, duration[ok], predicted),
                _rejects(key, chunk, reasons),
            )
            _tally(summary, reasons, duration[ok], predicted)
            if on_chunk is not None:
                on_chunk(len(chunk))
        summary.seconds = time.perf_counter() - started
        writer.commit(summary.record())
    except BaseException:
        writer.abort()
        raise
    summary.seconds = time.perf_counter() - started
    return summary


def check_rides(
    chunk: TripChunk,
    month: Month,
    min_duration: float = MIN_DURATION,
    max_duration: float = MAX_DURATION,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: 0 if the model can score it, else 1 + the index of its reason; and the duration
    in minutes (meaningless where the times are missing)."""
    pickup_us = chunk.pickup.view(np.int64)
    minutes = (chunk.dropoff.view(np.int64) - pickup_us) / _MICROS_PER_MINUTE
    start = np.datetime64(month.start, "us")
    end = np.datetime64(month.end, "us")
    checks = (
        np.isnat(chunk.pickup) | np.isnat(chunk.dropoff),
        (chunk.pickup < start) | (chunk.pickup >= end),
        np.isnan(chunk.pu) | np.isnan(chunk.do),
        ~(_known_zone(chunk.pu) & _known_zone(chunk.do)),
        np.isnan(chunk.distance),
        chunk.distance < 0,
        ~((minutes >= min_duration) & (minutes <= max_duration)),
    )
    reasons = np.zeros(len(chunk), dtype=np.int8)
    # Last reason first, so the earliest that applies is the one that stays.
    for code in range(len(checks), 0, -1):
        reasons[checks[code - 1]] = code
    return reasons, minutes


def _known_zone(ids: np.ndarray) -> np.ndarray:
    inside = (ids >= 0) & (ids < _ZONE_OK.size)  # False for NaN
    index = np.where(inside, ids, 0).astype(np.int64)
    return inside & (index == ids) & _ZONE_OK[index]


def _predictions(
    key: MonthKey, chunk: TripChunk, ok: np.ndarray, actual: np.ndarray, predicted: np.ndarray
) -> pa.Table:
    n = int(predicted.shape[0])
    if chunk.source_row[-1] >= ride_ids.ROWS_PER_MONTH:
        raise DataError(f"more than {ride_ids.ROWS_PER_MONTH:,} rows in one month's input")
    return pa.Table.from_arrays(
        [
            pa.array(ride_ids.ride_ids(key.taxi_type, key.month, chunk.source_row[ok])),
            pa.array(chunk.pickup[ok]),
            pa.array(chunk.pu[ok].astype(np.int32)),
            pa.array(chunk.do[ok].astype(np.int32)),
            pa.array(actual),
            pa.array(predicted),
            pa.array(actual - predicted),
            _constant(key.model_version, n),
            _constant(key.run_id, n),
        ],
        schema=PREDICTION_SCHEMA,
    )


def _rejects(key: MonthKey, chunk: TripChunk, reasons: np.ndarray) -> pa.Table:
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
            _constant(key.model_version, n),
            _constant(key.run_id, n),
        ],
        schema=REJECT_SCHEMA,
    )


def _constant(text: str, n: int) -> pa.Array:
    """``n`` copies of ``text`` as a string array, built from its buffers in one go."""
    data = text.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(data)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))


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

    def write(self, predictions: pa.Table, rejects: pa.Table) -> None:
        self._wait()
        self._pending = self._pool.submit(self.writer.write, predictions, rejects)

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


def _tally(
    summary: ScoreSummary, reasons: np.ndarray, actual: np.ndarray, predicted: np.ndarray
) -> None:
    summary.rows_read += int(reasons.shape[0])
    summary.rows_scored += int(predicted.shape[0])
    counts = np.bincount(reasons[reasons != 0], minlength=len(REJECT_REASONS) + 1)
    for code, reason in enumerate(REJECT_REASONS, start=1):
        summary.rejected[reason] += int(counts[code])
    summary.prediction_sum += float(predicted.sum())
    summary.prediction_sq_sum += float(np.dot(predicted, predicted))
    error = actual - predicted
    summary.error_sq_sum += float(np.dot(error, error))


def _new_run_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
