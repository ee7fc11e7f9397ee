"""The model registry becomes unreachable while a real server follows its alias under load.

The registry is MLflow on a PostgreSQL database of the test's own; the server reaches it
through a TCP relay that the test cuts. Meanwhile the alias moves to v2 (through a direct
connection). The server keeps answering with v1, ``/health`` says why it cannot check, and when
the relay is restored it moves to v2 whole, with no failed request at any point.

A rollout step that needs the registry (a promotion) waiting while it is down is tested in
``tests/control/test_controller.py::test_a_promotion_waits_while_the_registry_is_down``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from sqlalchemy import create_engine, text

from ridecast.riders import Riders, Rides
from tests.conftest import POSTGRES_URL, require_service
from tests.monitoring.proxy import Relay
from tests.web.conftest import start_server, stop_server

pytestmark = pytest.mark.slow


@pytest.fixture
def registry_db() -> Iterator[str]:
    """An MLflow tracking URI on a new, empty PostgreSQL database (dropped afterwards)."""
    require_service(POSTGRES_URL, 5432, "PostgreSQL")
    name = f"mlflow_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def _ridecast(env: dict[str, str], cwd: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ridecast", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(300)
def test_the_current_version_serves_while_the_registry_is_away_then_moves_whole(
    registry_db: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    base = {k: v for k, v in os.environ.items() if not k.startswith("RIDECAST_")}
    direct = {**base, "RIDECAST_HOME": str(home), "MLFLOW_TRACKING_URI": registry_db}
    for month, seed in (("2025-01", "1"), ("2025-02", "2")):
        synth = ("data", "synth", "--month", month, "--rows", "5000", "--seed", seed)
        _ridecast(direct, tmp_path, *synth)
    train = ("train", "ride-duration", "--train", "2025-01", "--valid", "2025-02")
    _ridecast(direct, tmp_path, *train, "--alias", "champion")
    _ridecast(direct, tmp_path, *train, "--algorithm", "gbm")  # v2, no alias yet

    parsed = urlparse(registry_db)
    relay = Relay(parsed.hostname or "127.0.0.1", parsed.port or 5432)
    via_relay = registry_db.replace(f":{parsed.port or 5432}/", f":{relay.port}/", 1)
    env = {
        **direct,
        "MLFLOW_TRACKING_URI": via_relay,
        "RIDECAST_SERVE_WATCH_INTERVAL": "0.5",
        "RIDECAST_PREDICTION_LOG_URL": f"sqlite:///{tmp_path / 'log.db'}",
        "PYTHONUNBUFFERED": "1",
    }
    server = start_server(env, ["--model", "models:/ride-duration@champion"], tmp_path / "s.log")
    rides = Rides.from_month(home / "data" / "green_tripdata_2025-02.parquet", limit=3000)
    riders = Riders(server.base_url, rides, rate=150.0).start()
    try:
        time.sleep(2)
        relay.cut()
        cut_at = time.monotonic()
        _ridecast(direct, tmp_path, "models", "alias", "ride-duration", "champion", "2")
        seen_error = None
        while time.monotonic() - cut_at < 8:
            time.sleep(0.5)
            health = httpx.get(f"{server.base_url}/health", timeout=10).json()
            slot = health["models"]["ride-duration"]
            if slot["last_error"]:
                seen_error = slot["last_error"]
                assert health["status"] == "ready" and slot["version"] == "1", health
        assert seen_error and "cannot reach the registry" in seen_error, seen_error
        during = riders.versions(cut_at)
        assert set(during) == {"1"}, during  # the current version served throughout
        relay.restore()
        restored_at = time.monotonic()
        deadline = restored_at + 60
        while time.monotonic() < deadline:
            if set(riders.versions(time.monotonic() - 1)) == {"2"}:
                break
            time.sleep(0.2)
        moved = time.monotonic() - restored_at
        time.sleep(1)
    finally:
        riders.stop()
        relay.close()
    try:
        print(f"while away: {seen_error}; moved to v2 {moved:.1f} s after the registry came back")
        assert set(riders.versions(time.monotonic() - 1.5)) == {"2"}, "did not move to v2"
        assert not riders.failed(), riders.failed()[:10]
        health = httpx.get(f"{server.base_url}/health", timeout=10).json()
        assert health["models"]["ride-duration"]["last_error"] is None, health
    finally:
        stop_server(server)
