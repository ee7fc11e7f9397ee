"""``ridecast batch …``: score a month, or backfill a range of months, into parquet or SQL."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress, Task
    from rich.text import Text

    from ridecast.batch.backfill import MonthOutcome
    from ridecast.batch.job import ScoreSummary
    from ridecast.batch.sinks import DirectorySink, SqlSink
    from ridecast.data.schema import Month
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
        "(sqlite:///scores.db, postgresql+psycopg://user@host/db). [default: <home>/predictions]",
        show_default=False,
    ),
]
SinkTableOption = Annotated[
    str, typer.Option("--sink-table", help="Predictions table, keyed by (ride_id, model_version).")
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
        "[default: 250000; env RIDECAST_BATCH_CHUNK_ROWS]",
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
        help="Reuse this version's model from <home>/cache (the registry still picks the "
        "version). [default: on; env RIDECAST_BATCH_MODEL_CACHE]",
        show_default=False,
    ),
]


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
            "[default: the month's file in the data folder]",
            show_default=False,
        ),
    ] = None,
    source_table: SourceTableOption = "trips",
    sink: SinkOption = None,
    sink_table: SinkTableOption = "ride_predictions",
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
    target = _open_sink(settings, sink, sink_table, rejects_table)

    from ridecast.batch.sources import open_source

    trips = open_source(
        source,
        taxi_type=kind,
        month=when,
        data_dir=data_dir or settings.resolved_data_dir,
        table=source_table,
    )
    from ridecast.batch.job import score_month
    from ridecast.batch.models import load_predictor

    predictor = load_predictor(settings, model, use_cache=model_cache)
    console.print(
        f"scoring {kind.value} {when} with {predictor.name} v{predictor.version} "
        f"from {trips} into {target}",
        highlight=False,
    )
    with _progress() as progress:
        task = progress.add_task(f"{kind.value} {when}", total=trips.total_rows)
        summary = score_month(
            kind,
            when,
            predictor,
            trips,
            target,
            chunk_rows=chunk_rows or settings.batch_chunk_rows,
            min_duration=min_duration,
            max_duration=max_duration,
            on_chunk=lambda rows: progress.advance(task, rows),
        )
    _print_summary(summary, target)


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
            "[default: the data folder]",
            show_default=False,
        ),
    ] = None,
    source_table: SourceTableOption = "trips",
    sink: SinkOption = None,
    sink_table: SinkTableOption = "ride_predictions",
    rejects_table: RejectsTableOption = "ride_rejects",
    force: Annotated[
        bool, typer.Option("--force", help="Score months again even if this version did already.")
    ] = False,
    chunk_rows: ChunkOption = None,
    data_dir: DataDirOption = None,
    model_cache: CacheOption = None,
) -> None:
    """Score every month from --from to --to, one line per month; rerun it to resume."""
    from ridecast.batch.backfill import backfill
    from ridecast.batch.job import score_month
    from ridecast.batch.models import load_predictor
    from ridecast.batch.sources import TripSource
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
    target = _open_sink(settings, sink, sink_table, rejects_table)
    predictor = load_predictor(settings, model, use_cache=model_cache)
    console.print(
        f"backfill {kind.value} {months[0]}..{months[-1]} ({len(months)} months) with "
        f"{predictor.name} v{predictor.version} into {target}",
        highlight=False,
    )
    rows = chunk_rows or settings.batch_chunk_rows

    def score_one(month: Month, trips: TripSource) -> ScoreSummary:
        with _progress(transient=True) as progress:
            task = progress.add_task(f"{kind.value} {month}", total=trips.total_rows)
            return score_month(
                kind,
                month,
                predictor,
                trips,
                target,
                chunk_rows=rows,
                on_chunk=lambda n: progress.advance(task, n),
            )

    def report(outcome: MonthOutcome) -> None:
        console.print(_month_line(outcome), highlight=False)

    outcomes = backfill(
        kind,
        months,
        predictor,
        target,
        source=source,
        data_dir=data_dir or settings.resolved_data_dir,
        source_table=source_table,
        force=force,
        score=score_one,
        on_month=report,
    )
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


def _month_line(outcome: MonthOutcome) -> str:
    if outcome.status == "skipped":
        previous = outcome.previous or {}
        return (
            f"{outcome.month}  skipped   already scored by v{previous.get('model_version', '?')} "
            f"(run {previous.get('run_id', '?')}, {previous.get('rows_scored', 0):,} rows); "
            "--force to redo"
        )
    if outcome.status == "failed":
        return f"{outcome.month}  failed    {outcome.error}"
    s = outcome.summary
    assert s is not None
    return (
        f"{outcome.month}  scored    {s.rows_read:,} read, {s.rows_scored:,} scored, "
        f"{s.rows_rejected:,} rejected, RMSE {s.rmse:.2f} min, {s.seconds:.1f}s"
    )


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


def _print_summary(summary: ScoreSummary, sink: DirectorySink | SqlSink) -> None:
    from ridecast.batch.sinks import DirectorySink, MonthKey

    s = summary
    console.print(
        f"[green]✓[/] {s.taxi_type.value} {s.month}: {s.rows_read:,} rows read, "
        f"{s.rows_scored:,} scored, {s.rows_rejected:,} rejected "
        f"in {s.seconds:.1f}s ({s.rows_per_second:,.0f} rows/s), run {s.run_id}",
        highlight=False,
    )
    reasons = [f"{reason} {count:,}" for reason, count in s.rejected.items() if count]
    if reasons:
        console.print(f"  rejected: {' · '.join(reasons)}", highlight=False)
    console.print(
        f"  predicted duration: mean {s.mean:.2f} min, std {s.std:.2f} min; "
        f"RMSE against actual {s.rmse:.2f} min",
        highlight=False,
    )
    if isinstance(sink, DirectorySink):
        key = MonthKey(s.taxi_type, s.month, s.model_name, s.model_version, s.run_id)
        console.print(
            f"  → {sink.path(key)} (rejects: {sink.path(key, rejects=True)})", highlight=False
        )
    else:
        console.print(
            f"  → {sink} (rejects in {sink.rejects_table}, run in ride_batch_runs)",
            highlight=False,
        )
