"""``ridecast deploy``: write what a cluster or a scheduler needs to run ridecast.

Each command lives in its own module and imports its libraries when it runs.
"""

from __future__ import annotations

import typer

from ridecast.deploy import prefect_cli, render_cli

app = typer.Typer(
    help="Deploy ridecast: render Kubernetes manifests with your values, or schedule the "
    "monthly batch job on Prefect.",
    no_args_is_help=True,
)
app.command("render")(render_cli.render)
app.command("prefect")(prefect_cli.prefect)
