"""The last step of ``ridecast demo``: the dashboard over everything the demo did.

It serves the dashboard on its own, reads each page's data once the way the browser does (so the
demo says what a person will see), and prints the URL; with ``--keep-serving`` it stays up until
Ctrl-C, otherwise it stops with the demo and says how to bring it back.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.request
from typing import Any

from ridecast.dashboard.app import MOUNT, create_dashboard, standalone_app
from ridecast.dashboard.cli import DEFAULT_PORT

DRIFT_WAIT_SECONDS = 60.0


def _socket(port: int) -> socket.socket:
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:  # the usual port is taken: any free one will do
        sock.bind(("127.0.0.1", 0))
    return sock


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return dict(json.loads(response.read()))


def _summary(api: str) -> list[str]:
    """One line per page: what it shows now."""
    live = _get(f"{api}/live")
    versions = ", ".join(f"v{v['version']} {v['requests']:,}" for v in live["versions"])
    lines = [f"live service: {live['model'] or 'no model'} answers in the last 15m: {versions}"]
    rollout = _get(f"{api}/rollouts").get("rollout")
    if rollout:
        lines.append(
            f"rollouts: {rollout['strategy']} v{rollout['stable_version']}→"
            f"v{rollout['candidate_version']} {rollout['phase']}, "
            f"{len(rollout['analyses'])} analyses, {len(rollout['history'])} transitions"
        )
    runs = _get(f"{api}/batch")["runs"]
    shown = [f"{r['taxi_type']} {r['month']} v{r['version']} MAE {r['mae']:.2f}" for r in runs]
    lines.append(f"batch results: {', '.join(shown) or 'none'}")
    deadline = time.monotonic() + DRIFT_WAIT_SECONDS
    drift = _get(f"{api}/drift")
    while drift["current"]["status"] == "computing" and time.monotonic() < deadline:
        time.sleep(0.5)
        drift = _get(f"{api}/drift")
    current = drift["current"]
    if current["status"] == "ready":
        report = current["report"]
        flagged = ", ".join(report["drifted_columns"]) or "no column"
        lines.append(
            f"drift: {report['current_label']} against {report['reference_label']}: "
            f"{'drift' if report['dataset_drifted'] else 'no drift'} ({flagged} flagged)"
        )
    else:
        lines.append(f"drift: {current.get('message') or current['status']}")
    return lines


def show_dashboard(ctx: Any, *, keep_serving: bool = False) -> None:
    import uvicorn

    console = ctx.console
    console.rule("[bold]dashboard")
    app = standalone_app(create_dashboard(ctx.settings, registry=ctx.registry))
    sock = _socket(DEFAULT_PORT)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}{MOUNT}/"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.05)
        for line in _summary(url + "api"):
            console.print(f"[green]✓[/] {line}", highlight=False)
        home = ctx.settings.home
        if keep_serving:
            console.print(f"dashboard: [bold]{url}[/] (serving until Ctrl-C)", highlight=False)
            with contextlib.suppress(KeyboardInterrupt):
                while thread.is_alive():
                    thread.join(timeout=0.5)
        else:
            console.print(
                f"stopped with the demo; `ridecast demo --keep-serving` keeps it up, and "
                f"`RIDECAST_HOME={home} ridecast dashboard` shows it again",
                highlight=False,
            )
            console.print(f"dashboard: [bold]{url}[/]", highlight=False)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
