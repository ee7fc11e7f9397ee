"""One rollout, every mode: a web server under load, a stream consumer and a batch job all
follow the same canary from the same state database, and agree on who gets which version."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ridecast.riders import Riders
from ridecast.rollout.router import Router, routing_key
from tests.e2e.conftest import Models
from tests.web.conftest import start_server, stop_server

pytestmark = pytest.mark.slow

HELD_CANARY = """model: ride-duration
candidate: challenger
strategy: canary
steps:
  - set_weight: 50
  - pause: {}
"""


def _run(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "ridecast", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_web_stream_and_batch_follow_the_same_canary(
    models: Models, redis_url: str, unique_name: str, tmp_path: Path
) -> None:
    import redis

    from ridecast.control.store import RolloutStore

    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    env = models.env(
        RIDECAST_PREDICTION_LOG_URL=f"sqlite:///{tmp_path / 'predictions.db'}",
        RIDECAST_STATE_URL=state_url,
        RIDECAST_BROKER_URL=redis_url,
    )
    (tmp_path / "canary.yaml").write_text(HELD_CANARY)
    _run(env, "rollout", "start", str(tmp_path / "canary.yaml"))
    state = RolloutStore(state_url).active("ride-duration")
    assert state is not None and state.weight == 50
    router = Router("1", state)

    server = start_server(env, ["--workers", "2"], tmp_path / "server.log")
    riders = Riders(server.base_url, models.rides, rate=250.0).start()
    started = time.monotonic()
    events, outputs = f"{unique_name}_events", f"{unique_name}_out"
    client = redis.Redis.from_url(redis_url)
    try:
        # Stream: replay rides, consume them until the stream is drained.
        _run(
            env,
            "stream",
            "produce",
            "--month",
            "2025-02",
            "--rate",
            "max",
            "--limit",
            "3000",
            "--stream",
            events,
        )
        _run(
            env,
            "stream",
            "consume",
            "--service",
            "duration",
            "--input-stream",
            events,
            "--output-stream",
            outputs,
            "--group",
            unique_name,
            "--from",
            "earliest",
            "--until-idle",
        )
        # Batch: score the month into a folder.
        sink = tmp_path / "batch"
        batch_out = _run(
            env, "batch", "score", "--taxi-type", "green", "--month", "2025-02", "--sink", str(sink)
        )
        remaining = started + 30.0 - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
    finally:
        riders.stop()
        stop_server(server)

    # Web: every rider got the version the router gives their user id; both versions answered.
    outcomes = riders.since(started)
    assert not riders.failed(started), riders.failed(started)[:5]
    assert riders.rate_since(started) >= 200 and time.monotonic() - started >= 30
    web_versions = {o.version for o in outcomes}
    assert web_versions == {"1", "2"}, web_versions
    wrong = [o for o in outcomes if o.version != router.route(routing_key(o.user, None)).version]
    assert not wrong, wrong[:5]

    # Stream: each output carries the version that answered, the one the router gives its ride.
    records = client.xrange(outputs)
    client.delete(events, outputs, f"{outputs}_shadow")
    assert len(records) == 3000
    stream_versions: dict[str, int] = {}
    for _, fields in records:
        out = json.loads(next(iter(fields.values())))
        ride_id = out["prediction"]["ride_id"]
        assert out["version"] == router.route(routing_key(None, ride_id)).version, out
        stream_versions[out["version"]] = stream_versions.get(out["version"], 0) + 1
    assert set(stream_versions) == {"1", "2"}
    assert 0.4 < stream_versions["2"] / len(records) < 0.6, stream_versions

    # Batch: the rows were split per ride by the same router, and the output says so.
    files = sorted((sink / "rollouts").rglob("part-0.parquet"))
    assert files, list(sink.rglob("*"))
    df = pd.concat(pd.read_parquet(f) for f in files)
    assert set(df["model_version"].astype(str)) == {"1", "2"}
    assert set(df["rollout_id"]) == {state.id}
    expected = [router.route(routing_key(None, r)).version for r in df["ride_id"].head(2000)]
    assert list(df["model_version"].astype(str).head(2000)) == expected
    assert 0.4 < (df["model_version"].astype(str) == "2").mean() < 0.6
    assert state.id in batch_out and "split" in batch_out.lower(), batch_out
