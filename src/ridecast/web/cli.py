"""``ridecast serve``: the web service command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

DEFAULT_PORT = 9696


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def _log_config(level: str) -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = {**LOGGING_CONFIG, "loggers": dict(LOGGING_CONFIG["loggers"])}
    config["loggers"]["ridecast"] = {"handlers": ["default"], "level": level, "propagate": False}
    return config


def serve(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Model to serve: models:/NAME@ALIAS, models:/NAME/VERSION or NAME. Repeat to "
            "serve several (ride-duration, ride-tip, ride-cost); the first answers /predict and "
            "/invocations. \\[default: models:/ride-duration@champion; env RIDECAST_SERVE_MODELS]",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (0.0.0.0 for all interfaces).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = DEFAULT_PORT,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-w",
            min=1,
            help="Worker processes, each with its own copy of the models. "
            "\\[default: 2; env RIDECAST_SERVE_WORKERS]",
            show_default=False,
        ),
    ] = None,
    batching: Annotated[
        bool | None,
        typer.Option(
            "--batching/--no-batching",
            help="Coalesce concurrent single-ride requests into one model call. \\[default: on]",
            show_default=False,
        ),
    ] = None,
    max_batch_size: Annotated[
        int | None,
        typer.Option("--max-batch-size", min=1, help="Largest micro-batch. \\[default: 256]"),
    ] = None,
    max_batch_time_ms: Annotated[
        float | None,
        typer.Option(
            "--max-batch-time-ms",
            min=0.0,
            help="Longest a request waits for companions, in ms. 0 batches only requests that "
            "arrive together and adds no latency. \\[default: 0]",
        ),
    ] = None,
    watch_interval: Annotated[
        float | None,
        typer.Option(
            "--watch-interval",
            min=0.0,
            help="Seconds between registry alias checks for hot reload; 0 turns it off. "
            "\\[default: 2]",
        ),
    ] = None,
    log_predictions: Annotated[
        bool | None,
        typer.Option(
            "--log-predictions/--no-log-predictions",
            help="Write every prediction to the prediction log (RIDECAST_PREDICTION_LOG_URL; "
            "default SQLite in the home directory). \\[default: on]",
            show_default=False,
        ),
    ] = None,
    shutdown_delay: Annotated[
        float | None,
        typer.Option(
            "--shutdown-delay",
            min=0.0,
            help="After SIGTERM, keep serving this many seconds with /health/ready false (so a "
            "load balancer can stop sending), then finish in-flight requests and exit. "
            "\\[default: 0]",
        ),
    ] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every request (costs throughput).")
    ] = False,
) -> None:
    """Serve models over HTTP: the course's POST /predict, MLflow's /invocations and OIP v2.

    Also /health/live, /health/ready, /metrics (Prometheus), /feedback and /docs. The server
    follows each model's alias in the registry and hot-swaps new versions; SIGTERM drains it.
    """
    from ridecast.settings import get_settings

    overrides: dict[str, Any] = {
        "SERVE_MODELS": ",".join(model) if model else None,
        "SERVE_WORKERS": workers,
        "SERVE_BATCHING": batching,
        "SERVE_MAX_BATCH_SIZE": max_batch_size,
        "SERVE_MAX_BATCH_TIME_MS": max_batch_time_ms,
        "SERVE_WATCH_INTERVAL": watch_interval,
        "SERVE_LOG_PREDICTIONS": log_predictions,
        "SERVE_SHUTDOWN_DELAY": shutdown_delay,
    }
    # Through the environment, so that worker processes read the same settings.
    for key, value in overrides.items():
        if value is not None:
            os.environ[f"RIDECAST_{key}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
    get_settings.cache_clear()
    settings = get_settings()
    _serve(settings, host, port, access_log)


def _serve(settings: Any, host: str, port: int, access_log: bool) -> None:
    import shutil

    import uvicorn
    from rich.console import Console

    from ridecast.registry import Registry
    from ridecast.web.app import create_app, parse_model_refs
    from ridecast.web.lifecycle import GracefulServer, run_workers

    console = Console(stderr=True)
    refs = parse_model_refs(settings.serve_models)
    registry = Registry(settings)
    for ref in refs:
        registry.resolve(ref)  # fails early, with one line, if a model is not registered
    workers = settings.serve_workers
    metrics_dir, our_metrics_dir = _metrics_dir(settings, workers)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": access_log,
        "log_config": _log_config("INFO"),
        "timeout_graceful_shutdown": 30,
    }
    described = ", ".join(r.uri for r in refs)
    if workers == 1:
        app = create_app(settings, registry=registry)
        with console.status(f"loading {described}"):
            app.service.start()
        config = uvicorn.Config(app, **options)
        GracefulServer(config, settings.serve_shutdown_delay).run()
        return
    console.print(f"starting {workers} workers for {described} on http://{host}:{port}")
    config = uvicorn.Config("ridecast.web.app:worker_app", factory=True, workers=workers, **options)
    try:
        status = run_workers(config, workers, settings.serve_shutdown_delay, metrics_dir)
    finally:
        if our_metrics_dir and metrics_dir is not None:
            shutil.rmtree(metrics_dir.parent, ignore_errors=True)
    if status != 0:
        raise typer.Exit(status)


def _metrics_dir(settings: Any, workers: int) -> tuple[Path | None, bool]:
    """prometheus_client's multiprocess folder for this server, emptied, and whether this
    server made it (and removes it at exit). Several workers need one; one worker needs none
    unless PROMETHEUS_MULTIPROC_DIR is set (prometheus_client then works that way already)."""
    from ridecast.monitoring.metrics import prepare_multiprocess_dir

    chosen: Path | None = settings.metrics_multiprocess_dir
    ours = chosen is None and workers > 1
    if ours:
        chosen = settings.home.resolve() / "run" / f"serve-{os.getpid()}" / "prometheus"
    if chosen is None:
        return None, False
    prepare_multiprocess_dir(chosen)
    # Read by prometheus_client when each spawned worker imports it, and by its settings.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(chosen)
    return chosen, ours
