"""Streaming fixtures: the real Redis (unique stream names, deleted afterwards), throwaway
redis-server processes for restart tests, and consumer subprocesses that are always stopped."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ridecast.stream.redis_streams import RedisStreamBroker
from tests.conftest import require_tool

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def group_consumers(broker: RedisStreamBroker, stream: str) -> int:
    """Consumers in the stream's first group; 0 until a consumer has created stream and group."""
    infos = broker.info([stream])
    groups = infos[0].groups if infos else []
    return groups[0].consumers if groups else 0


@dataclass
class Streams:
    """Unique stream and group names for one test."""

    prefix: str
    events: str = ""
    outputs: str = ""
    progress: str = ""
    group: str = ""

    def __post_init__(self) -> None:
        self.events = f"{self.prefix}:events"
        self.outputs = f"{self.prefix}:predictions"
        self.progress = f"{self.prefix}:progress"
        self.group = f"{self.prefix}-group"

    @property
    def dead(self) -> str:
        return f"{self.events}:dead-letter"

    @property
    def shadow(self) -> str:
        return f"{self.outputs}_shadow"

    def all(self) -> list[str]:
        return [
            self.events,
            self.outputs,
            self.shadow,
            self.progress,
            self.dead,
            f"{self.progress}:dead-letter",
        ]


@pytest.fixture
def broker(redis_url: str) -> Iterator[RedisStreamBroker]:
    b = RedisStreamBroker(redis_url)
    yield b
    b.close()


@pytest.fixture
def streams(unique_name: str, broker: RedisStreamBroker) -> Iterator[Streams]:
    s = Streams(f"ridecast-test:{unique_name}")
    yield s
    broker.delete(s.all())


@dataclass
class Consumers:
    """Starts ``ridecast stream consume`` subprocesses; every one is stopped at teardown."""

    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, url: str, s: Streams, *extra: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        cmd = [
            str(BIN / "ridecast"),
            "stream",
            "consume",
            "--broker",
            url,
            "--input-stream",
            s.events,
            "--output-stream",
            s.outputs,
            "--group",
            s.group,
            "--consumer",
            name,
            *extra,
        ]
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop(self, name: str, timeout: float = 20) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"consumer {name} ignored SIGTERM for {timeout}s") from None

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()


def private_state(env: dict[str, str], where: Path) -> dict[str, str]:
    """``env`` with a rollout state store and a prediction log of the test's own, so a
    consumer never follows (or writes to) the shared home's databases."""
    return {
        **env,
        "RIDECAST_STATE_URL": f"sqlite:///{where / 'state.db'}",
        "RIDECAST_PREDICTION_LOG_URL": f"sqlite:///{where / 'predictions.db'}",
    }


@pytest.fixture
def consumers(trained, tmp_path: Path) -> Iterator[Consumers]:  # type: ignore[no-untyped-def]
    c = Consumers(private_state(trained.env(), tmp_path), tmp_path)
    try:
        yield c
    finally:
        c.stop_all()


@dataclass
class RedisServer:
    """A throwaway redis-server on a free port, with an append-only file that survives restarts."""

    port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.data_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_until(up, 10, f"redis-server on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    require_tool("redis-server", "the restart and failover tests run a Redis of their own")
    data = tmp_path / "redis-data"
    data.mkdir()
    server = RedisServer(free_port(), data)
    server.start()
    try:
        yield server
    finally:
        server.kill()
