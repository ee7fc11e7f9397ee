"""``ridecast demo``, streaming step: a few thousand ride events through the four consumers.

Runs on the in-process broker, or on Redis when REDIS_URL / RIDECAST_BROKER_URL is set (with
streams of its own, deleted afterwards), then answers the course's Lambda test event.
"""

from __future__ import annotations

import base64
import dataclasses
import time
import uuid
from typing import Any

import numpy as np
import orjson
from rich.table import Table

from ridecast.stream.broker import open_broker
from ridecast.stream.consumer import ConsumerConfig, StreamConsumer
from ridecast.stream.lambda_function import handle_records
from ridecast.stream.producer import PROGRESS_POINTS, load_rides, produce
from ridecast.stream.services import SERVICES, dead_letter_stream

RIDES = 3000
POISON = [
    b"{not json",
    b'{"ride_id": 9001}',
    b'{"ride": {"PULocationID": "130", "DOLocationID": 205, "trip_distance": 3.66}, '
    b'"ride_id": 9002}',
]


def demo_step(ctx: Any) -> None:
    console = ctx.console
    console.rule("[bold]streaming")
    url = ctx.settings.broker_url
    tag = uuid.uuid4().hex[:8]
    if url.startswith("memory://"):
        url, prefix = f"memory://demo-{tag}", ""
    else:
        prefix = f"ridecast-demo:{tag}:"
    broker = open_broker(url)
    names = {name: f"{prefix}{name}" for name in ("ride_events", "ride_progress")}
    outputs = {svc.name: f"{prefix}{svc.output_stream}" for svc in SERVICES.values()}
    every = [*names.values(), *outputs.values(), *(dead_letter_stream(n) for n in names.values())]
    try:
        _run(ctx, broker, url, names, outputs)
    finally:
        if prefix:
            broker.delete(every)
        broker.close()


def _run(ctx: Any, broker: Any, url: str, names: dict[str, str], outputs: dict[str, str]) -> None:
    console = ctx.console
    rides, _ = load_rides(ctx.data_dir, ctx.taxi_type.value, str(ctx.valid_month), limit=RIDES)
    sent = produce(
        broker, rides, stream=names["ride_events"], progress_stream=names["ride_progress"]
    )
    broker.publish(names["ride_events"], POISON)
    console.print(
        f"[green]✓[/] produced {sent.events:,} ride events + {len(POISON)} poison events and "
        f"{sent.progress_events:,} ride-progress events on {url.split('@')[-1]}"
    )
    table = Table(
        "service", "model", "reads → writes", "events in", "outputs", "dead letters", "events/s"
    )
    examples = []
    summary: dict[str, Any] = {}
    for svc in SERVICES.values():
        predictor = ctx.registry.predictor(svc.default_model_uri)  # loaded and warmed
        source = names["ride_progress" if svc.progress else "ride_events"]
        config = ConsumerConfig.for_service(
            svc,
            ctx.settings,
            consumer="demo",
            input_stream=source,
            output_stream=outputs[svc.name],
        )
        config = dataclasses.replace(config, block_ms=20)  # stop soon once drained
        started = time.perf_counter()
        stats = StreamConsumer(broker, svc, predictor, config).run(until_idle=True)
        seconds = time.perf_counter() - started
        first = broker.read_range(outputs[svc.name], count=1)
        if first and first[0].payload:
            examples.append(f"{svc.output_stream}: {first[0].payload.decode()}")
        table.add_row(
            svc.name,
            f"{svc.model_name} v{predictor.version}",
            f"{svc.input_stream} → {svc.output_stream}",
            f"{stats.read:,}",
            f"{stats.predicted:,}",
            f"{stats.dead_lettered:,}",
            f"{stats.predicted / max(seconds, 1e-9):,.0f}",
        )
        summary[svc.name] = {"predicted": stats.predicted, "dead_lettered": stats.dead_lettered}
    console.print(table)
    for line in examples:
        console.print(line, highlight=False, soft_wrap=True)
    dead = broker.read_range(dead_letter_stream(names["ride_events"]), count=1)
    if dead and dead[0].payload:
        console.print(
            f"{dead_letter_stream('ride_events')}: {orjson.loads(dead[0].payload)['error']}",
            highlight=False,
        )
    _dynamic_accuracy(ctx, broker, rides, outputs)
    _lambda(ctx)
    ctx.results["stream"] = summary


def _dynamic_accuracy(ctx: Any, broker: Any, rides: Any, outputs: dict[str, str]) -> None:
    """How far the duration is off as progress events arrive (MAE against the actual time)."""
    actual = dict(zip(rides.ride_ids, rides.duration.tolist(), strict=True))
    static = {}
    for m in broker.read_range(outputs["duration"], count=RIDES + 10):
        p = orjson.loads(m.payload)["prediction"]
        static[p["ride_id"]] = p["ride_duration"]
    errors: dict[float, list[float]] = {share: [] for share in PROGRESS_POINTS}
    for m in broker.read_range(outputs["dynamic-duration"], count=RIDES * 4):
        p = orjson.loads(m.payload)["prediction"]
        truth = actual.get(p["ride_id"])
        if not truth:
            continue
        share = min(PROGRESS_POINTS, key=lambda s: abs(s * truth - p["elapsed_minutes"]))
        errors[share].append(abs(p["ride_duration"] - truth))
    at_booking = [abs(static[r] - actual[r]) for r in static if actual.get(r)]
    steps = " → ".join(
        f"{int(share * 100)}% {np.mean(errors[share]):.1f}" for share in PROGRESS_POINTS
    )
    console = ctx.console
    console.print(
        f"dynamic duration, mean abs. error in minutes: at booking {np.mean(at_booking):.1f} → "
        f"{steps} (of the ride driven)"
    )


def _lambda(ctx: Any) -> None:
    """The course's Kinesis test event through the drop-in Lambda handler."""
    ride = orjson.dumps(
        {"ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}, "ride_id": 256}
    )
    event = {
        "Records": [{"kinesis": {"data": base64.b64encode(ride).decode(), "sequenceNumber": "1"}}]
    }
    predictor = ctx.registry.predictor("models:/ride-duration@champion")
    answer = handle_records(event, predictor)
    ctx.console.print(f"lambda_handler(course test event) → {orjson.dumps(answer).decode()}")
