"""Credentials never reach what ridecast shows: a real server and the stream commands, given
passwords both in the user part of their URLs and in the query string.

PostgreSQL here trusts any password from loopback and redis-py lets an unneeded password pass,
so the secrets below are sent for real and the URLs work as written.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ridecast.stream.redis_streams import RedisStreamBroker
from tests.conftest import Trained
from tests.monitoring.proxy import Relay
from tests.web.conftest import start_server, stop_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PG_USER_SECRET = "pg-user-part-s3cret"
PG_QUERY_SECRET = "pg-query-s3cret"
REDIS_USER_SECRET = "redis-user-part-s3cret"
REDIS_QUERY_SECRET = "redis-query-s3cret"
SECRETS = (PG_USER_SECRET, PG_QUERY_SECRET, REDIS_USER_SECRET, REDIS_QUERY_SECRET)


def assert_no_secret(where: str, shown: str) -> None:
    leaked = [s for s in SECRETS if s in shown]
    assert not leaked, f"{where} shows {leaked}:\n{shown}"


@pytest.fixture
def database(postgres_url: str, unique_name: str) -> Iterator[str]:
    """A PostgreSQL database of the test's own (its URL without a password), dropped after."""
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{unique_name}"'))
    try:
        yield make_url(postgres_url).set(database=unique_name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{unique_name}" WITH (FORCE)'))
        admin.dispose()


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_the_server_masks_both_kinds_of_password_in_health_and_logs(
    trained: Trained, database: str, tmp_path: Path
) -> None:
    url = make_url(database)
    relay = Relay(url.host or "127.0.0.1", url.port or 5432)
    log_url = url.set(password=PG_USER_SECRET, port=relay.port).render_as_string(False)
    state_url = url.update_query_dict({"password": PG_QUERY_SECRET}).render_as_string(False)
    assert PG_USER_SECRET in log_url and PG_QUERY_SECRET in state_url
    env = {k: v for k, v in trained.env().items() if not k.startswith("RIDECAST_")}
    env.update(
        RIDECAST_HOME=str(trained.home),
        RIDECAST_PREDICTION_LOG_URL=log_url,
        RIDECAST_STATE_URL=state_url,
        PYTHONUNBUFFERED="1",
    )
    server = start_server(env, ["--model", "models:/ride-duration@champion"], tmp_path / "log")
    try:
        health = httpx.get(f"{server.base_url}/health", timeout=10)
        assert_no_secret("/health", health.text)
        body = health.json()
        assert body["rollout_state"].endswith("?password=***"), body["rollout_state"]
        assert ":***@127.0.0.1:" in body["prediction_log"]["url"], body["prediction_log"]

        # The log's database goes away: the server says so, naming the database, in its log.
        relay.cut()
        ride = {"PULocationID": 10, "DOLocationID": 50, "trip_distance": 4.2}
        for _ in range(5):
            assert httpx.post(f"{server.base_url}/predict", json=ride).status_code == 200

        def failing() -> bool:
            log = httpx.get(f"{server.base_url}/health", timeout=10).json()["prediction_log"]
            return bool(log["last_error"])

        wait_for(failing, 30, "/health to report the log's error")
        wait_for(lambda: "write failed" in server.log(), 30, "the server to log the failure")
        assert_no_secret(
            "/health while the log is down", httpx.get(f"{server.base_url}/health").text
        )
        relay.restore()
        server.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=60)
    finally:
        stop_server(server)
        relay.close()
    shown = server.log()
    assert_no_secret("the server's output", shown)
    failed = [line for line in shown.splitlines() if "write failed" in line]
    assert failed and all(":***@127.0.0.1:" in line for line in failed), failed
    print("\n".join(failed[:2]))


def ridecast(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ridecast", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_stream_status_and_dedupe_mask_both_kinds_of_password(
    trained: Trained, redis_url: str, unique_name: str
) -> None:
    scheme, _, rest = redis_url.partition("://")
    user_part = f"{scheme}://:{REDIS_USER_SECRET}@{rest.rpartition('@')[2]}"
    in_query = f"{redis_url}{'&' if '?' in redis_url else '?'}password={REDIS_QUERY_SECRET}"
    assert REDIS_USER_SECRET in user_part and REDIS_QUERY_SECRET in in_query
    stream = f"ridecast-test:{unique_name}:predictions"
    env = {k: v for k, v in trained.env().items() if not k.startswith("RIDECAST_")}
    env.update(RIDECAST_HOME=str(trained.home), COLUMNS="200")  # no wrapped table cells
    broker = RedisStreamBroker(redis_url)
    try:
        outputs = []
        for ride_id in (1, 2, 2):  # one duplicate
            record = {"model": "m", "version": "1", "prediction": {"ride_id": ride_id}}
            outputs.append(orjson.dumps(record))
        for broker_url in (user_part, in_query):
            empty = ridecast(
                "stream", "status", "--broker", broker_url, "--stream", stream, env=env
            )
            missing = ridecast("stream", "dedupe", stream, "--broker", broker_url, env=env)
            broker.publish(stream, outputs)
            status = ridecast(
                "stream", "status", "--broker", broker_url, "--stream", stream, env=env
            )
            deduped = ridecast("stream", "dedupe", stream, "--broker", broker_url, env=env)
            broker.delete([stream])
            for name, run in (
                ("status of no stream", empty),
                ("dedupe of no stream", missing),
                ("status", status),
                ("dedupe", deduped),
            ):
                assert_no_secret(f"stream {name} --broker {broker_url}", run.stdout + run.stderr)
            # The URL is shown (masked) where the command names the broker.
            assert empty.returncode == 0 and "***" in empty.stdout, empty.stdout
            assert missing.returncode == 2 and "***" in missing.stderr, missing.stderr
            assert status.returncode == 0 and stream in status.stdout, status.stdout
            assert deduped.returncode == 0, deduped.stderr
            assert "3 records, 2 unique, 1 duplicates" in deduped.stdout, deduped.stdout
            print(empty.stdout.strip(), "|", missing.stderr.strip())
    finally:
        broker.delete([stream])
        broker.close()
