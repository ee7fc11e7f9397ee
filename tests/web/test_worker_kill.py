"""One worker of a real 2-worker server is killed with SIGKILL under load (the OOM killer, say).

The other worker keeps answering; the supervisor starts a replacement, which becomes ready;
``/metrics`` drops the dead worker's series (the versions it served) and keeps its requests; and
the requests that failed are only those whose connection was on the killed worker (at most one
per client connection), printed.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ridecast.riders import Riders, Rides
from tests.conftest import Trained
from tests.web.conftest import start_server, stop_server

pytestmark = pytest.mark.slow


def _health(base_url: str) -> dict[str, object]:
    with httpx.Client(timeout=10) as client:  # a new connection: any worker may answer
        return dict(client.get(f"{base_url}/health").json())


def _samples(base_url: str, name: str) -> list[tuple[dict[str, str], float]]:
    body = httpx.get(f"{base_url}/metrics", timeout=10).text
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == name
    ]


def _serving(base_url: str) -> set[int]:
    """The workers whose ``ridecast_model_info`` says they serve ride-duration v1 now."""
    return {
        int(labels["pid"])
        for labels, value in _samples(base_url, "ridecast_model_info")
        if labels["model"] == "ride-duration" and labels["model_version"] == "1" and value == 1
    }


def _answered(base_url: str) -> float:
    return sum(v for _, v in _samples(base_url, "ridecast_http_requests_total"))


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
        port = int(server.base_url.rsplit(":", 1)[1])
        supervisor = psutil.Process(server.process.pid)
        workers = {p.pid for p in supervisor.children() if p.name() != "resource_tracker"}
        workers = {
            pid for pid in workers if "spawn_main" in " ".join(psutil.Process(pid).cmdline())
        }
        assert len(workers) == 2, workers
        _wait(lambda: _serving(server.base_url) == workers, 15, "both workers in /metrics")

        rides = Rides.from_month(trained.data_dir / "green_tripdata_2025-02.parquet", limit=5000)
        riders = Riders(server.base_url, rides, rate=200.0).start()
        try:
            time.sleep(3)
            victim = min(workers)
            # Held still for the count, the victim dies with exactly these client connections.
            os.kill(victim, signal.SIGSTOP)
            on_victim = [
                c
                for c in psutil.Process(victim).net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
            ]
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()

            def replaced() -> bool:
                health = _health(server.base_url)
                return health["status"] == "ready" and health["pid"] not in workers

            took = _wait(replaced, 60, "a replacement worker answered ready")
            time.sleep(3)
            answered_before = _answered(server.base_url)
        finally:
            riders.stop()

        failed = riders.failed()
        after = [o for o in riders.since(killed_at) if o.status == 200]
        print(f"replacement ready {took:.1f} s after the kill; {len(after)} answered since")
        print(f"{len(on_victim)} client connections open on the victim when it was killed:")
        for c in on_victim:
            print(f"  from port {c.raddr.port}")
        for o in failed:
            print(f"  failed {o.at - killed_at:+.3f} s after the kill: {o.status}")
        assert len(failed) <= len(on_victim), failed  # one per connection it had, at most
        assert all(-0.5 < o.at - killed_at < 5 for o in failed), "failures away from the kill"
        in_first_second = [o for o in after if o.at - killed_at < 1.0]
        assert len(in_first_second) > 50, "the other worker stopped answering"
        # The dead worker's series are gone from /metrics: two workers serve v1, not three,
        # and neither is the victim. The requests it answered are still counted.
        survivors = workers - {victim}
        _wait(lambda: len(_serving(server.base_url)) == 2, 15, "/metrics dropped the dead worker")
        serving = _serving(server.base_url)
        assert victim not in serving and survivors < serving, (victim, serving)
        (replacement,) = serving - survivors
        assert replacement not in workers
        assert _answered(server.base_url) >= answered_before > 0
        assert "worker" in server.log() and str(victim) in server.log()
    finally:
        stop_server(server)
