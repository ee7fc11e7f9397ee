"""PostgreSQL goes away while a real 2-worker server logs predictions under load, and comes back.

The database sits behind a TCP relay that the test cuts (every connection reset, new ones
refused: what clients see when the server restarts) and restores, so the PostgreSQL the other
tests share keeps running. Counted request by request: every prediction answered is in the log
once the database is back, or counted as dropped in ``/metrics``; none is answered twice.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from sqlalchemy import create_engine, text

from ridecast.riders import Riders, Rides
from tests.conftest import Trained
from tests.monitoring.proxy import Relay
from tests.web.conftest import start_server, stop_server

pytestmark = pytest.mark.slow


def _dropped(base_url: str) -> float:
    body = httpx.get(f"{base_url}/metrics", timeout=10).text
    found = re.findall(r'^ridecast_prediction_log_rows_total\{state="dropped"\} (\S+)$', body, re.M)
    return sum(float(v) for v in found)


def _logged(url: str) -> tuple[int, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            total, distinct = conn.execute(
                text("SELECT count(*), count(DISTINCT ride_id) FROM predictions")
            ).one()
        return int(total), int(distinct)
    finally:
        engine.dispose()


@pytest.mark.timeout(300)
def test_postgres_outage_under_load_loses_no_answered_prediction(
    trained: Trained, pg_url: str, tmp_path: Path
) -> None:
    parsed = urlparse(pg_url)
    relay = Relay(parsed.hostname or "127.0.0.1", parsed.port or 5432)
    via_relay = pg_url.replace(f":{parsed.port or 5432}/", f":{relay.port}/", 1)
    env = {k: v for k, v in trained.env().items() if not k.startswith("RIDECAST_SERVE_")}
    env.update(RIDECAST_PREDICTION_LOG_URL=via_relay, PYTHONUNBUFFERED="1")
    args = ["--model", "models:/ride-duration@champion", "--workers", "2"]
    server = start_server(env, args, tmp_path / "server.log")
    rides = Rides.from_month(trained.data_dir / "green_tripdata_2025-02.parquet", limit=5000)
    riders = Riders(server.base_url, rides, rate=200.0).start()
    try:
        time.sleep(3)
        relay.cut()
        cut_at = time.monotonic()
        during: dict[str, Any] = {}
        while time.monotonic() - cut_at < 6:
            time.sleep(0.5)
            log = httpx.get(f"{server.base_url}/health", timeout=10).json()["prediction_log"]
            if log["last_error"] and log["pending"] > 0:
                during = log
        relay.restore()
        time.sleep(3)
    finally:
        riders.stop()
    try:
        answered = [o for o in riders.outcomes if o.status == 200]
        failed = riders.failed()
        print(f"answered {len(answered)}, failed {len(failed)}; /health while cut: {during}")
        assert not failed, failed[:10]  # serving went on through the outage
        assert len(answered) > 1000
        assert during, "/health never said why the log was not written while the database was away"
        assert str(relay.port) in during["url"]
        # The log catches up: every answered prediction once, or counted as dropped.
        deadline = time.monotonic() + 90
        while True:
            (total, distinct), dropped = _logged(pg_url), _dropped(server.base_url)
            if total + dropped >= len(answered) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        print(f"logged {total} ({distinct} distinct), dropped {dropped:.0f}")
        assert total == distinct, "a prediction was logged twice"
        assert total + dropped == len(answered), (total, dropped, len(answered))
        assert dropped == 0  # far below the pending bound: nothing had to go
        health = httpx.get(f"{server.base_url}/health", timeout=10).json()["prediction_log"]
        assert health["last_error"] is None and health["pending"] == 0, health
    finally:
        stop_server(server)
        relay.close()
