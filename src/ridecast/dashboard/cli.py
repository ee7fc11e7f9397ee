"""``ridecast dashboard``: the dashboard on its own, over a prediction log and rollout state."""

from __future__ import annotations

from typing import Annotated

import typer

DEFAULT_PORT = 8050


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)


def dashboard(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="SQLAlchemy URL of the prediction log (with the batch results and, unless "
            "RIDECAST_STATE_URL says otherwise, the rollout state). "
            "\\[default: RIDECAST_PREDICTION_LOG_URL, else sqlite:///<home>/predictions.db]",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (0.0.0.0 for all interfaces).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = DEFAULT_PORT,
) -> None:
    """Show the live service, rollouts, batch results and drift in a browser.

    The pages read the database (and, for drift, the data folder and the registry); they change
    nothing. The web service serves the same pages at /dashboard.
    """
    import uvicorn
    from rich.console import Console

    from ridecast.dashboard.app import MOUNT, create_dashboard, standalone_app
    from ridecast.settings import get_settings

    dashboard = create_dashboard(get_settings(), log_url=db)
    sources = dashboard.state.dashboard.sources
    sources.check()  # one line and exit 2 when the database cannot be read
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    Console(stderr=True).print(
        f"dashboard of {sources.describe()} on http://{shown}:{port}{MOUNT}/ (Ctrl-C stops it)",
        highlight=False,
        soft_wrap=True,
    )
    app = standalone_app(dashboard)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
