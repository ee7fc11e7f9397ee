"""The ``ridecast`` command. Each sub-command is a thin call into a module below.

Heavy libraries (MLflow, pandas, FastAPI, redis) are imported inside the commands, so
``ridecast --help`` and short jobs start quickly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ridecast.batch import cli as batch_cli
from ridecast.control import cli as rollout_cli
from ridecast.dashboard import cli as dashboard_cli
from ridecast.deploy import cli as deploy_cli
from ridecast.errors import RidecastError
from ridecast.monitoring import cli as monitoring_cli
from ridecast.stream import cli as stream_cli
from ridecast.web import cli as web_cli

app = typer.Typer(
    name="ridecast",
    help="Deploy taxi-ride models as batch jobs, web services and stream consumers, "
    "and roll new versions out safely.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
data_app = typer.Typer(help="Make and inspect TLC-schema trip data.", no_args_is_help=True)
models_app = typer.Typer(
    help="Inspect and move model versions in the registry.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

# Piped output gets room for whole tables instead of Rich's 80-column fallback.
console = Console() if sys.stdout.isatty() else Console(width=160)
err_console = Console(stderr=True)

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Directory of TLC month files, found by TLC's file names "
        "(env RIDECAST_DATA_DIR; default .ridecast/data).",
        show_default=False,
    ),
]
TaxiTypeOption = Annotated[str, typer.Option("--taxi-type", help="green, yellow or fhv.")]


def _data_dir(data_dir: Path | None) -> Path:
    from ridecast.settings import get_settings

    return data_dir if data_dir is not None else get_settings().resolved_data_dir


@data_app.command("synth")
def data_synth(
    month: Annotated[str, typer.Option("--month", help="Month to make, YYYY-MM.")],
    taxi_type: TaxiTypeOption = "green",
    rows: Annotated[
        int | None,
        typer.Option("--rows", min=1, help="Rows to make (default depends on the taxi type)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same file.")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output directory (default: the data directory).")
    ] = None,
) -> None:
    """Write a realistic synthetic month with the exact schema of the published TLC files."""
    import time

    from ridecast.data.schema import parse_month, parse_taxi_type
    from ridecast.data.synth import default_rows, synthesize_month, write_month

    kind, when = parse_taxi_type(taxi_type), parse_month(month)
    n = rows if rows is not None else default_rows(kind)
    started = time.perf_counter()
    with console.status(f"synthesizing {n:,} {kind.value} rides for {when}"):
        table = synthesize_month(kind, when, n, seed=seed)
        path = write_month(table, out if out is not None else _data_dir(None), kind, when)
    console.print(f"wrote {path} ({table.num_rows:,} rows, {time.perf_counter() - started:.1f}s)")


@app.command("train")
def train(
    model: Annotated[str, typer.Argument(help="ride-duration, ride-tip or ride-cost.")],
    train_month: Annotated[str, typer.Option("--train", help="Training month, YYYY-MM.")],
    valid_month: Annotated[str, typer.Option("--valid", help="Validation month, YYYY-MM.")],
    taxi_type: TaxiTypeOption = "green",
    algorithm: Annotated[
        str,
        typer.Option(
            "--algorithm", help="linear (the course's), ridge, or gbm (gradient boosting)."
        ),
    ] = "linear",
    alias: Annotated[
        str | None,
        typer.Option("--alias", help="Point this alias (e.g. champion) at the new version."),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Fit a model on one month, validate on another, log to MLflow and register a new version."""
    from ridecast.data.schema import parse_month, parse_taxi_type
    from ridecast.settings import get_settings
    from ridecast.training import train_model

    settings = get_settings()
    with console.status("training") as status:
        result = train_model(
            model,
            parse_taxi_type(taxi_type),
            parse_month(train_month),
            parse_month(valid_month),
            settings=settings,
            data_dir=_data_dir(data_dir),
            algorithm=algorithm,
            alias=alias,
            on_step=lambda msg: status.update(msg),
        )
    m = result.metrics
    alias_text = f" @{result.alias}" if result.alias else ""
    console.print(
        f"registered {result.name} v{result.version}{alias_text}: validation RMSE {m['rmse']:.3f}, "
        f"MAE {m['mae']:.3f}, std {m['target_std']:.3f} (RMSE/std {m['rmse_over_std']:.2f}), "
        f"{int(m['train_rows']):,} training rides"
    )


@models_app.command("list")
def models_list() -> None:
    """Show registered models: versions, aliases and validation metrics."""
    from rich.table import Table

    from ridecast.registry import Registry
    from ridecast.settings import get_settings

    rows = Registry(get_settings()).list_versions()
    if not rows:
        console.print(
            "no models registered yet; try `ridecast demo` or `ridecast train ride-duration ...`"
        )
        return
    table = Table(
        "model", "version", "aliases", "algorithm", "trained on", "RMSE", "MAE", "RMSE/std"
    )
    for r in rows:
        m, p = r["metrics"], r["params"]
        table.add_row(
            r["name"],
            r["version"],
            ", ".join(r["aliases"]),
            p.get("algorithm", ""),
            f"{p.get('taxi_type', '')} {p.get('train_month', '')}",
            f"{m['rmse']:.3f}" if "rmse" in m else "",
            f"{m['mae']:.3f}" if "mae" in m else "",
            f"{m['rmse_over_std']:.2f}" if "rmse_over_std" in m else "",
        )
    console.print(table)


@models_app.command("alias")
def models_alias(
    name: Annotated[str, typer.Argument(help="Registered model name, e.g. ride-duration.")],
    alias: Annotated[str, typer.Argument(help="Alias to move, e.g. champion.")],
    version: Annotated[str, typer.Argument(help="Version number the alias should point at.")],
) -> None:
    """Point an alias at a version (servers watching the alias hot-reload it)."""
    from ridecast.registry import ModelRef, Registry
    from ridecast.settings import get_settings

    registry = Registry(get_settings())
    registry.resolve(ModelRef(name, version=version))
    registry.set_alias(name, alias, version)
    console.print(f"{name}@{alias} → v{version}")


@app.command("demo")
def demo(
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--workdir", help="Where the demo keeps its registry and data (default .ridecast/demo)."
        ),
    ] = None,
    rows: Annotated[
        int, typer.Option("--rows", min=1000, help="Rides per synthetic month.")
    ] = 60_000,
    keep_serving: Annotated[
        bool,
        typer.Option("--keep-serving", help="Keep the dashboard up at the end, until Ctrl-C."),
    ] = False,
) -> None:
    """The whole tour on embedded defaults: data, training, and every deployment mode."""
    from ridecast.demo import run_demo

    run_demo(console, workdir=workdir, rows=rows, keep_serving=keep_serving)


# The deployment modes keep their commands in their own packages; these modules import only Typer.
batch_cli.register(app)
stream_cli.register(app)
web_cli.register(app)
rollout_cli.register(app)
monitoring_cli.register(app)
dashboard_cli.register(app)
app.add_typer(deploy_cli.app, name="deploy")


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    try:
        app()
    except RidecastError as exc:
        # Escaped: messages name things like 'ridecast[spark]' and local[2], not Rich markup.
        message = escape(str(exc))
        err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
