"""``ridecast stream consume``: one consumer that follows its model's alias and rollout, routes
each event by ride_id, writes live and shadow answers, and logs them for rollout analysis."""

from __future__ import annotations

from typing import Annotated

import typer

from ridecast.errors import RidecastError
from ridecast.stream.cli import SERVICE_NAMES, BrokerOption, _log, _open, stream_app


@stream_app.command("consume")
def consume_command(
    service: Annotated[
        str, typer.Option("--service", help="duration, tip, cost or dynamic-duration.")
    ] = "duration",
    group: Annotated[
        str | None,
        typer.Option(
            "--group", help="Consumer group (default: the service name).", show_default=False
        ),
    ] = None,
    consumer: Annotated[
        str | None,
        typer.Option(
            "--consumer", help="This consumer's name (default: host-pid).", show_default=False
        ),
    ] = None,
    broker: BrokerOption = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Model URI (default models:/<service's model>@champion).",
            show_default=False,
        ),
    ] = None,
    start: Annotated[
        str,
        typer.Option(
            "--from",
            help="Where a NEW group starts: earliest (every event in the stream) or latest.",
        ),
    ] = "earliest",
    input_stream: Annotated[
        str | None, typer.Option("--input-stream", help="Override the service's input stream.")
    ] = None,
    output_stream: Annotated[
        str | None, typer.Option("--output-stream", help="Override the service's output stream.")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            max=10_000,
            help="Micro-batch size = in-flight cap (env RIDECAST_STREAM_BATCH_SIZE, default 500).",
            show_default=False,
        ),
    ] = None,
    claim_idle_ms: Annotated[
        int | None,
        typer.Option(
            "--claim-idle-ms",
            min=50,
            help="Claim events another consumer left pending this long "
            "(env RIDECAST_STREAM_CLAIM_IDLE_MS, default 30000).",
            show_default=False,
        ),
    ] = None,
    max_deliveries: Annotated[
        int | None,
        typer.Option(
            "--max-deliveries",
            min=1,
            help="Dead-letter an event delivered more often "
            "(env RIDECAST_STREAM_MAX_DELIVERIES, default 5).",
            show_default=False,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port", help="Serve Prometheus metrics on this port.", show_default=False
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option(
            "--metrics-host",
            help="Address the metrics server listens on (0.0.0.0 for every interface, as a "
            "Prometheus in another container or pod needs).",
        ),
    ] = "127.0.0.1",
    shadow_stream: Annotated[
        str | None,
        typer.Option(
            "--shadow-stream",
            help="Where shadow copies go during a rollout (default: <output stream>_shadow).",
            show_default=False,
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow/--no-follow",
            help="Follow the model's alias and its rollout (checked every "
            "RIDECAST_ROLLOUT_FOLLOW_INTERVAL s); --no-follow keeps the version loaded at start.",
        ),
    ] = True,
    log_predictions: Annotated[
        bool,
        typer.Option(
            "--log-predictions/--no-log-predictions",
            help="Write every live and shadow answer to the prediction log "
            "(RIDECAST_PREDICTION_LOG_URL), which rollout analysis reads.",
        ),
    ] = True,
    until_idle: Annotated[
        bool,
        typer.Option(
            "--until-idle", help="Exit once the stream is drained (a batch job), not on SIGTERM."
        ),
    ] = False,
) -> None:
    """Run a consumer: read events, predict in micro-batches, write outputs, acknowledge.

    Stops cleanly on SIGTERM / Ctrl-C after finishing the batch in hand.
    """
    import signal
    import threading

    where = {"earliest": "0", "latest": "$"}.get(start.strip().lower())
    if where is None:
        raise RidecastError(f"--from {start!r} is not understood; expected earliest or latest")
    if service.strip().lower() not in SERVICE_NAMES:  # before the slow imports below
        raise RidecastError(
            f"unknown stream service {service!r}; expected one of: {', '.join(SERVICE_NAMES)}"
        )
    from ridecast.settings import get_settings
    from ridecast.stream.services import get_service

    svc = get_service(service)
    from ridecast.control.follower import Follower
    from ridecast.control.store import store_for
    from ridecast.registry import Registry, parse_model_uri
    from ridecast.stream.consumer import ConsumerConfig, StreamConsumer

    settings = get_settings()
    updates = {
        k: v
        for k, v in (
            ("stream_batch_size", batch_size),
            ("stream_claim_idle_ms", claim_idle_ms),
            ("stream_max_deliveries", max_deliveries),
        )
        if v is not None
    }
    if updates:
        settings = settings.model_copy(update=updates)
    target = _open(broker)
    ref = parse_model_uri(model or svc.default_model_uri)
    follower = Follower(
        ref,
        Registry(settings),
        store_for(settings),
        interval=settings.rollout_follow_interval,
    )
    follower.refresh(first=True)  # a model that cannot be loaded fails here, in one line
    config = ConsumerConfig.for_service(
        svc,
        settings,
        group=group,
        consumer=consumer,
        input_stream=input_stream,
        output_stream=output_stream,
        shadow_stream=shadow_stream,
        start=where,
    )
    prediction_log = None
    if log_predictions:
        from ridecast.monitoring import PredictionLog

        prediction_log = PredictionLog(settings.resolved_prediction_log_url).start()
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    runner = StreamConsumer(target, svc, follower, config, prediction_log=prediction_log, log=_log)
    if follow:
        follower.start()
    deployment = follower.current
    _log(
        f"{svc.name} consumer {config.consumer!r} of group {config.group!r}: "
        f"{config.input_stream} → {config.output_stream} with {ref.name} "
        f"v{deployment.stable.version}"
        + (" (following its alias and rollout)" if follow else " (pinned)")
        + f"; batch {config.batch_size}, claim after {config.claim_idle_ms} ms, "
        f"dead letters → {config.dead_letter_stream}, shadow copies → {config.shadow_output}"
        + (
            f"; predictions logged to {prediction_log.safe_url}"
            if prediction_log is not None
            else ""
        )
        + (f"; metrics on :{metrics_port}/metrics" if metrics_port is not None else "")
    )
    try:
        stats = runner.run(stop, until_idle=until_idle, status_every_s=10.0)
    finally:
        follower.stop()
        target.close()
        if prediction_log is not None:
            prediction_log.close()  # writes what is still queued
    _log(f"stopped: {stats.line()}")
