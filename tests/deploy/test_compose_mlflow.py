"""The compose stack's MLflow service, run for real from its own command line: it admits the
other containers by the name they use for it, and a model trained through it by one container
is scored by another that shares nothing with the first but the server.

Only the two stores are swapped for local ones (SQLite for PostgreSQL, a temporary folder for
the volume), the address for a loopback port and the workers for one; every other option, the
allowed hosts among them, is the compose file's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from tests.deploy.compose_file import command, environment, option, services

RIDECAST = [sys.executable, "-m", "ridecast"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _replace(args: list[str], name: str, value: str) -> list[str]:
    assert name in args, f"the compose command has no {name}"
    i = args.index(name)
    return [*args[: i + 1], value, *args[i + 2 :]]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, artifact folder) of the compose MLflow service's command, run locally."""
    root = tmp_path_factory.mktemp("compose-mlflow")
    port = _free_port()
    args = command(services()["mlflow"])
    args = _replace(args, "--host", "127.0.0.1")
    args = _replace(args, "--port", str(port))
    args = _replace(args, "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}")
    args = _replace(args, "--artifacts-destination", str(root / "artifacts"))
    args = _replace(args, "--workers", "1")  # one is enough for one client, and starts faster
    log = root / "mlflow.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", *args],
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the workers stop with it
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text(errors="replace")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.3)
        yield url, root / "artifacts"
    finally:
        # Its stores are temporary: nothing to flush, so no graceful stop to wait for.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_mlflow_admits_the_stack_by_name_and_nobody_else(mlflow_server: tuple[str, Path]) -> None:
    url, _ = mlflow_server
    search = f"{url}/api/2.0/mlflow/experiments/search"
    # The name every ridecast container reaches it by, and the browser on the published port.
    tracking = urlparse(environment(services()["api"])["MLFLOW_TRACKING_URI"])
    published = services()["mlflow"]["ports"][0].rsplit(":", 1)[-1]
    for host in (tracking.netloc, f"localhost:{published}"):
        answer = httpx.post(search, json={"max_results": 1}, headers={"Host": host}, timeout=10)
        assert answer.status_code == 200, (host, answer.text)
        # New experiments keep their artifacts behind the server's proxy, not on a client's disk.
        (default,) = answer.json()["experiments"]
        assert default["artifact_location"].startswith("mlflow-artifacts:")
    refused = httpx.post(search, json={}, headers={"Host": "attacker.invalid:5000"}, timeout=10)
    assert refused.status_code == 403


def _run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [*RIDECAST, *args], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, f"ridecast {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.timeout(240)
def test_a_model_trained_through_it_is_scored_from_another_home(
    mlflow_server: tuple[str, Path], tmp_path: Path
) -> None:
    """As the train job and the batch job do: two containers, two RIDECAST_HOMEs, one server."""
    url, artifacts = mlflow_server
    all_services = services()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RIDECAST_", "MLFLOW_"))}
    data = tmp_path / "data"
    trainer = {
        **base,
        "RIDECAST_HOME": str(tmp_path / "trainer"),
        "RIDECAST_DATA_DIR": str(data),
        "MLFLOW_TRACKING_URI": url,
    }
    for job in ("synth-train", "synth-month"):
        _run([*command(all_services[job]), "--rows", "3000"], trainer)
    _run(command(all_services["train"]), trainer)
    assert list(artifacts.rglob("MLmodel")), "the model's files are not in the server's store"
    assert not list((tmp_path / "trainer").rglob("MLmodel")), "the trainer kept the files"

    batch = command(all_services["batch"])
    sink = tmp_path / "scores"
    batch = _replace(batch, "--sink", str(sink))
    scorer = {**trainer, "RIDECAST_HOME": str(tmp_path / "scorer")}
    _run([*batch, "--no-log-predictions", "--no-follow-rollout"], scorer)
    year, month = (option(batch, "--month") or "").split("-")
    taxi = option(batch, "--taxi-type")
    partition = sink / f"taxi_type={taxi}" / f"year={year}" / f"month={month}"
    assert list(partition.rglob("*.parquet")), list(sink.rglob("*"))
