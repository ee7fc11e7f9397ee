"""The web service's demo step: serve the demo's models, call each protocol, hot-reload."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from rich.table import Table

RIDE = {"PULocationID": 74, "DOLocationID": 75, "trip_distance": 2.4, "ride_id": "demo-1"}


def demo_step(ctx: Any) -> None:
    import httpx
    import uvicorn

    from ridecast.registry import ModelRef
    from ridecast.web.app import create_app

    started = time.perf_counter()
    console = ctx.console
    console.rule("[bold]web service")
    settings = ctx.settings.model_copy(
        update={
            "serve_models": "ride-duration,ride-tip,ride-cost",
            "serve_watch_interval": 0.3,
        }
    )
    app = create_app(settings, registry=ctx.registry)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        uvicorn.Config(app, loop="uvloop", http="httptools", log_level="warning")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    champion = ctx.registry.resolve(ModelRef("ride-duration", "champion"))
    challenger = ctx.registry.resolve(ModelRef("ride-duration", "challenger"))
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the demo web server did not start")
            time.sleep(0.05)
        table = Table("protocol", "request", "answer")
        with httpx.Client(base_url=url, timeout=10) as client:

            def call(protocol: str, label: str, path: str, body: Any) -> dict[str, Any]:
                answer = client.post(path, json=body)
                data = answer.json()
                table.add_row(protocol, label, _short(data, answer.status_code))
                return data if isinstance(data, dict) else {"list": data}

            call("course API", "POST /predict (one ride)", "/predict", RIDE)
            call("course API", "POST /predict/ride-tip", "/predict/ride-tip", RIDE)
            call("course API", "POST /predict (bad zone)", "/predict", {**RIDE, "PULocationID": 0})
            cols = ["PULocationID", "DOLocationID", "trip_distance"]
            call(
                "MLflow",
                "POST /invocations (dataframe_split)",
                "/invocations",
                {"dataframe_split": {"columns": cols, "data": [[74, 75, 2.4], [132, 230, 17.8]]}},
            )
            call(
                "OIP v2",
                "POST /v2/models/ride-cost/infer",
                "/v2/models/ride-cost/infer",
                {
                    "inputs": [
                        {"name": c, "shape": [1], "datatype": d, "data": [v]}
                        for c, d, v in zip(
                            cols, ("INT64", "INT64", "FP64"), (74, 75, 2.4), strict=True
                        )
                    ]
                },
            )
            call(
                "course API",
                "POST /feedback",
                "/feedback",
                {"ride_id": "demo-1", "actual_duration": 11.0},
            )

            # Hot reload: move the champion alias to the challenger while serving.
            ctx.registry.set_alias("ride-duration", "champion", challenger)
            deadline = time.monotonic() + 15
            version = champion
            while version != challenger and time.monotonic() < deadline:
                version = client.post("/predict", json=RIDE).json()["model_version"]
                time.sleep(0.1)
            table.add_row(
                "hot reload",
                f"champion v{champion} → v{challenger}",
                f"responses now from v{version}",
            )
            metrics = client.get("/metrics").text
        console.print(table)
        served = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("ridecast_http_requests_total{")
        )
        log = app.service.prediction_log
        if log is not None:
            log.flush()
        console.print(
            f"[green]✓[/] web service on {url}: {served:.0f} requests in /metrics, "
            f"{log.written if log else 0} predictions in the log "
            f"({log.safe_url if log else ''}); "
            f"{time.perf_counter() - started:.1f}s. Run it yourself: [bold]ridecast serve[/]"
        )
        ctx.results["web"] = {"url": url, "hot_reload_to": version}
    finally:
        ctx.registry.set_alias("ride-duration", "champion", champion)
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _short(data: Any, status: int) -> str:
    import orjson

    text = orjson.dumps(data).decode()
    text = text if len(text) <= 90 else text[:87] + "..."
    return f"{status} {text}"
