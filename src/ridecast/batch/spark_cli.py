"""``ridecast batch score|backfill --engine spark``: the commands' Spark side.

Imported only when ``--engine spark`` is given, so the local engine never loads pyspark. What the
Spark engine does not do is refused before anything is loaded, with one line saying why and what
to use instead (exit status 2).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ridecast.errors import DataError, RidecastError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from rich.console import Console

    from ridecast.batch.backfill import MonthOutcome
    from ridecast.batch.job import ScoreSummary
    from ridecast.batch.plan import ScoringPlan
    from ridecast.batch.sinks import DirectorySink
    from ridecast.data.schema import Month, TaxiType
    from ridecast.monitoring.batch_results import BatchResults
    from ridecast.settings import Settings

SQL_SINK_REFUSED = (
    "--engine spark writes a partitioned parquet folder, not a database: the SQL sink replaces a "
    "month in one transaction on one connection, which Spark's parallel writers cannot share; "
    "pass a folder as --sink, or use --engine local for {sink}"
)
LOG_REFUSED = (
    "--log-predictions is not supported by --engine spark: the prediction log is one writer on "
    "one database, which executors on other machines may not reach (SQLite by default); use "
    "--engine local to log the answers"
)


def check_options(sink: str | None, log_predictions: bool | None) -> None:
    """Refuse, in one line, what only the local engine does."""
    if sink is not None and "://" in sink:
        raise DataError(SQL_SINK_REFUSED.format(sink=sink))
    if log_predictions:
        raise RidecastError(LOG_REFUSED)


def load_plan(
    settings: Settings,
    model: str,
    candidate: str | None,
    follow_rollout: bool,
    model_cache: bool | None,
) -> ScoringPlan:
    """What the job scores with: the local engine's plan (one version, a candidate beside it,
    or the active rollout's split), through the registry's one loading path."""
    from ridecast.batch.cli import _plan

    return _plan(settings, model, candidate, follow_rollout, model_cache)


def _started(console: Console, plan: ScoringPlan, what: str, spark: SparkSession) -> None:
    from ridecast.batch.cli import _describe

    master = spark.sparkContext.master
    # Not markup: paths and names may hold brackets ('ridecast[spark]', globs).
    console.print(
        f"{what} with {_describe(plan)} on Spark ({master})", markup=False, highlight=False
    )
    if plan.kind != "score":
        console.print(
            "  the answers are not written to the prediction log (--engine spark does not "
            "write it; --engine local does)",
            markup=False,
            highlight=False,
        )


def run_months(
    console: Console,
    spark: SparkSession,
    plan: ScoringPlan,
    sink: DirectorySink,
    kind: TaxiType,
    *,
    chunk_rows: int,
    min_duration: float = 1.0,
    max_duration: float = 60.0,
    transient: bool = False,
    results: BatchResults | None = None,
) -> Callable[[Month, Any], ScoreSummary]:
    """A function scoring one month on ``spark`` with a progress bar (one line per stage,
    advanced by Spark's finished tasks)."""
    from ridecast.batch.spark_engine import score_month_spark

    def score_one(month: Month, trips: Any) -> ScoreSummary:
        with spark_progress(console, spark, f"{kind.value} {month}", transient) as on_stage:
            return score_month_spark(
                spark,
                kind,
                month,
                plan,
                trips,
                sink,
                chunk_rows=chunk_rows,
                min_duration=min_duration,
                max_duration=max_duration,
                on_stage=on_stage,
                results=results,
            )

    return score_one


@contextmanager
def spark_progress(
    console: Console, spark: SparkSession, label: str, transient: bool = False
) -> Iterator[Callable[[str], None]]:
    """A Rich progress bar of the month's stages (predictions, rejects, commit); while a stage
    runs, its bar follows the tasks Spark has finished. Yields the ``on_stage`` callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tasks"),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
        disable=not console.is_terminal,
    )
    tracker = spark.sparkContext.statusTracker()
    current: dict[str, Any] = {}
    stop = threading.Event()

    def on_stage(name: str) -> None:
        previous = current.get("task")
        if previous is not None:
            task = progress.tasks[previous]
            progress.update(previous, completed=task.total or 1, total=task.total or 1)
        current["task"] = progress.add_task(f"{label} · {name}", total=None)

    def follow() -> None:
        while not stop.wait(0.5):
            task = current.get("task")
            if task is None:
                continue
            done = total = 0
            for stage_id in tracker.getActiveStageIds():
                info = tracker.getStageInfo(stage_id)
                if info is not None:
                    done += info.numCompletedTasks
                    total += info.numTasks
            if total:
                progress.update(task, completed=done, total=total)

    watcher = threading.Thread(target=follow, name="ridecast-spark-progress", daemon=True)
    with progress:
        watcher.start()
        try:
            yield on_stage
            on_stage("done")
        finally:
            stop.set()
            watcher.join(timeout=2)


def score_command(
    console: Console,
    settings: Settings,
    *,
    month: Month,
    kind: TaxiType,
    model: str,
    candidate: str | None,
    source: str | None,
    sink: str | None,
    master: str | None,
    chunk_rows: int,
    min_duration: float,
    max_duration: float,
    data_dir: Path,
    model_cache: bool | None,
    follow_rollout: bool,
) -> ScoreSummary:
    """``ridecast batch score --engine spark``; prints the local engine's summary."""
    from ridecast.batch.cli import _results
    from ridecast.batch.report import print_summary
    from ridecast.batch.sinks import DirectorySink
    from ridecast.batch.spark_input import is_hadoop_path, open_spark_input
    from ridecast.batch.spark_session import require_spark, start_session

    require_spark()
    target = DirectorySink(Path(sink) if sink is not None else settings.home / "predictions")
    hadoop = source is not None and is_hadoop_path(source)
    # Local input is checked before Spark starts (seconds), a Hadoop path once it has.
    trips = None
    if not hadoop:
        trips = open_spark_input(None, source, taxi_type=kind, month=month, data_dir=data_dir)
    plan = load_plan(settings, model, candidate, follow_rollout, model_cache)
    spark = start_session(master)
    if trips is None:
        trips = open_spark_input(spark, source, taxi_type=kind, month=month, data_dir=data_dir)
    _started(console, plan, f"scoring {kind.value} {month} from {trips} into {target}", spark)
    score_one = run_months(
        console,
        spark,
        plan,
        target,
        kind,
        chunk_rows=chunk_rows,
        min_duration=min_duration,
        max_duration=max_duration,
        results=_results(settings),
    )
    summary = score_one(month, trips)
    print_summary(console, summary, target)
    return summary


def backfill_command(
    console: Console,
    settings: Settings,
    *,
    months: list[Month],
    kind: TaxiType,
    model: str,
    candidate: str | None,
    source: str | None,
    sink: str | None,
    master: str | None,
    force: bool,
    chunk_rows: int,
    data_dir: Path,
    model_cache: bool | None,
    follow_rollout: bool,
    on_month: Callable[[MonthOutcome], None],
) -> list[MonthOutcome]:
    """``ridecast batch backfill --engine spark``: the local engine's backfill (skip what this
    plan scored, resume after a failure), each month scored on one Spark session."""
    from ridecast.batch.backfill import backfill
    from ridecast.batch.cli import _results
    from ridecast.batch.sinks import DirectorySink
    from ridecast.batch.spark_input import open_spark_input
    from ridecast.batch.spark_session import require_spark, start_session

    require_spark()
    target = DirectorySink(Path(sink) if sink is not None else settings.home / "predictions")
    plan = load_plan(settings, model, candidate, follow_rollout, model_cache)
    spark = start_session(master)
    span = f"{months[0]}..{months[-1]} ({len(months)} months)"
    _started(console, plan, f"backfill {kind.value} {span} into {target}", spark)
    score_one = run_months(
        console,
        spark,
        plan,
        target,
        kind,
        chunk_rows=chunk_rows,
        transient=True,
        results=_results(settings),
    )

    def open_month(month: Month) -> Any:
        return open_spark_input(spark, source, taxi_type=kind, month=month, data_dir=data_dir)

    return backfill(
        kind,
        months,
        plan,
        target,
        source=source,
        data_dir=data_dir,
        force=force,
        score=score_one,
        on_month=on_month,
        open_month=open_month,
    )
