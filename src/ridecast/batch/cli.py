"""``ridecast batch …``: score a month, or backfill a range of months, into parquet or SQL."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.progress import Progress, Task
    from rich.text import Text

    from ridecast.batch.backfill import MonthOutcome
    from ridecast.batch.job import ScoreSummary
    from ridecast.batch.plan import ScoringPlan
    from ridecast.batch.predlog import BatchLog
    from ridecast.batch.sinks import DirectorySink, SqlSink
    from ridecast.data.schema import Month, TaxiType
    from ridecast.monitoring.batch_results import BatchResults
    from ridecast.rollout.state import RolloutState
    from ridecast.settings import Settings

batch_app = typer.Typer(
    help="Score TLC months with a registered model: parquet or SQL in, parquet or SQL out; "
    "idempotent, atomic, bounded in memory.",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)

TaxiTypeOption = Annotated[str, typer.Option("--taxi-type", help="green or yellow.")]
ModelOption = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="Duration model to score with: models:/NAME@ALIAS or models:/NAME/N."
    ),
]
SourceTableOption = Annotated[
    str, typer.Option("--source-table", help="Table of TLC columns when --source is a URL.")
]
SinkOption = Annotated[
    str | None,
    typer.Option(
        "--sink",
        help="A folder (parquet under taxi_type=/year=/month=) or a database URL "
        "(sqlite:///scores.db, postgresql+psycopg://user@host/db). \\[default: <home>/predictions]",
        show_default=False,
    ),
]
SinkTableOption = Annotated[
    str | None,
    typer.Option(
        "--sink-table",
        help="Predictions table. \\[default: ride_predictions; with --candidate ride_comparisons; "
        "following a rollout ride_rollout_predictions]",
        show_default=False,
    ),
]
RejectsTableOption = Annotated[
    str, typer.Option("--rejects-table", help="Table of rows that could not be scored, with why.")
]
ChunkOption = Annotated[
    int | None,
    typer.Option(
        "--chunk-rows",
        min=100,
        max=5_000_000,
        help="Rows read, scored and written at a time; bounds memory. "
        "\\[default: 250000; env RIDECAST_BATCH_CHUNK_ROWS]",
        show_default=False,
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder of TLC month files, used when --source is not given "
        "(env RIDECAST_DATA_DIR; default <home>/data).",
        show_default=False,
    ),
]
CacheOption = Annotated[
    bool | None,
    typer.Option(
        "--model-cache/--no-model-cache",
        help="Reuse this version's model from <home>/cache/models (the registry still picks "
        "the version). \\[default: on; env RIDECAST_BATCH_MODEL_CACHE]",
        show_default=False,
    ),
]
CandidateOption = Annotated[
    str | None,
    typer.Option(
        "--candidate",
        help="Also score every row with this version (models:/NAME@ALIAS or models:/NAME/N) and "
        "write both predictions, their difference and both errors, with a comparison summary.",
        show_default=False,
    ),
]
FollowOption = Annotated[
    bool,
    typer.Option(
        "--follow-rollout/--no-follow-rollout",
        help="When the model has an active rollout, route each row by its ride id as the "
        "rollout's router does (per-row model_version, arm, rollout_id). --no-follow-rollout "
        "scores every row with the alias's version.",
    ),
]
LogOption = Annotated[
    bool | None,
    typer.Option(
        "--log-predictions/--no-log-predictions",
        help="Write every answer to the prediction log (with version, arm, rollout id). "
        "\\[default: on with --candidate or when following a rollout, else off]",
        show_default=False,
    ),
]
EngineOption = Annotated[
    str,
    typer.Option(
        "--engine",
        help="local (this process, numpy) or spark (Apache Spark; pip install 'ridecast[spark]', "
        "Java 17+; parquet files in, a parquet folder out; see docs/batch.md).",
    ),
]
MasterOption = Annotated[
    str | None,
    typer.Option(
        "--master",
        help="Spark master URL for --engine spark (local[2], spark://host:7077, yarn, "
        "k8s://…). \\[default: local[*], or the one spark-submit was given]",
        show_default=False,
    ),
]


def _engine(engine: str, master: str | None) -> str:
    from ridecast.errors import DataError

    if engine not in ("local", "spark"):
        raise DataError(f"--engine {engine!r} is not an engine; expected local or spark")
    if master is not None and engine != "spark":
        raise DataError("--master is an option of --engine spark")
    return engine


def register(app: typer.Typer) -> None:
    app.add_typer(batch_app, name="batch")


@batch_app.command("score")
def score(
    month: Annotated[str, typer.Option("--month", help="Month to score, YYYY-MM.")],
    taxi_type: TaxiTypeOption = "green",
    model: ModelOption = "models:/ride-duration@champion",
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="A TLC parquet file, a folder holding the month's TLC file, a glob of files, or "
            "a database URL (sqlite:///trips.db, postgresql+psycopg://…). "
            "\\[default: the month's file in the data folder]",
            show_default=False,
        ),
    ] = None,
    source_table: SourceTableOption = "trips",
    sink: SinkOption = None,
    sink_table: SinkTableOption = None,
    rejects_table: RejectsTableOption = "ride_rejects",
    chunk_rows: ChunkOption = None,
    min_duration: Annotated[
        float, typer.Option("--min-duration", help="Shortest ride scored, minutes (as the course).")
    ] = 1.0,
    max_duration: Annotated[
        float, typer.Option("--max-duration", help="Longest ride scored, minutes (as the course).")
    ] = 60.0,
    data_dir: DataDirOption = None,
    model_cache: CacheOption = None,
    candidate: CandidateOption = None,
    follow_rollout: FollowOption = True,
    log_predictions: LogOption = None,
    engine: EngineOption = "local",
    master: MasterOption = None,
) -> None:
    """Score one month and replace its results in the sink (a rerun never duplicates rows)."""
    from ridecast.data.schema import parse_month, parse_taxi_type
    from ridecast.errors import DataError
    from ridecast.settings import get_settings

    # Cheap checks first, so a typo is reported before the model and data libraries load.
    kind, when = parse_taxi_type(taxi_type), parse_month(month)
    if min_duration > max_duration:
        raise DataError(f"--min-duration {min_duration} is above --max-duration {max_duration}")
    settings = get_settings()
    if _engine(engine, master) == "spark":
        from ridecast.batch import spark_cli

        spark_cli.check_options(sink, log_predictions)
        spark_summary = spark_cli.score_command(
            console,
            settings,
            month=when,
            kind=kind,
            model=model,
            candidate=candidate,
            source=source,
            sink=sink,
            master=master,
            chunk_rows=chunk_rows or settings.batch_chunk_rows,
            min_duration=min_duration,
            max_duration=max_duration,
            data_dir=data_dir or settings.resolved_data_dir,
            model_cache=model_cache,
            follow_rollout=follow_rollout,
        )
        _publish_metrics(settings, spark_summary)
        return
    _open_sink(settings, sink, sink_table or "ride_predictions", rejects_table)  # checks only

    from ridecast.batch.sources import open_source

    trips = open_source(
        source,
        taxi_type=kind,
        month=when,
        data_dir=data_dir or settings.resolved_data_dir,
        table=source_table,
    )
    from ridecast.batch.job import score_month

    plan = _plan(settings, model, candidate, follow_rollout, model_cache)
    target = _open_sink(settings, sink, _table(sink_table, plan), rejects_table)
    console.print(
        f"scoring {kind.value} {when} with {_describe(plan)} from {trips} into {target}",
        markup=False,  # paths and globs may hold brackets
        highlight=False,
    )
    log = _open_log(settings, plan, log_predictions)
    try:
        with _progress() as progress:
            task = progress.add_task(f"{kind.value} {when}", total=trips.total_rows)
            summary = score_month(
                kind,
                when,
                plan,
                trips,
                target,
                chunk_rows=chunk_rows or settings.batch_chunk_rows,
                min_duration=min_duration,
                max_duration=max_duration,
                on_chunk=lambda rows: progress.advance(task, rows),
                log=log,
                results=_results(settings),
            )
    finally:
        if log is not None:
            log.close()
    from ridecast.batch.report import print_summary

    print_summary(console, summary, target)
    _publish_metrics(settings, summary)


@batch_app.command("backfill")
def backfill_command(
    start: Annotated[str, typer.Option("--from", help="First month, YYYY-MM.")],
    end: Annotated[str, typer.Option("--to", help="Last month, YYYY-MM (included).")],
    taxi_type: TaxiTypeOption = "green",
    model: ModelOption = "models:/ride-duration@champion",
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="A folder of TLC month files or a database URL; each month is taken from it. "
            "\\[default: the data folder]",
            show_default=False,
        ),
    ] = None,
    source_table: SourceTableOption = "trips",
    sink: SinkOption = None,
    sink_table: SinkTableOption = None,
    rejects_table: RejectsTableOption = "ride_rejects",
    force: Annotated[
        bool, typer.Option("--force", help="Score months again even if this version did already.")
    ] = False,
    chunk_rows: ChunkOption = None,
    data_dir: DataDirOption = None,
    model_cache: CacheOption = None,
    candidate: CandidateOption = None,
    follow_rollout: FollowOption = True,
    log_predictions: LogOption = None,
    engine: EngineOption = "local",
    master: MasterOption = None,
) -> None:
    """Score every month from --from to --to, one line per month; rerun it to resume."""
    from ridecast.data.schema import month_range, parse_month, parse_taxi_type
    from ridecast.errors import DataError, RidecastError
    from ridecast.settings import get_settings

    settings = get_settings()
    kind = parse_taxi_type(taxi_type)
    months = month_range(parse_month(start), parse_month(end))
    if source is not None and "://" not in source and not Path(source).is_dir():
        raise DataError(
            f"backfill --source {source} must be a folder of TLC month files or a database URL "
            "(each month is looked up in it); use `ridecast batch score` for a single file"
        )

    def report(outcome: MonthOutcome) -> None:
        from ridecast.batch.report import month_line

        console.print(month_line(outcome), markup=False, highlight=False)  # errors name paths
        if outcome.summary is not None and outcome.status == "scored":
            _publish_metrics(settings, outcome.summary)

    if _engine(engine, master) == "spark":
        from ridecast.batch import spark_cli

        spark_cli.check_options(sink, log_predictions)
        outcomes = spark_cli.backfill_command(
            console,
            settings,
            months=months,
            kind=kind,
            model=model,
            candidate=candidate,
            source=source,
            sink=sink,
            master=master,
            force=force,
            chunk_rows=chunk_rows or settings.batch_chunk_rows,
            data_dir=data_dir or settings.resolved_data_dir,
            model_cache=model_cache,
            follow_rollout=follow_rollout,
            on_month=report,
        )
    else:
        outcomes = _backfill_local(
            settings, kind, months, model, source, source_table, sink, sink_table,
            rejects_table, force, chunk_rows, data_dir, model_cache, candidate,
            follow_rollout, log_predictions, report,
        )  # fmt: skip
    failed = [o for o in outcomes if o.status == "failed"]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("scored", "skipped", "failed")}
    console.print(
        f"{counts['scored']} scored, {counts['skipped']} skipped, {counts['failed']} failed",
        highlight=False,
    )
    if failed:
        raise RidecastError(
            f"{len(failed)} of {len(months)} months failed "
            f"({', '.join(str(o.month) for o in failed)}); "
            "fix their input and run the same backfill again: finished months are skipped"
        )


def _backfill_local(
    settings: Settings,
    kind: TaxiType,
    months: list[Month],
    model: str,
    source: str | None,
    source_table: str,
    sink: str | None,
    sink_table: str | None,
    rejects_table: str,
    force: bool,
    chunk_rows: int | None,
    data_dir: Path | None,
    model_cache: bool | None,
    candidate: str | None,
    follow_rollout: bool,
    log_predictions: bool | None,
    report: Callable[[MonthOutcome], None],
) -> list[MonthOutcome]:
    from ridecast.batch.backfill import backfill
    from ridecast.batch.job import score_month
    from ridecast.batch.sources import TripSource

    _open_sink(settings, sink, sink_table or "ride_predictions", rejects_table)  # checks only
    plan = _plan(settings, model, candidate, follow_rollout, model_cache)
    target = _open_sink(settings, sink, _table(sink_table, plan), rejects_table)
    console.print(
        f"backfill {kind.value} {months[0]}..{months[-1]} ({len(months)} months) with "
        f"{_describe(plan)} into {target}",
        markup=False,
        highlight=False,
    )
    rows = chunk_rows or settings.batch_chunk_rows
    log = _open_log(settings, plan, log_predictions)

    def score_one(month: Month, trips: TripSource) -> ScoreSummary:
        with _progress(transient=True) as progress:
            task = progress.add_task(f"{kind.value} {month}", total=trips.total_rows)
            return score_month(
                kind,
                month,
                plan,
                trips,
                target,
                chunk_rows=rows,
                on_chunk=lambda n: progress.advance(task, n),
                log=log,
                results=_results(settings),
            )

    try:
        return backfill(
            kind,
            months,
            plan,
            target,
            source=source,
            data_dir=data_dir or settings.resolved_data_dir,
            source_table=source_table,
            force=force,
            score=score_one,
            on_month=report,
        )
    finally:
        if log is not None:
            log.close()


def _plan(
    settings: Settings,
    model: str,
    candidate: str | None,
    follow_rollout: bool,
    model_cache: bool | None,
) -> ScoringPlan:
    """What the job scores with, through the registry's one loading path."""
    from ridecast.batch.plan import plan_job

    if model_cache is not None:
        settings = settings.model_copy(update={"batch_model_cache": model_cache})
    return plan_job(settings, model, candidate_uri=candidate, follow_rollout=follow_rollout)


def _table(sink_table: str | None, plan: ScoringPlan) -> str:
    from ridecast.batch.outputs import DEFAULT_TABLES

    return sink_table or DEFAULT_TABLES[plan.kind]


def _describe(plan: ScoringPlan) -> str:
    stable = plan.stable
    if plan.candidate is not None:
        return f"{stable.name} v{stable.version} and candidate v{plan.candidate.version}"
    if plan.deployment is not None and plan.deployment.state is not None:
        state = plan.deployment.state
        return (
            f"{stable.name} split by rollout {state.id} ({state.strategy}, "
            f"{100 - state.weight}% v{state.stable_version} / {state.weight}% "
            f"v{state.candidate_version}, by ride id)"
        )
    return f"{stable.name} v{stable.version}"


def _results(settings: Settings) -> BatchResults:
    """Where each month's summary goes for the dashboard: the prediction log's database."""
    from ridecast.monitoring.batch_results import BatchResults

    return BatchResults(settings.resolved_prediction_log_url)


def _open_log(settings: Settings, plan: ScoringPlan, wanted: bool | None) -> BatchLog | None:
    """The prediction log, when asked for (default: when the job follows a rollout or scores a
    candidate, since those answers are evidence for a rollout's analysis)."""
    if wanted is None:
        wanted = plan.kind != "score"
    if not wanted:
        return None
    from ridecast.batch.predlog import BatchLog

    rollout = _rollout_of(settings, plan)
    if rollout is None:
        return BatchLog(settings.resolved_prediction_log_url, rollout_id=plan.rollout_id)
    return BatchLog(
        settings.resolved_prediction_log_url, rollout_id=rollout.id, stable_arm=rollout.stable_arm
    )


def _rollout_of(settings: Settings, plan: ScoringPlan) -> RolloutState | None:
    """For a --candidate run: the active rollout between the same two versions, if any."""
    if plan.rollout_id is not None or plan.candidate is None:
        return None
    try:
        from ridecast.control.store import store_for

        state = store_for(settings).active(plan.stable.name)
    except Exception:  # no state store: the answers are logged without a rollout id
        return None
    if state is not None and (state.stable_version, state.candidate_version) == (
        plan.stable.version,
        plan.candidate.version,
    ):
        return state
    return None


def _open_sink(
    settings: Settings, sink: str | None, table: str, rejects_table: str
) -> DirectorySink | SqlSink:
    from ridecast.batch.sinks import open_sink

    return open_sink(
        sink if sink is not None else settings.home / "predictions",
        table=table,
        rejects_table=rejects_table,
    )


def _progress(*, transient: bool = False) -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RowsPerSecond(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} rows/s" if speed else "", style="progress.data.speed")

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        RowsPerSecond(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=not console.is_terminal,
    )


def _publish_metrics(settings: Settings, summary: ScoreSummary) -> None:
    """Hand the run's metrics to Prometheus when a Pushgateway or textfile folder is set; a
    failure is said and does not fail the run (its results are written)."""
    from ridecast.batch.metrics import publish_run

    try:
        went = publish_run(summary, settings)
    except OSError as exc:
        console.print(
            f"[yellow]warning:[/] the run's metrics were not published: {escape(str(exc))}"
        )
        return
    if went:
        console.print(f"metrics published to {', '.join(went)}", markup=False, highlight=False)
