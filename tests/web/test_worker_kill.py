"""One worker of a real 2-worker server is killed with SIGKILL under load (the OOM killer, say).

The other worker keeps answering; the supervisor starts a replacement, which becomes ready;
``/metrics`` stops counting the dead worker's state; and the requests that failed are only those
whose connection was on the killed worker (at most one per client connection), printed.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from ridecast.riders import Riders, Rides
from tests.conftest import Trained
from tests.web.conftest import start_server, stop_server

pytestmark = pytest.mark.slow


def _health(base_url: str) -> dict[str, object]:
    with httpx.Client(timeout=10) as client:  # a new connection: any worker may answer
        return dict(client.get(f"{base_url}/health").json())


def _served(base_url: str) -> float:
    """``ridecast_model_info`` for ride-duration v1: 1 per worker serving it now."""
    body = httpx.get(f"{base_url}/metrics", timeout=10).text
    pattern = r'^ridecast_model_info\{model="ride-duration",model_version="1"\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, body, re.M))


def _wait(check: object, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout}s")


@pytest.mark.timeout(240)
def test_a_worker_killed_under_load_is_replaced_and_costs_only_its_connections(
    trained: Trained, server_env: dict[str, str], tmp_path: Path
) -> None:
    args = ["--model", "models:/ride-duration@champion", "--workers", "2"]
    server = start_server(server_env, args, tmp_path / "server.log")
    try:
        supervisor = psutil.Process(server.process.pid)
        workers = {p.pid for p in supervisor.children() if p.name() != "resource_tracker"}
        workers = {
            pid for pid in workers if "spawn_main" in " ".join(psutil.Process(pid).cmdline())
        }
        assert len(workers) == 2, workers
        _wait(lambda: _served(server.base_url) == 2, 15, "both workers in /metrics")

        rides = Rides.from_month(trained.data_dir / "green_tripdata_2025-02.parquet", limit=5000)
        riders = Riders(server.base_url, rides, rate=200.0).start()
        try:
            time.sleep(3)
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()

            def replaced() -> bool:
                health = _health(server.base_url)
                return health["status"] == "ready" and health["pid"] not in workers

            took = _wait(replaced, 60, "a replacement worker answered ready")
            time.sleep(3)
        finally:
            riders.stop()

        failed = riders.failed()
        after = [o for o in riders.since(killed_at) if o.status == 200]
        print(f"replacement ready {took:.1f} s after the kill; {len(after)} answered since")
        for o in failed:
            print(f"  failed {o.at - killed_at:+.3f} s after the kill: {o.status}")
        assert len(failed) <= riders.threads, failed  # one per client connection at most
        assert all(-0.5 < o.at - killed_at < 5 for o in failed), "failures away from the kill"
        in_first_second = [o for o in after if o.at - killed_at < 1.0]
        assert len(in_first_second) > 50, "the other worker stopped answering"
        # The dead worker's state is gone from /metrics: two workers serve v1, not three.
        _wait(lambda: _served(server.base_url) == 2, 15, "/metrics dropped the dead worker")
        assert "worker" in server.log() and str(victim) in server.log()
    finally:
        stop_server(server)
