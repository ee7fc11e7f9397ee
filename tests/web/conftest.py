"""Fixtures of the web tests: a real ridecast server on a loopback port, over the real registry."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from ridecast.settings import Settings
from ridecast.web.app import RidecastApp, create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    base_url: str
    app: RidecastApp
    settings: Settings

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10)


def _serve_in_thread(app: RidecastApp) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, loop="uvloop", http="httptools", lifespan="on", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="session")
def served(trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:  # type: ignore[no-untyped-def]
    """ride-duration (first), ride-tip and ride-cost, no alias watching, a small body limit."""
    log_dir = tmp_path_factory.mktemp("web-log")
    settings = trained.settings.model_copy(
        update={
            "serve_models": "ride-duration,ride-tip,ride-cost",
            "serve_watch_interval": 0.0,
            "serve_max_body_bytes": 65_536,
            "serve_max_rides": 500,
            "prediction_log_url": f"sqlite:///{log_dir / 'predictions.db'}",
        }
    )
    app = create_app(settings, registry=trained.registry)
    for url in _serve_in_thread(app):
        yield Served(url, app, settings)


@dataclass
class Subprocess:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    env: dict[str, str], args: list[str], log_path: Path, timeout: float = 150
) -> Subprocess:
    """``ridecast serve`` as a real subprocess; returns once /health/ready answers 200."""
    port = free_port()
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ridecast", "serve", "--port", str(port), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop_server ends the workers too
        )
    server = Subprocess(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/health/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise AssertionError(f"server not ready within {timeout}s:\n{server.log()}")


def stop_server(server: Subprocess) -> None:
    """Kill the server and every worker it started (its whole process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=30)


@pytest.fixture
def server_env(trained, tmp_path: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The registry's environment for a server subprocess, with its own prediction log."""
    env = {k: v for k, v in trained.env().items() if not k.startswith("RIDECAST_SERVE_")}
    env["RIDECAST_PREDICTION_LOG_URL"] = f"sqlite:///{tmp_path / 'predictions.db'}"
    env["PYTHONUNBUFFERED"] = "1"
    return env
