"""The drop-in Lambda handler on the course's Kinesis test event, and `ridecast stream` as a user
runs it against the real Redis."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from ridecast.predictor import Predictor
from ridecast.settings import get_settings
from ridecast.stream import lambda_function
from ridecast.stream.broker import Output
from ridecast.stream.redis_streams import RedisStreamBroker
from ridecast.stream.services import SERVICES

from .conftest import Streams, free_port, private_state

RIDECAST = str(Path(sys.executable).parent / "ridecast")


def kinesis_event(*payloads: str) -> dict[str, object]:
    """What AWS hands a Kinesis-triggered function (the course's test event has one record)."""
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "1",
                    "sequenceNumber": f"4963008166608487929058118563032477039860870488080252928{i}",
                    "data": base64.b64encode(p.encode()).decode(),
                    "approximateArrivalTimestamp": 1654161514.132,
                },
                "eventSource": "aws:kinesis",
                "eventName": "aws:kinesis:record",
                "eventSourceARN": "arn:aws:kinesis:eu-west-1:000000000000:stream/ride_events",
            }
            for i, p in enumerate(payloads)
        ]
    }


# The course's event, pretty-printed as in its test file.
COURSE_EVENT = """{
        "ride": {
            "PULocationID": 130,
            "DOLocationID": 205,
            "trip_distance": 3.66
        },
        "ride_id": 256
    }"""


@pytest.fixture
def lambda_env(trained, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # type: ignore[no-untyped-def]
    for key, value in trained.env().items():
        if key.startswith(("RIDECAST_", "MLFLOW_")):
            monkeypatch.setenv(key, value)
    monkeypatch.setattr(lambda_function, "_registry", None)  # a fresh container
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_lambda_handler_answers_the_course_test_event(
    trained,  # type: ignore[no-untyped-def]
    lambda_env: None,
) -> None:
    from ridecast.stream import lambda_handler

    answer = lambda_handler(kinesis_event(COURSE_EVENT), None)
    predictor = Predictor(trained.registry.load("models:/ride-duration@champion"))
    expected = predictor.predict_rides(
        [{"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66}]
    )[0]
    assert answer == {
        "predictions": [
            {
                "model": "ride_duration_prediction_model",
                "version": predictor.version,
                "prediction": {"ride_duration": pytest.approx(expected), "ride_id": 256},
            }
        ]
    }
    registry = lambda_function._registry
    loaded = lambda_function.load_predictor()
    lambda_handler(kinesis_event(COURSE_EVENT), None)
    # One registry per container, and the version is loaded and warmed once.
    assert lambda_function._registry is registry and registry is not None
    assert lambda_function.load_predictor() is loaded


def test_lambda_handler_reports_bad_records_and_predicts_the_rest(
    trained,  # type: ignore[no-untyped-def]
    lambda_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RIDECAST_MODEL_URI", "models:/ride-duration@challenger")
    get_settings.cache_clear()
    from ridecast.stream import lambda_handler

    event = kinesis_event(COURSE_EVENT, '{"ride_id": 7}', COURSE_EVENT.replace("256", "257"))
    event["Records"].append({"kinesis": {"data": "%%% not base64", "sequenceNumber": "x"}})  # type: ignore[attr-defined]
    answer = lambda_handler(event, None)
    assert [p["prediction"]["ride_id"] for p in answer["predictions"]] == [256, 257]
    assert {p["version"] for p in answer["predictions"]} == {"2"}  # the challenger
    errors = answer["errors"]
    assert len(errors) == 2
    assert errors[0]["sequence_number"] == "x" and errors[1]["sequence_number"].endswith("1")
    assert "ride 7: field 'ride' must be an object" in errors[1]["error"]


def run(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`ridecast stream ...` in a new process, as a user runs it."""
    wide = {**env, "COLUMNS": "250"}  # tables keep long test stream names on one line
    return subprocess.run(
        [RIDECAST, "stream", *args], env=wide, capture_output=True, text=True, timeout=timeout
    )


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def ridecast_main(
    trained,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., Ran]:
    """`ridecast stream ...` through the console entry point, in this process (quick)."""
    from ridecast import cli
    from ridecast.stream import cli as stream_cli

    for key, value in trained.env().items():
        if key.startswith(("RIDECAST_", "MLFLOW_")):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    wide = Console(width=250)
    monkeypatch.setattr(stream_cli, "console", wide)

    def invoke(*args: str) -> Ran:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["ridecast", "stream", *args])
        code = 0
        try:
            cli.main()
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    yield invoke  # type: ignore[misc]
    get_settings.cache_clear()


@pytest.mark.timeout(300)
def test_produce_consume_status_dedupe_from_the_command_line(
    trained,  # type: ignore[no-untyped-def]
    redis_url: str,
    broker: RedisStreamBroker,
    streams: Streams,
    ridecast_main: Callable[..., Ran],
    tmp_path: Path,
) -> None:
    env = private_state(trained.env(), tmp_path)
    produced = ridecast_main(
        "produce",
        "--month",
        "2025-02",
        "--limit",
        "2000",
        "--rate",
        "max",
        "--dirty",
        "--progress",
        "--broker",
        redis_url,
        "--stream",
        streams.events,
        "--progress-stream",
        streams.progress,
    )
    assert produced.returncode == 0, produced.stderr
    assert f"sent 2,000 ride events to {streams.events}" in produced.stdout
    assert broker.length(streams.events) == 2000 and broker.length(streams.progress) > 0
    first = orjson.loads(broker.read_range(streams.events, count=1)[0].payload or b"")
    assert set(first) == {"ride", "ride_id"} and first["ride_id"] == "green/2025-02/0"
    broker.publish(streams.events, [b"not an event"])

    consumed = run(
        env,
        "consume",
        "--service",
        "duration",
        "--until-idle",
        "--broker",
        redis_url,
        "--input-stream",
        streams.events,
        "--output-stream",
        streams.outputs,
        "--group",
        streams.group,
    )
    assert consumed.returncode == 0, consumed.stderr
    outputs, dead = broker.length(streams.outputs), broker.length(streams.dead)
    assert outputs + dead == 2001 and dead >= 1 and outputs > 1900  # --dirty: invalid rows too
    assert f"stopped: {outputs:,} predicted" in consumed.stderr.replace("\n", " ")
    with sqlite3.connect(tmp_path / "predictions.db") as db:  # logged by default, all of it
        logged = db.execute(
            "SELECT count(*), count(DISTINCT ride_id), min(source) FROM predictions"
        ).fetchone()
    assert logged == (outputs, outputs, "stream:duration")

    status = ridecast_main("status", "--broker", redis_url, "--stream", streams.events)
    assert status.returncode == 0, status.stderr
    row = next(line for line in status.stdout.splitlines() if streams.group in line)
    cells = [c.strip() for c in row.split("│")]
    assert cells[1:3] == [streams.events, "2,001"] and cells[-3:-1] == ["0", "0"]  # pending, lag
    dead_row = next(line for line in status.stdout.splitlines() if streams.dead in line)
    assert f"│ {dead:,} " in dead_row

    # At-least-once: make one duplicate output, as a consumer crash might.
    copy = broker.read_range(streams.outputs, count=1)[0]
    broker.publish(streams.outputs, [Output(copy.payload or b"", copy.id)])
    deduped = ridecast_main("dedupe", streams.outputs, "--broker", redis_url, "--delete")
    assert deduped.returncode == 0, deduped.stderr
    assert "1 duplicates" in deduped.stdout and "deleted 1 duplicates" in deduped.stdout
    assert broker.length(streams.outputs) == outputs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["consume", "--service", "nope"], "unknown stream service 'nope'"),
        (["consume", "--from", "yesterday"], "--from 'yesterday' is not understood"),
        (["produce", "--rate", "fast"], "rate 'fast' is not understood"),
        (["status", "--broker", "memory://"], "memory:// broker lives inside one process"),
        (["status", "--broker", "kafka://x"], "broker URL 'kafka://x' is not supported"),
        (["status", "--broker", "redis://127.0.0.1:{port}/0"], "is unavailable during"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    ridecast_main: Callable[..., Ran], args: list[str], message: str
) -> None:
    result = ridecast_main(*[a.replace("{port}", str(free_port())) for a in args])
    assert result.returncode == 2
    assert message in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.stderr


def test_a_real_process_reports_errors_in_one_line(trained) -> None:  # type: ignore[no-untyped-def]
    result = run(trained.env(), "produce", "--rate", "fast", timeout=120)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.strip().startswith("error: rate 'fast' is not understood")


def test_cli_knows_every_service() -> None:
    from ridecast.stream.cli import SERVICE_NAMES

    assert list(SERVICE_NAMES) == list(SERVICES)
    assert json.loads(json.dumps(list(SERVICES))) == ["duration", "tip", "cost", "dynamic-duration"]


@pytest.mark.timeout(120)
def test_consumer_metrics_listen_on_loopback_unless_asked(
    trained,  # type: ignore[no-untyped-def]
    redis_url: str,
    streams: Streams,
    tmp_path: Path,
) -> None:
    import socket
    import time
    import urllib.request

    import psutil

    port = free_port()
    env = private_state(trained.env(), tmp_path)
    args = ["stream", "consume", "--broker", redis_url, "--metrics-port", str(port)]
    args += ["--input-stream", streams.events, "--output-stream", streams.outputs]
    args += ["--group", streams.group]
    process = subprocess.Popen([RIDECAST, *args], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "the metrics server never listened"
            time.sleep(0.2)
        listening = {
            c.laddr.ip
            for c in psutil.Process(process.pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        assert listening == {"127.0.0.1"}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"ridecast_" in response.read()
    finally:
        process.terminate()
        process.wait(timeout=30)
