"""``ridecast stream …``: produce ride events, run consumers, inspect streams, dedupe outputs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ridecast.errors import RidecastError
from ridecast.urls import mask_url

if TYPE_CHECKING:
    from ridecast.stream.broker import Broker

stream_app = typer.Typer(
    help="Ride events through a broker (Redis Streams) to the duration, tip, cost and "
    "dynamic-duration consumers, at-least-once.",
    no_args_is_help=True,
)
# The services of ridecast.stream.services, named here so bad input fails before slow imports.
SERVICE_NAMES = ("duration", "tip", "cost", "dynamic-duration")
console = Console()
err_console = Console(stderr=True)

BrokerOption = Annotated[
    str | None,
    typer.Option(
        "--broker",
        help="redis://HOST:PORT/DB (env RIDECAST_BROKER_URL or REDIS_URL). memory:// only "
        "works inside one process (see `ridecast demo`).",
        show_default=False,
    ),
]


def _open(url: str | None) -> Broker:
    from ridecast.settings import get_settings
    from ridecast.stream.broker import open_broker

    resolved = url or get_settings().broker_url
    if resolved.startswith("memory://"):
        raise RidecastError(
            "the memory:// broker lives inside one process, so separate `ridecast stream` "
            "commands cannot share it; pass --broker redis://127.0.0.1:6379/0 (or set REDIS_URL)"
        )
    return open_broker(resolved)


def _log(message: str) -> None:
    import time

    # Escaped: messages carry broker errors and stream names, not Rich markup.
    err_console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(message)}", highlight=False)


@stream_app.command("produce")
def produce_command(
    month: Annotated[str, typer.Option("--month", help="Month to replay, YYYY-MM.")] = "2025-02",
    taxi_type: Annotated[str, typer.Option("--taxi-type", help="green, yellow or fhv.")] = "green",
    rate: Annotated[
        str, typer.Option("--rate", help="Events per second, e.g. 500/s, 2k/s, or max.")
    ] = "500/s",
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Send at most this many rides.")
    ] = None,
    broker: BrokerOption = None,
    stream: Annotated[str, typer.Option("--stream", help="Stream of ride events.")] = "ride_events",
    progress: Annotated[
        bool,
        typer.Option(
            "--progress/--no-progress",
            help="Also send ride-progress events (at 25/50/75% of each ride) for the "
            "dynamic-duration service.",
        ),
    ] = False,
    progress_stream: Annotated[
        str, typer.Option("--progress-stream", help="Stream of ride-progress events.")
    ] = "ride_progress",
    dirty: Annotated[
        bool,
        typer.Option(
            "--dirty", help="Send invalid rows too (null zones, bad distances): poison events."
        ),
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="TLC month files (env RIDECAST_DATA_DIR).", show_default=False
        ),
    ] = None,
) -> None:
    """Replay a month's trips as ride events, {"ride": {...}, "ride_id": ...}, at a rate."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from ridecast.stream.producer import parse_rate

    events_per_s = parse_rate(rate)
    from ridecast.settings import get_settings
    from ridecast.stream.producer import load_rides, produce

    settings = get_settings()
    target = _open(broker)
    target.length(stream)  # fail fast, with the URL, when the broker is not there
    rides, skipped = load_rides(
        data_dir or settings.resolved_data_dir, taxi_type, month, limit=limit, dirty=dirty
    )
    if skipped and not dirty:
        console.print(
            f"skipping {skipped:,} rows that are not valid ride events (--dirty sends them)"
        )
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(f"→ {escape(stream)}", total=len(rides))  # shown as markup
        result = produce(
            target,
            rides,
            stream=stream,
            rate=events_per_s,
            progress_stream=progress_stream if progress else None,
            on_sent=lambda n: bar.advance(task, n),
            log=_log,
        )
    extra = (
        f" and {result.progress_events:,} progress events to {progress_stream}" if progress else ""
    )
    console.print(
        f"sent {result.events:,} ride events to {stream}{extra} in {result.seconds:.1f}s "
        f"({result.rate:,.0f} events/s)",
        markup=False,
    )


@stream_app.command("status")
def status_command(
    broker: BrokerOption = None,
    streams: Annotated[
        list[str] | None,
        typer.Option("--stream", help="Streams to show (repeatable; default: ridecast's)."),
    ] = None,
) -> None:
    """Streams, their groups, lag, pending and dead-letter counts."""
    import time

    from rich.table import Table

    from ridecast.stream.services import SERVICES, dead_letter_stream

    target = _open(broker)
    names = list(streams or [])
    if not names:
        inputs = sorted({s.input_stream for s in SERVICES.values()})
        names = [*inputs, *(s.output_stream for s in SERVICES.values())]
        names += [dead_letter_stream(i) for i in inputs]
    else:
        names += [dead_letter_stream(n) for n in list(names) if not n.endswith(":dead-letter")]
    infos = target.info(names)
    if not infos:
        console.print(
            f"no ridecast streams on {mask_url(target.url)} yet; try `ridecast stream produce`",
            markup=False,
        )
        return
    table = Table("stream", "entries", "newest", "group", "consumers", "pending", "lag")
    now_ms = time.time() * 1000
    for info in infos:
        age = "-"
        if info.last_id and info.length:
            age = f"{max(now_ms - int(info.last_id.split('-')[0]), 0) / 1000:,.1f}s ago"
        style = "red" if info.name.endswith(":dead-letter") and info.length else None
        if not info.groups:
            table.add_row(escape(info.name), f"{info.length:,}", age, "", "", "", "", style=style)
        for i, g in enumerate(info.groups):
            table.add_row(
                escape(info.name) if i == 0 else "",
                f"{info.length:,}" if i == 0 else "",
                age if i == 0 else "",
                escape(g.name),
                str(g.consumers),
                f"{g.pending:,}",
                "?" if g.lag is None else f"{g.lag:,}",
                style=style,
            )
    console.print(table)


@stream_app.command("dedupe")
def dedupe_command(
    stream: Annotated[
        str, typer.Argument(help="Output stream to check, e.g. ride_predictions.")
    ] = "ride_predictions",
    broker: BrokerOption = None,
    into: Annotated[
        str | None,
        typer.Option(
            "--into", help="Copy the first record per ride to this stream.", show_default=False
        ),
    ] = None,
    delete: Annotated[
        bool, typer.Option("--delete", help="Delete later duplicates from the stream itself.")
    ] = False,
) -> None:
    """Count (and optionally drop) duplicate outputs of a stream.

    Duplicates share ride_id (and elapsed time, for dynamic duration). Delivery is
    at-least-once, so a consumer crash can leave some.
    """
    from ridecast.stream.dedupe import dedupe_stream

    target = _open(broker)
    total = target.length(stream)
    if total == 0:
        raise RidecastError(
            f"stream {stream!r} on {mask_url(target.url)} is empty or does not exist"
        )
    with console.status(f"scanning {total:,} records of {escape(stream)}"):
        result = dedupe_stream(target, stream, into=into, delete=delete)
    done = []
    if into:
        done.append(f"wrote {result.written:,} unique records to {into}")
    if delete:
        done.append(f"deleted {result.deleted:,} duplicates from {stream}")
    console.print(
        f"{stream}: {result.scanned:,} records, {result.unique:,} unique, "
        f"{result.duplicates:,} duplicates, {result.unreadable:,} not ridecast outputs"
        + ("; " + "; ".join(done) if done else ""),
        markup=False,
    )


def register(app: typer.Typer) -> None:
    from ridecast.stream import consume_cli  # noqa: F401  (adds `stream consume`)

    app.add_typer(stream_app, name="stream")
