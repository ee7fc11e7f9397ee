"""The prediction log's disk fills up while a real server answers riders, then space returns.

The log is a SQLite file on a small tmpfs of its own (mounting needs root: CI runs as root; a
laptop run without it skips, CI fails). A filler file takes every free byte; serving goes on,
``/health`` says why nothing is written, and once the filler is removed every answered
prediction is in the log, or counted as dropped in ``/metrics``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ridecast.riders import Riders, Rides
from tests.conftest import Trained
from tests.monitoring.test_log_outage_under_load import _dropped
from tests.web.conftest import start_server, stop_server

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        message = f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message} (CI=true runs as root and must mount it)")
        pytest.skip(message)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> Path:
    """A file that takes every free byte of ``folder``'s file system."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    # Unbuffered, so closing the file has nothing left to flush into the full disk.
    with filler.open("wb", buffering=0) as out:
        while True:
            try:
                written = out.write(chunk)
            except OSError:
                break
            if not written:
                break
    return filler


@pytest.mark.timeout(300)
def test_a_full_log_disk_never_stops_serving_and_the_log_recovers(
    trained: Trained, small_disk: Path, tmp_path: Path
) -> None:
    database = small_disk / "predictions.db"
    env = {k: v for k, v in trained.env().items() if not k.startswith("RIDECAST_SERVE_")}
    env.update(RIDECAST_PREDICTION_LOG_URL=f"sqlite:///{database}", PYTHONUNBUFFERED="1")
    server = start_server(env, ["--model", "models:/ride-duration@champion"], tmp_path / "s.log")
    rides = Rides.from_month(trained.data_dir / "green_tripdata_2025-02.parquet", limit=5000)
    riders = Riders(server.base_url, rides, rate=200.0).start()
    try:
        time.sleep(2)
        filler = _fill(small_disk)
        full_at = time.monotonic()
        during: dict[str, Any] = {}
        while time.monotonic() - full_at < 6:
            time.sleep(0.5)
            log = httpx.get(f"{server.base_url}/health", timeout=10).json()["prediction_log"]
            if log["last_error"]:
                during = log
        filler.unlink()  # space returns
        time.sleep(3)
    finally:
        riders.stop()
    try:
        answered = [o for o in riders.outcomes if o.status == 200]
        failed = riders.failed()
        print(f"answered {len(answered)}, failed {len(failed)}; /health while full: {during}")
        assert not failed, failed[:10]
        assert during and "full" in during["last_error"], during
        deadline = time.monotonic() + 60
        while True:
            with sqlite3.connect(database, timeout=10) as connection:
                total, distinct = connection.execute(
                    "SELECT count(*), count(DISTINCT ride_id) FROM predictions"
                ).fetchone()
            dropped = _dropped(server.base_url)
            if total + dropped >= len(answered) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        print(f"logged {total} ({distinct} distinct), dropped {dropped:.0f}")
        assert total == distinct
        assert total + dropped == len(answered), (total, dropped, len(answered))
        health = httpx.get(f"{server.base_url}/health", timeout=10).json()["prediction_log"]
        assert health["last_error"] is None and health["pending"] == 0, health
    finally:
        stop_server(server)
