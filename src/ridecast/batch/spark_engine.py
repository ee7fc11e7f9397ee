"""Score a month on Apache Spark, with the local engine's results and guarantees.

The same month and plan give the same output as :func:`ridecast.batch.job.score_month`: the same
columns, ride ids, rejects and reasons, and predictions equal to 1e-9, because every Arrow batch
goes through the local engine's own :func:`ridecast.batch.job.score_chunk` on the executors.
What Spark adds is the spread over cores and machines:

- the plan reaches the executors once, as a broadcast: a linear version in its numpy-only
  compiled form (the zone-pair weight table), any other version as the loaded ``RideModel``,
  which predicts a whole Arrow batch at a time (``mapInArrow``), never a row at a time;
- one pass over the input: each task yields its batches' output rows to Spark's writer and
  writes its batches' rejects (few rows) to ``rejects/part-<partition>.parquet`` itself, by an
  atomic rename, so a retried task replaces its own file with the same rows;
- ride ids stay stable: a row's ``source_row`` is its file's first row (counted on the driver
  from the parquet footers, files in sorted order) plus Spark's ``_metadata.row_index``;
- the month is staged and swapped in as one folder by :class:`SparkStaging`, holding the local
  folder sink's month lock: a killed job leaves the previous month whole, a rerun replaces it.

The summary is tallied on the driver from the staged files (:func:`ridecast.batch.job.tally`),
so a retried task never counts twice.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ridecast.batch import ride_ids
from ridecast.batch.job import (
    MAX_DURATION,
    MIN_DURATION,
    REJECT_REASONS,
    ScoreSummary,
    reject_table,
    score_chunk,
    start_summary,
    tally,
)
from ridecast.batch.outputs import REJECT_SCHEMA, MonthKey
from ridecast.batch.plan import ChunkScores, ScoringPlan
from ridecast.batch.sinks import DirectorySink
from ridecast.batch.sources import TripChunk
from ridecast.batch.spark_input import SparkInput
from ridecast.batch.spark_staging import SparkStaging
from ridecast.data.schema import Month, TaxiType
from ridecast.errors import DataError
from ridecast.predictor import Predictor

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from ridecast.monitoring.batch_results import BatchResults

_INPUT = ("pickup", "dropoff", "pu", "do", "distance")
_SPARK_TYPES = {
    pa.int64(): "BIGINT",
    pa.int32(): "INT",
    pa.float64(): "DOUBLE",
    pa.string(): "STRING",
    pa.timestamp("us"): "TIMESTAMP_NTZ",  # TLC's wall-clock times, in no time zone
}


def spark_ddl(schema: pa.Schema) -> str:
    """The Spark DDL of one of the local engine's Arrow schemas (names, types, NOT NULL)."""
    return ", ".join(
        f"`{f.name}` {_SPARK_TYPES[f.type]}{'' if f.nullable else ' NOT NULL'}" for f in schema
    )


@dataclass(frozen=True)
class _Job:
    """What every task needs besides the plan and its rows; small, so it travels with the
    function."""

    key: MonthKey
    min_duration: float
    max_duration: float
    rejects: str  # the folder each task writes its rejects into


def shipped_plan(plan: ScoringPlan) -> ScoringPlan:
    """The plan as executors get it: each version in its smallest form (a linear model's
    compiled zone-pair weight table, numpy only, a few MB; any other model as loaded)."""

    def ship(predictor: Predictor) -> Predictor:
        model = predictor.loaded.model
        compiled = model.compiled() if hasattr(model, "compiled") else None
        return (
            predictor if compiled is None else Predictor(replace(predictor.loaded, model=compiled))
        )

    if plan.deployment is not None:
        predictors = {v: ship(p) for v, p in plan.deployment.predictors.items()}
        deployment = replace(plan.deployment, predictors=predictors)
        return ScoringPlan(deployment.stable, deployment=deployment)
    candidate = ship(plan.candidate) if plan.candidate is not None else None
    return ScoringPlan(ship(plan.stable), candidate=candidate)


def score_month_spark(
    spark: SparkSession,
    taxi_type: TaxiType,
    month: Month,
    plan: ScoringPlan | Predictor,
    trips: SparkInput,
    sink: DirectorySink,
    *,
    chunk_rows: int = 250_000,
    min_duration: float = MIN_DURATION,
    max_duration: float = MAX_DURATION,
    run_id: str | None = None,
    on_stage: Callable[[str], None] | None = None,
    results: BatchResults | None = None,
) -> ScoreSummary:
    """Score every ride of ``trips`` as ``plan`` says on ``spark`` and replace the month's run
    in the folder ``sink``: what :func:`ridecast.batch.job.score_month` does, on Spark.
    ``chunk_rows`` is the Arrow batch size (rows scored at a time by one task)."""
    if isinstance(plan, Predictor):
        plan = ScoringPlan(plan)
    started = time.perf_counter()
    summary = start_summary(taxi_type, month, plan, str(trips), str(sink), run_id)
    assert summary.key is not None
    key = summary.key
    if trips.total_rows > ride_ids.ROWS_PER_MONTH:
        raise DataError(f"more than {ride_ids.ROWS_PER_MONTH:,} rows in one month's input")
    stage = on_stage or (lambda _name: None)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(chunk_rows))
    staging = SparkStaging(sink, key)
    shipped = None
    try:
        shipped = spark.sparkContext.broadcast(shipped_plan(plan))
        job = _Job(key, min_duration, max_duration, str(staging.rejects))
        stage("scoring")
        scored = read_rides(spark, trips).mapInArrow(
            partial(_score_batches, shipped, job), spark_ddl(key.schema)
        )
        try:
            scored.write.mode("overwrite").parquet(staging.predictions.as_uri())
        except Exception as exc:  # Spark's and py4j's errors: one line naming the input
            raise DataError(
                f"{trips}: Spark could not score {taxi_type.value} {month}: {_spark_error(exc)}"
            ) from exc
        stage("commit")
        staging.collect_files()
        _tally(summary, plan, staging)
        if summary.rows_read != trips.total_rows:
            raise DataError(
                f"{trips}: Spark scored or rejected {summary.rows_read:,} rows, the files hold "
                f"{trips.total_rows:,}; nothing was replaced (is the sink folder {sink} shared by "
                "the driver and every executor?)"
            )
        summary.seconds = time.perf_counter() - started
        staging.commit(summary.record())
    except BaseException:
        staging.abort()
        raise
    finally:
        if shipped is not None:
            with contextlib.suppress(Exception):  # a stopped session has nothing left to free
                shipped.destroy()
    summary.seconds = time.perf_counter() - started
    if results is not None:
        results.publish(summary.record())
    return summary


def _spark_error(exc: Exception) -> str:
    """The line of a Spark error that says what went wrong: a Python worker's exception is the
    last line of its traceback, a JVM error its first line."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    python_worker = "PYTHON_EXCEPTION" in lines[0] or type(exc).__name__ == "PythonException"
    text = lines[-1] if python_worker else lines[0]
    return text if len(text) <= 300 else text[:297] + "…"


def read_rides(spark: SparkSession, trips: SparkInput) -> DataFrame:
    """The five columns the job checks, named and typed alike for every file, plus
    ``source_row``: the row's position in the month's input, as the local engine counts it."""
    from functools import reduce

    from pyspark.sql import functions as F

    kinds = ("timestamp_ntz", "timestamp_ntz", "double", "double", "double")
    frames = []
    for path, columns, first_row in zip(trips.paths, trips.columns, trips.first_rows, strict=True):
        picked = [
            F.col(f"`{name}`").cast(kind).alias(alias)
            for name, kind, alias in zip(columns, kinds, _INPUT, strict=True)
        ]
        row = (F.lit(first_row) + F.col("_metadata.row_index")).alias("source_row")
        frames.append(spark.read.parquet(path).select(*picked, row))
    return reduce(lambda a, b: a.unionByName(b), frames)


def _chunk(batch: pa.RecordBatch) -> TripChunk:
    def numpy(name: str, kind: pa.DataType) -> np.ndarray:
        column = pc.cast(batch.column(name), kind, safe=False)
        return np.asarray(column.to_numpy(zero_copy_only=False))

    timestamp = pa.timestamp("us")
    return TripChunk(
        source_row=np.asarray(batch.column("source_row").to_numpy(), dtype=np.int64),
        pickup=numpy("pickup", timestamp),
        dropoff=numpy("dropoff", timestamp),
        pu=numpy("pu", pa.float64()),
        do=numpy("do", pa.float64()),
        distance=numpy("distance", pa.float64()),
    )


def _score_batches(
    shipped: Any, job: _Job, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """Runs on the executors, once per task: each Arrow batch is checked, scored in one call
    per version and laid out by the local engine's code; its rejects go to the task's file."""
    plan: ScoringPlan = shipped.value  # deserialized once per Python worker, then cached
    with _TaskRejects(Path(job.rejects)) as rejects:
        for batch in batches:
            chunk = _chunk(batch)
            scored = score_chunk(plan, job.key, chunk, job.min_duration, job.max_duration)
            if scored.reasons.any():
                rejects.write(reject_table(job.key, chunk, scored.reasons))
            yield from scored.table.to_batches()
        rejects.commit()


class _TaskRejects:
    """One task's rejects: written to a hidden file named for the task attempt, renamed to
    ``part-<partition>.parquet`` once the task has read all its rows. A retry of the same
    partition reads the same rows, so it replaces the file with the same content."""

    def __init__(self, folder: Path) -> None:
        from pyspark import TaskContext

        context = TaskContext.get()
        partition, attempt = (context.partitionId(), context.attemptNumber()) if context else (0, 0)
        self.final = folder / f"part-{partition:05d}.parquet"
        self.partial = folder / f".part-{partition:05d}-{attempt}-{os.getpid()}.parquet"
        self._writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.partial, REJECT_SCHEMA)
        self._writer.write_table(table)

    def commit(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            os.replace(self.partial, self.final)

    def __enter__(self) -> _TaskRejects:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:  # the task failed or was cancelled before commit
            with contextlib.suppress(Exception):
                self._writer.close()
            self.partial.unlink(missing_ok=True)


def _tally(summary: ScoreSummary, plan: ScoringPlan, staging: SparkStaging) -> None:
    """The summary's figures, read back from the staged files on the driver (a few columns,
    one row group at a time) and added by the local engine's :func:`tally`."""
    key = staging.key
    columns = ["actual_duration", "predicted_duration"]
    if key.kind == "compare":
        columns.append("candidate_predicted_duration")
    elif key.kind == "rollout":
        columns.append("model_version")
    versions = pa.array(plan.versions, type=pa.string())
    for part in staging.prediction_files():
        file = pq.ParquetFile(part)
        for group in range(file.num_row_groups):
            table = file.read_row_group(group, columns=columns)
            actual = table.column(0).to_numpy()
            predicted = table.column(1).to_numpy()
            candidate = index = None
            if key.kind == "compare":
                candidate = table.column(2).to_numpy()
            elif key.kind == "rollout":
                found = pc.index_in(table.column(2), value_set=versions)
                index = np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.int8)
            scores = ChunkScores(predicted, candidate=candidate, version_index=index)
            tally(summary, np.zeros(table.num_rows, dtype=np.int8), actual, scores)
    reasons = pq.read_table(staging.rejects_file, columns=["reason"]).column(0)
    codes = pc.index_in(reasons, value_set=pa.array(REJECT_REASONS, type=pa.string()))
    if codes.null_count:  # cannot happen unless the files were changed under the job
        raise DataError(f"unknown reject reasons in {staging.rejects_file}")
    codes_np = np.asarray(codes.to_numpy(), dtype=np.int8) + 1
    none = np.empty(0, dtype=np.float64)
    tally(summary, codes_np, none, ChunkScores(none))
