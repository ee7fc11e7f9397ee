"""``ridecast monitor …``: what a deployed model sees, against what it was trained on.

``ridecast monitor drift`` compares a TLC month (or the last N logged requests) with the model's
reference month (by default the one it was validated on), column by column
(:mod:`ridecast.monitoring.drift`), and shows the report as a table, as JSON, or as a
self-contained HTML page. It exits 0 whether or not drift was found, unless ``--fail-on-drift``
asks for exit status 1 on dataset drift (for scheduled jobs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from collections.abc import Callable

    from ridecast.monitoring.drift import ColumnDrift, DriftReport

monitor_app = typer.Typer(
    help="Watch what a deployed model sees: drift of its inputs and predictions from its "
    "training data.",
    no_args_is_help=True,
)
console = Console() if sys.stdout.isatty() else Console(width=160)
err_console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.add_typer(monitor_app, name="monitor")


@monitor_app.command("drift")
def drift(
    month: Annotated[
        str | None,
        typer.Option("--month", help="The month to check, YYYY-MM (a TLC file in the data dir)."),
    ] = None,
    last: Annotated[
        int | None,
        typer.Option(
            "--last",
            min=1,
            help="Check the model's last N answers in the prediction log instead of a month.",
            show_default=False,
        ),
    ] = None,
    taxi_type: Annotated[
        str | None,
        typer.Option(
            "--taxi-type",
            help="green or yellow. \\[default: green; with --last, the type the model was "
            "trained on]",
            show_default=False,
        ),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference",
            help="Reference month, YYYY-MM. \\[default: the month the model was validated on, "
            "recorded with its training run]",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="The model that predicts both sides and whose run names the reference month: "
            "models:/NAME@ALIAS or models:/NAME/N.",
        ),
    ] = "models:/ride-duration@champion",
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write the report as one self-contained HTML file (no scripts, no links).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON instead of a table.")
    ] = False,
    fail_on_drift: Annotated[
        bool,
        typer.Option("--fail-on-drift", help="Exit with status 1 when the dataset drifts."),
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Folder of TLC month files (env RIDECAST_DATA_DIR; default <home>/data).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Drift of a month's rides (or of the last N requests) from the model's reference month.

    Per column (the two zones, trip_distance and the prediction) Evidently's default method:
    Wasserstein distance / reference std or Jensen-Shannon distance, drift at >= 0.1; K-S or
    chi-square at p < 0.05 when a sample has 1,000 rows or fewer. The dataset drifts when at
    least half its columns do. Only the rows training keeps count (1-60 minutes, both zones,
    0-100 miles). The reference is the month the model was validated on, unless --reference
    names another. See docs/monitoring.md.
    """
    from ridecast.data.schema import parse_month, parse_taxi_type
    from ridecast.errors import RidecastError
    from ridecast.monitoring.drift import month_drift, recent_drift
    from ridecast.settings import get_settings

    if (month is None) == (last is None):
        raise RidecastError(
            "--month and --last: give exactly one: --month YYYY-MM checks a TLC month file, "
            "--last N the newest N answers in the prediction log"
        )
    kind = _checked("--taxi-type", taxi_type, parse_taxi_type) if taxi_type else None
    reference_month = _checked("--reference", reference, parse_month) if reference else None
    settings = get_settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    status = err_console.status("comparing") if not as_json else None
    if status is not None:
        status.start()
    try:
        if month is not None:
            report = month_drift(
                settings,
                kind or "green",
                _checked("--month", month, parse_month),
                reference_month,
                model,
            )
        else:
            assert last is not None  # one of the two, checked above
            report = recent_drift(settings, last, reference_month, model, taxi_type=kind)
    finally:
        if status is not None:
            status.stop()

    if html is not None:
        from ridecast.monitoring.drift_html import render_html

        html.write_text(render_html(report), encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        if html is not None:
            err_console.print(f"wrote {html}", highlight=False)
    else:
        _print_report(report)
        if html is not None:
            console.print(f"wrote {html}", highlight=False)
    if fail_on_drift and report.dataset_drifted:
        raise typer.Exit(1)


def _checked(option: str, value: str, parse: Callable[[str], Any]) -> Any:
    """``parse(value)``, with the option named in the error a person sees."""
    from ridecast.errors import DataError

    try:
        return parse(value)
    except DataError as exc:
        raise DataError(f"{option} {value}: {exc}") from None


def _print_report(report: DriftReport) -> None:
    from rich.table import Table

    if report.model:
        console.print(f"model      {report.model}", highlight=False)
    console.print(f"reference  {report.reference_label}", highlight=False)
    console.print(f"current    {report.current_label}", highlight=False)
    table = Table("column", "method", "score", "drift when", "reference", "current", "result")
    for c in report.columns:
        table.add_row(
            c.column,
            c.method,
            f"{c.score:.3g}" if c.is_p_value else f"{c.score:.3f}",
            c.rule,
            _sample(c, reference=True),
            _sample(c, reference=False),
            "[bold white on red] DRIFT [/]" if c.drifted else "[green]ok[/]",
        )
    console.print(table)
    drifted, total = len(report.drifted_columns), len(report.columns)
    if report.dataset_drifted:
        verdict = "[bold white on red] DATASET DRIFT [/]"
        relation = ">="
    else:
        verdict = "[bold green]no dataset drift[/]"
        relation = "<"
    console.print(
        f"{verdict} {drifted} of {total} columns drifted "
        f"(share {report.share_drifted:.2f} {relation} {report.drift_share:g})",
        highlight=False,
    )
    for note in report.notes:
        console.print(f"[dim]{note}[/]", highlight=False)


def _sample(column: ColumnDrift, *, reference: bool) -> str:
    """Rows, and the mean (numeric) or the most common category, of one side."""
    rows = column.reference_rows if reference else column.current_rows
    mean = column.reference_mean if reference else column.current_mean
    if mean is not None:
        return f"{rows:,} rows, mean {mean:.3g}"
    shown = [c for c in column.categories if c.category != "other"]
    if shown:
        top = max(shown, key=lambda c: c.reference if reference else c.current)
        share = top.reference if reference else top.current
        return f"{rows:,} rows, top {top.category} {share:.0%}"
    return f"{rows:,} rows"
