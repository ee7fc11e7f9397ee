"""The real server as a subprocess (2 workers): hot reload under load, a version that fails to
load, and SIGTERM under load: zero failed requests, readiness false first, exit status 0."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.web.conftest import start_server, stop_server

RIDE = {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 4.2}


@dataclass
class Load:
    """Threads posting single rides and 100-ride lists until stopped; every outcome recorded."""

    base_url: str
    threads: int = 4
    outcomes: list[tuple[float, int | str, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                body = RIDE if (i + n) % 3 else [RIDE] * 100
                started = time.monotonic()
                try:
                    answer = client.post("/predict", json=body)
                    data = answer.json() if answer.status_code == 200 else None
                    version = (data if isinstance(data, dict) else (data or [{}])[0]).get(
                        "model_version", ""
                    )
                    self.outcomes.append((started, answer.status_code, version))
                except httpx.HTTPError as exc:
                    self.outcomes.append((started, type(exc).__name__, ""))
                    time.sleep(0.01)
                i += 1

    def start(self) -> list[threading.Thread]:
        workers = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(self.threads)
        ]
        for w in workers:
            w.start()
        return workers

    def versions_since(self, t: float) -> set[str]:
        return {v for s, status, v in list(self.outcomes) if s >= t and status == 200}


@pytest.fixture
def own_model(trained):  # type: ignore[no-untyped-def]
    """A private copy of ride-duration v1 and v2 under a unique name, deleted afterwards, so
    moving its alias (and registering a broken version) affects no other test."""
    client = trained.registry.client
    name = f"ride-duration-web-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    for version in ("1", "2"):
        mv = client.get_model_version("ride-duration", version)
        client.create_model_version(name, source=mv.source, run_id=mv.run_id)
    trained.registry.set_alias(name, "champion", "1")
    try:
        yield name
    finally:
        client.delete_registered_model(name)


@pytest.mark.timeout(300)
def test_hot_reload_and_sigterm_under_load(
    trained, own_model: str, server_env, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server = start_server(
        server_env,
        [
            "--model",
            f"models:/{own_model}@champion",
            "--workers",
            "2",
            "--watch-interval",
            "0.3",
            "--shutdown-delay",
            "1.5",
        ],
        tmp_path / "server.log",
    )
    load = Load(server.base_url)
    threads = load.start()
    try:
        time.sleep(1.0)
        assert load.versions_since(0) == {"1"}

        # 1. Hot reload: the alias moves to v2; every worker swaps, no request fails.
        moved = time.monotonic()
        trained.registry.set_alias(own_model, "champion", "2")
        deadline = moved + 60
        while time.monotonic() < deadline:
            recent = time.monotonic() - 1.0
            if recent > moved + 1 and load.versions_since(recent) == {"2"}:
                break
            time.sleep(0.2)
        assert load.versions_since(time.monotonic() - 1.0) == {"2"}, server.log()

        # 2. A version that cannot load: the old one keeps serving; /health says why.
        broken = trained.registry.client.create_model_version(
            own_model, source=str(tmp_path / "no-such-model"), run_id=None
        )
        trained.registry.set_alias(own_model, "champion", str(broken.version))
        errors: set[int] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(errors) < 2:
            health = httpx.get(f"{server.base_url}/health", timeout=5).json()
            model = health["models"][own_model]
            if model["last_error"] and f"v{broken.version}" in model["last_error"]:
                assert model["version"] == "2" and health["status"] == "ready"
                errors.add(health["pid"])
            time.sleep(0.1)
        assert len(errors) == 2, f"both workers should report the failed load:\n{server.log()}"
        assert load.versions_since(time.monotonic() - 0.5) == {"2"}

        # 3. SIGTERM under load: readiness turns false first, in-flight requests finish, exit 0.
        readiness: list[tuple[float, int]] = []

        def watch_ready() -> None:
            while server.process.poll() is None:
                try:
                    code = httpx.get(f"{server.base_url}/health/ready", timeout=2).status_code
                    readiness.append((time.monotonic(), code))
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)

        watcher = threading.Thread(target=watch_ready, daemon=True)
        watcher.start()
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0, server.log()
        load.stop.set()
        for t in threads:
            t.join(timeout=30)
        watcher.join(timeout=10)
    finally:
        load.stop.set()
        stop_server(server)

    outcomes = list(load.outcomes)
    before = [o for o in outcomes if o[0] < signalled + 1.0]  # sent while still serving
    failed = [o for o in before if o[1] != 200]
    assert not failed, f"{len(failed)} of {len(before)} requests failed: {failed[:5]}"
    assert len(before) > 200
    assert not [o for o in outcomes if isinstance(o[1], int) and o[1] >= 500]
    assert any(code == 503 for t, code in readiness if t > signalled), readiness[-5:]
    log = server.log()
    assert "failed to load" in log and "Traceback" not in log


@pytest.mark.timeout(240)
def test_workers_exit_when_the_supervisor_is_killed(server_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL leaves no orphaned worker holding the port: each one notices and drains."""
    import os

    import psutil

    server = start_server(server_env, ["--workers", "2"], tmp_path / "server.log")
    try:
        workers = psutil.Process(server.process.pid).children()
        assert len(workers) >= 2  # the two workers (and multiprocessing's resource tracker)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"workers outlived their supervisor: {[p.pid for p in alive]}"
        assert "the supervisor (pid" in server.log()
    finally:
        stop_server(server)
