"""``ridecast deploy prefect``: the monthly batch job as a scheduled Prefect deployment.

Two ways to run the schedule, both on the flow :func:`ridecast.deploy.flows.score_month`:

- by default the command registers the deployment in a *process* work pool (created if missing)
  and returns; a ``prefect worker start --pool POOL`` on a machine with ridecast installed runs
  each scheduled month in a subprocess. No image and no code storage are needed: the entrypoint
  is the installed module ``ridecast.deploy.flows``.
- ``--serve`` registers it and keeps running: this process polls for the deployment's runs and
  executes them itself (``flow.serve``), with no work pool and no worker.

Schedules fire only on a Prefect server that runs its scheduler (``prefect server start``, with
``PREFECT_API_URL`` pointing at it). Without ``PREFECT_API_URL`` Prefect uses a temporary local
server over the database in ``PREFECT_HOME``: a registered deployment is kept there, and a later
``prefect server start`` serves and schedules it, but ``--serve`` would wait for runs nobody
schedules, so it asks for a server. Prefect is the optional extra ``ridecast[prefect]``; it is
imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from ridecast.errors import RidecastError

if TYPE_CHECKING:
    from prefect.schedules import Schedule

console = Console(soft_wrap=True)

MONTHLY_CRON = "0 3 2 * *"  # the course's cron: 03:00 on the 2nd, scoring the previous month
INSTALL_HINT = "pip install 'ridecast[prefect]'"


def prefect(
    name: Annotated[
        str, typer.Option("--name", help="Deployment name (the flow is ridecast-score-month).")
    ] = "monthly",
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="Duration model each run scores with: models:/NAME@ALIAS."
        ),
    ] = "models:/ride-duration@champion",
    taxi_type: Annotated[str, typer.Option("--taxi-type", help="green or yellow.")] = "green",
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="A folder of TLC month files or a database URL, where each run finds its month. "
            "\\[default: the data folder of the machine that runs the flow]",
            show_default=False,
        ),
    ] = None,
    sink: Annotated[
        str | None,
        typer.Option(
            "--sink",
            help="A folder (parquet under taxi_type=/year=/month=) or a database URL. "
            "\\[default: <home>/predictions of the machine that runs the flow]",
            show_default=False,
        ),
    ] = None,
    sink_table: Annotated[
        str | None,
        typer.Option(
            "--sink-table", help="Predictions table of a database sink.", show_default=False
        ),
    ] = None,
    work_pool: Annotated[
        str,
        typer.Option(
            "--work-pool",
            help="Work pool of the deployment; a process pool of this name is created if missing.",
        ),
    ] = "ridecast",
    cron: Annotated[
        str, typer.Option("--cron", help="When to run (each run scores the previous month).")
    ] = MONTHLY_CRON,
    timezone: Annotated[
        str, typer.Option("--timezone", help="Time zone of --cron (IANA name).")
    ] = "UTC",
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Keep running and execute the scheduled runs in this process (no work pool, "
            "no worker); stop with Ctrl-C.",
        ),
    ] = False,
) -> None:
    """Create the Prefect deployment of the monthly job, scheduled at 03:00 on the 2nd."""
    from ridecast.data.schema import parse_taxi_type
    from ridecast.errors import DataError
    from ridecast.modelref import parse_model_uri

    kind = parse_taxi_type(taxi_type)
    parse_model_uri(model)
    if source is not None and "://" not in source and not Path(source).is_dir():
        raise DataError(
            f"--source {source} must be a folder of TLC month files or a database URL: each "
            "monthly run looks up its own month in it"
        )
    try:
        from ridecast.deploy import flows
    except ImportError as exc:
        if (exc.name or "").split(".")[0] != "prefect":
            raise
        # Printed here, not raised: the message's brackets are not console markup.
        Console(stderr=True).print(
            f"error: `ridecast deploy prefect` needs Prefect, which is not installed: "
            f"{INSTALL_HINT}",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(2) from exc
    from prefect.deployments.runner import EntrypointType
    from prefect.settings import get_current_settings

    parameters: dict[str, Any] = {"taxi_type": kind.value, "model": model}
    for key, value in (("source", source), ("sink", sink), ("sink_table", sink_table)):
        if value is not None:
            parameters[key] = value
    schedule = _schedule(cron, timezone)
    api_url = get_current_settings().api.url
    options: dict[str, Any] = {
        "name": name,
        "schedules": [schedule],
        "parameters": parameters,
        "description": f"Score last month's {kind.value} rides with {model} ({cron}, {timezone}).",
        "tags": ["ridecast"],
        "entrypoint_type": EntrypointType.MODULE_PATH,
    }
    full_name = f"{flows.SCORE_FLOW}/{name}"
    if serve:
        if not api_url:
            raise RidecastError(
                "--serve needs a Prefect server that schedules runs: start one with `prefect "
                "server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api (Prefect's "
                "temporary local server runs no scheduler)"
            )
        console.print(
            f"serving {full_name} on {api_url}, {cron} ({timezone}); Ctrl-C stops", markup=False
        )
        flows.score_month.serve(**options)
        return
    deployment_id = _apply(flows.score_month.to_deployment(**options, work_pool_name=work_pool))
    console.print(
        f"created deployment {full_name} ({deployment_id}) in work pool {work_pool}: "
        f"{cron} ({timezone}), parameters {parameters}",
        markup=False,
        highlight=False,
    )
    where = api_url or "Prefect's local database (PREFECT_HOME); `prefect server start` serves it"
    console.print(
        f"  on {where}\n"
        f"  run the schedule: prefect worker start --pool {work_pool}\n"
        f"  score a month now: prefect deployment run '{full_name}' --param month=YYYY-MM",
        markup=False,
        highlight=False,
    )


def _schedule(cron: str, timezone: str) -> Schedule:
    """The cron schedule, checked here (Prefect checks it only when it is sent), so a typo is
    reported against the option before anything is registered."""
    from prefect.client.schemas.schedules import construct_schedule
    from prefect.schedules import Cron
    from pydantic import ValidationError

    try:
        schedule = Cron(cron, timezone=timezone)
        construct_schedule(cron=schedule.cron, timezone=schedule.timezone)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise RidecastError(
            f"--cron {cron!r} --timezone {timezone!r} is not a valid schedule ({first}); "
            f"expected five cron fields such as {MONTHLY_CRON!r} and an IANA time zone "
            "such as Europe/Berlin"
        ) from exc
    return schedule


def _apply(deployment: Any) -> str:
    """Register the deployment in its process work pool (created if missing)."""
    import httpx

    pool = deployment.work_pool_name
    try:
        _ensure_process_pool(pool)
        return str(deployment.apply())
    except httpx.TransportError as exc:
        raise RidecastError(
            f"cannot reach the Prefect API ({exc}); start `prefect server start` or fix "
            "PREFECT_API_URL"
        ) from exc


def _ensure_process_pool(name: str) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=ProcessWorker.type,
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
            console.print(f"created process work pool {name}", highlight=False)
