"""The monthly batch job as Prefect flows: score one month, or backfill a range with retries.

The flows are thin over :mod:`ridecast.batch`. They build the job with the same helpers as
``ridecast batch score|backfill`` (the same plan, sink and prediction log), score with
:func:`ridecast.batch.job.score_month` and :func:`ridecast.batch.backfill.backfill`, and report
what a run did as Prefect table artifacts. Their outputs are therefore the batch commands'
outputs: the same partitions, the same rows, replaced (never duplicated) by a rerun.

- :func:`score_month` is the course's monthly ``score.py``. Without ``month`` it scores the month
  before the run's scheduled date, so the ``0 3 2 * *`` schedule scores last month.
- :func:`backfill` runs one task per month, each retried on failure; a month already scored by
  the same version is skipped, so a rerun resumes where a failed or killed run stopped.

A bad input (a :class:`ridecast.errors.RidecastError`) fails the flow run with its one-line
message as the state's message, not a traceback. This module imports Prefect (the optional extra
``ridecast[prefect]``); nothing else in ridecast imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State
from prefect.utilities.annotations import quote

from ridecast.batch import cli as batch_cli
from ridecast.batch.backfill import MonthOutcome
from ridecast.batch.backfill import backfill as backfill_months
from ridecast.batch.job import MAX_DURATION, MIN_DURATION, REJECT_REASONS, ScoreSummary
from ridecast.batch.job import score_month as score_one_month
from ridecast.data.schema import Month, TaxiType, month_range, parse_month, parse_taxi_type
from ridecast.errors import DataError, RidecastError

if TYPE_CHECKING:
    from ridecast.batch.plan import ScoringPlan
    from ridecast.batch.predlog import BatchLog
    from ridecast.batch.sinks import DirectorySink, SqlSink
    from ridecast.batch.sources import TripSource
    from ridecast.settings import Settings

DEFAULT_MODEL = "models:/ride-duration@champion"
SCORE_FLOW = "ridecast-score-month"
BACKFILL_FLOW = "ridecast-backfill"


class MonthFailed(RidecastError):
    """A month of a backfill could not be scored (its task is retried, then reported)."""


@dataclass
class Job:
    """What every month of one run is scored with, decided once at the start (as the batch
    commands do): the plan (versions resolved once), the sink and the prediction log."""

    taxi_type: TaxiType
    plan: ScoringPlan
    sink: DirectorySink | SqlSink
    settings: Settings
    log: BatchLog | None
    chunk_rows: int
    min_duration: float = MIN_DURATION
    max_duration: float = MAX_DURATION

    def score(self, month: Month, trips: TripSource) -> ScoreSummary:
        return score_one_month(
            self.taxi_type,
            month,
            self.plan,
            trips,
            self.sink,
            chunk_rows=self.chunk_rows,
            min_duration=self.min_duration,
            max_duration=self.max_duration,
            log=self.log,
            results=batch_cli._results(self.settings),  # each month's summary, for the dashboard
        )

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def _job(
    taxi_type: str,
    model: str,
    *,
    sink: str | None,
    sink_table: str | None,
    rejects_table: str,
    chunk_rows: int | None,
    follow_rollout: bool,
    log_predictions: bool | None,
) -> Job:
    """The job as ``ridecast batch score`` builds it, through the batch CLI's own helpers."""
    from ridecast.settings import get_settings

    kind = parse_taxi_type(taxi_type)
    settings = get_settings()
    batch_cli._open_sink(settings, sink, sink_table or "ride_predictions", rejects_table)  # checks
    plan = batch_cli._plan(settings, model, None, follow_rollout, None)
    target = batch_cli._open_sink(settings, sink, batch_cli._table(sink_table, plan), rejects_table)
    log = batch_cli._open_log(settings, plan, log_predictions)
    return Job(kind, plan, target, settings, log, chunk_rows or settings.batch_chunk_rows)


def _failed(exc: RidecastError) -> State[Any]:
    """End the flow run as Failed with the error's own message (no traceback in the logs); a
    direct call of the flow raises ``exc`` itself."""
    get_run_logger().error("%s", exc)
    return Failed(message=str(exc), data=exc)


def run_month() -> Month:
    """The month a run without ``month`` scores: the one before the run's scheduled date."""
    from prefect.runtime import flow_run

    when = flow_run.scheduled_start_time
    return Month(when.year, when.month).prev()


@task(cache_policy=NO_CACHE, persist_result=False)
def score_task(job: Job, month: Month, trips: TripSource) -> ScoreSummary:
    return job.score(month, trips)


@flow(name=SCORE_FLOW, persist_result=False, validate_parameters=True)
def score_month(
    month: str | None = None,
    taxi_type: str = "green",
    model: str = DEFAULT_MODEL,
    source: str | None = None,
    source_table: str = "trips",
    sink: str | None = None,
    sink_table: str | None = None,
    rejects_table: str = "ride_rejects",
    chunk_rows: int | None = None,
    min_duration: float = MIN_DURATION,
    max_duration: float = MAX_DURATION,
    data_dir: str | None = None,
    follow_rollout: bool = True,
    log_predictions: bool | None = None,
) -> ScoreSummary | State[Any]:
    """Score one month (default: the month before the run date) and replace its results in the
    sink, as ``ridecast batch score`` does; report rows and rejects as a table artifact."""
    logger = get_run_logger()
    job = None
    try:
        kind = parse_taxi_type(taxi_type)
        when = parse_month(month) if month is not None else run_month()
        if min_duration > max_duration:
            raise DataError(f"min_duration {min_duration} is above max_duration {max_duration}")
        from ridecast.batch.sources import open_source
        from ridecast.settings import get_settings

        # The input is checked before the model loads, and outside a task: a missing month
        # fails the run with one line, not a task's traceback.
        trips = open_source(
            source,
            taxi_type=kind,
            month=when,
            data_dir=Path(data_dir) if data_dir else get_settings().resolved_data_dir,
            table=source_table,
        )
        job = _job(
            taxi_type,
            model,
            sink=sink,
            sink_table=sink_table,
            rejects_table=rejects_table,
            chunk_rows=chunk_rows,
            follow_rollout=follow_rollout,
            log_predictions=log_predictions,
        )
        job.min_duration, job.max_duration = min_duration, max_duration
        logger.info(
            "scoring %s %s with %s from %s into %s",
            kind.value,
            when,
            batch_cli._describe(job.plan),
            trips,
            job.sink,
        )
        scored = score_task.with_options(task_run_name=f"score-{kind.value}-{when}")(
            quote(job), when, quote(trips), return_state=True
        )
        summary = scored.result()  # raises the task's error, if it failed
    except RidecastError as exc:
        return _failed(exc)
    finally:
        if job is not None:
            job.close()
    report_month(summary)
    logger.info(
        "%s %s: %s read, %s scored, %s rejected in %.1fs, run %s",
        kind.value,
        when,
        f"{summary.rows_read:,}",
        f"{summary.rows_scored:,}",
        f"{summary.rows_rejected:,}",
        summary.seconds,
        summary.run_id,
    )
    return summary


@task(cache_policy=NO_CACHE, persist_result=False)
def backfill_task(
    job: Job,
    month: Month,
    source: str | None,
    data_dir: Path,
    source_table: str,
    force: bool,
) -> MonthOutcome:
    """One month of a backfill, skipped when done; a failure raises, so the task is retried."""
    (outcome,) = backfill_months(
        job.taxi_type,
        [month],
        job.plan,
        job.sink,
        source=source,
        data_dir=data_dir,
        source_table=source_table,
        force=force,
        score=job.score,
    )
    if outcome.status == "failed":
        raise MonthFailed(outcome.error or f"{month} failed")
    if outcome.summary is not None:
        report_month(outcome.summary)
    return outcome


@flow(name=BACKFILL_FLOW, persist_result=False, validate_parameters=True)
def backfill(
    start: str,
    end: str,
    taxi_type: str = "green",
    model: str = DEFAULT_MODEL,
    source: str | None = None,
    source_table: str = "trips",
    sink: str | None = None,
    sink_table: str | None = None,
    rejects_table: str = "ride_rejects",
    force: bool = False,
    chunk_rows: int | None = None,
    data_dir: str | None = None,
    follow_rollout: bool = True,
    log_predictions: bool | None = None,
    retries: int = 2,
    retry_delay_seconds: float = 60.0,
) -> list[MonthOutcome] | State[Any]:
    """Score every month from ``start`` to ``end`` (included), one task per month with
    ``retries``; months this version already scored are skipped, so a rerun resumes. The run
    fails, after every month was tried, if one of them failed."""
    from ridecast.batch.report import month_line
    from ridecast.settings import get_settings

    logger = get_run_logger()
    job = None
    try:
        months = month_range(parse_month(start), parse_month(end))
        if source is not None and "://" not in source and not Path(source).is_dir():
            raise DataError(
                f"backfill source {source} must be a folder of TLC month files or a database "
                "URL (each month is looked up in it); use the score_month flow for one file"
            )
        if retries < 0 or retry_delay_seconds < 0:
            raise DataError("retries and retry_delay_seconds must be 0 or more")
        job = _job(
            taxi_type,
            model,
            sink=sink,
            sink_table=sink_table,
            rejects_table=rejects_table,
            chunk_rows=chunk_rows,
            follow_rollout=follow_rollout,
            log_predictions=log_predictions,
        )
        folder = Path(data_dir) if data_dir else get_settings().resolved_data_dir
        logger.info(
            "backfill %s %s..%s (%d months) with %s into %s",
            job.taxi_type.value,
            months[0],
            months[-1],
            len(months),
            batch_cli._describe(job.plan),
            job.sink,
        )
        outcomes = []
        for month in months:
            one = backfill_task.with_options(
                task_run_name=f"backfill-{job.taxi_type.value}-{month}",
                retries=retries,
                retry_delay_seconds=retry_delay_seconds,
            )
            state = one(quote(job), month, source, folder, source_table, force, return_state=True)
            if state.is_completed():
                outcome = state.result()
            else:
                error = state.result(raise_on_failure=False)
                outcome = MonthOutcome(month, "failed", error=str(error))
            logger.info("%s", month_line(outcome))
            outcomes.append(outcome)
        report_backfill(job.taxi_type, outcomes)
        failed = [o for o in outcomes if o.status == "failed"]
        if failed:
            raise RidecastError(
                f"{len(failed)} of {len(months)} months failed "
                f"({', '.join(str(o.month) for o in failed)}); fix their input and run the same "
                "backfill again: finished months are skipped"
            )
    except RidecastError as exc:
        return _failed(exc)
    finally:
        if job is not None:
            job.close()
    return outcomes


def month_rows(summary: ScoreSummary) -> list[dict[str, Any]]:
    """The rows of a month's artifact: rows read, scored, rejected, then rejects by reason."""
    totals = [
        ("read", summary.rows_read),
        ("scored", summary.rows_scored),
        ("rejected", summary.rows_rejected),
    ]
    reasons = [(f"rejected: {r}", summary.rejected.get(r, 0)) for r in REJECT_REASONS]
    return [{"rows": name, "count": count} for name, count in totals + reasons]


def artifact_key(taxi_type: TaxiType, month: Month | None = None) -> str:
    """Artifact keys (lowercase letters, digits and dashes): one per month, one per backfill."""
    return (
        f"ridecast-{taxi_type.value}-{month}" if month else f"ridecast-backfill-{taxi_type.value}"
    )


def report_month(summary: ScoreSummary) -> None:
    s = summary
    create_table_artifact(
        month_rows(s),
        key=artifact_key(s.taxi_type, s.month),
        description=(
            f"**{s.taxi_type.value} {s.month}** scored by {s.model_name} v{s.model_version} "
            f"(run `{s.run_id}`) into `{s.sink}`: predicted duration mean {s.mean:.2f} min, "
            f"RMSE against actual {s.rmse:.2f} min, {s.seconds:.1f} s."
        ),
    )


def report_backfill(taxi_type: TaxiType, outcomes: list[MonthOutcome]) -> None:
    rows = []
    for o in outcomes:
        s, previous = o.summary, o.previous or {}
        rows.append(
            {
                "month": str(o.month),
                "status": o.status,
                "read": s.rows_read if s else previous.get("rows_read"),
                "scored": s.rows_scored if s else previous.get("rows_scored"),
                "rejected": s.rows_rejected if s else previous.get("rows_rejected"),
                "run": s.run_id if s else previous.get("run_id"),
                "error": o.error or "",
            }
        )
    counts = {s: sum(o.status == s for o in outcomes) for s in ("scored", "skipped", "failed")}
    create_table_artifact(
        rows,
        key=artifact_key(taxi_type),
        description=(
            f"backfill {taxi_type.value} {outcomes[0].month}..{outcomes[-1].month}: "
            f"{counts['scored']} scored, {counts['skipped']} skipped (already scored by this "
            f"version), {counts['failed']} failed"
        ),
    )
