"""The demo's rollout step: a short canary from v1 to v2 under simulated riders.

Serves ride-duration, starts a canary to the challenger with the same operation as
``ridecast rollout start``, and lets simulated riders book rides and report how long each really
took. The server's controller judges the canary on that feedback; every transition is printed
with its reason as it happens.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

CANARY = """model: ride-duration
candidate: challenger
strategy: canary
steps:
  - set_weight: 30
  - analysis: {duration: 4s}
  - set_weight: 60
  - analysis: {duration: 4s}
analysis:
  min_samples: 100
  max_mae_ratio: 1.05
  max_error_rate: 0.01
  max_p99_latency_ms: 500
  timeout: 40s
"""


def demo_step(ctx: Any) -> None:
    import uvicorn

    from ridecast.control import ops
    from ridecast.data.readers import find_month_file
    from ridecast.registry import ModelRef
    from ridecast.riders import Riders, Rides
    from ridecast.web.app import create_app

    started = time.perf_counter()
    console = ctx.console
    console.rule("[bold]rollout: a canary from v1 to v2, judged on riders' feedback")
    settings = ctx.settings.model_copy(
        update={"serve_models": "ride-duration", "serve_watch_interval": 0.5}
    )
    app = create_app(settings, registry=ctx.registry)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(app, loop="uvloop", http="httptools", log_level="warning")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    rides = Rides.from_month(find_month_file(ctx.data_dir, ctx.taxi_type, ctx.valid_month))
    riders = Riders(url, rides, rate=150.0, threads=4, ride_seconds=(0.2, 0.8))
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the demo web server did not start")
            time.sleep(0.05)
        riders.start()
        store = app.service.store
        state = ops.start(settings, CANARY, registry=ctx.registry, store=store, actor="demo")
        console.print(f"[bold]ridecast rollout start[/] canary.yaml → {state.id}")
        seen = 0
        step = 0  # the step each transition ran: the one the rollout was at before it
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            history = store.history(state.id)
            for row in history[seen:]:
                console.print(
                    f"  step {step}  weight {row['weight']:>3}%  "
                    f"[cyan]{row['phase']:<12}[/] {row['reason']}"
                )
                step = row["step"]
            seen = len(history)
            current = store.get(state.id)
            if current is not None and not current.active:
                break
            time.sleep(0.25)
        riders.stop()
        champion = ctx.registry.resolve(ModelRef("ride-duration", "champion"))
        final = store.get(state.id)
        failed = len(riders.failed())
        console.print(
            f"[green]✓[/] rollout {final.phase if final else '?'}: champion is now v{champion}; "
            f"{len(riders.outcomes):,} rides booked, {riders.feedback_sent:,} outcomes reported, "
            f"{failed} failed requests; {time.perf_counter() - started:.1f}s. "
            "Try it: [bold]ridecast rollout start FILE[/] (see docs/rollout.md)"
        )
        ctx.results["rollout"] = {"phase": final.phase if final else None, "champion": champion}
    finally:
        riders.stop()
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
