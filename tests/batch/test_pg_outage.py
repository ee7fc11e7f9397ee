"""PostgreSQL goes away while a batch job writes a month into it: the job fails with a clear
message and exit status 2, the month keeps its previous run whole, and the rerun completes.

The database sits behind a TCP relay that the test cuts (connections reset, new ones refused),
so the PostgreSQL the other tests share keeps running.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.parquet as pq
import pytest

from ridecast.batch.sinks import MonthKey, SqlSink, open_sink
from ridecast.data.schema import TaxiType
from ridecast.data.synth import synthesize_month
from ridecast.predictor import Predictor
from tests.monitoring.proxy import Relay

from ..conftest import Trained
from .conftest import MONTH

GREEN = TaxiType.GREEN


def _score(trained: Trained, source: Path, url: str, table: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "ridecast", "batch", "score", "--month", str(MONTH)]
    command += ["--source", str(source), "--sink", url, "--chunk-rows", "2000"]
    command += ["--sink-table", table, "--rejects-table", f"{table}_rejects"]
    return subprocess.Popen(
        command, env=trained.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _month(sink: SqlSink) -> tuple[int, set[str]]:
    import psycopg

    with psycopg.connect(sink.target) as connection:
        rows = connection.execute(f"SELECT run_id, count(*) FROM {sink.table} GROUP BY run_id")
        found = dict(rows.fetchall())
    return sum(found.values()), set(found)


@pytest.mark.timeout(240)
def test_postgres_outage_mid_write_fails_clearly_and_leaves_the_month_as_it_was(
    trained: Trained, predictor: Predictor, pg_cleanup: str, unique_name: str, tmp_path: Path
) -> None:
    source = tmp_path / "green_tripdata_2025-02.parquet"
    pq.write_table(synthesize_month(GREEN, MONTH, 200_000, seed=5), source)
    sink = open_sink(pg_cleanup, table=unique_name, rejects_table=f"{unique_name}_rejects")
    assert isinstance(sink, SqlSink)
    key = MonthKey(GREEN, MONTH, predictor.name, predictor.version, "")

    first = _score(trained, source, pg_cleanup, unique_name)
    _, err = first.communicate(timeout=180)
    assert first.returncode == 0, err
    before = _month(sink)
    assert before[0] > 0 and len(before[1]) == 1

    parsed = urlparse(pg_cleanup)
    relay = Relay(parsed.hostname or "127.0.0.1", parsed.port or 5432)
    via_relay = pg_cleanup.replace(f":{parsed.port or 5432}/", f":{relay.port}/", 1)
    try:
        job = _score(trained, source, via_relay, unique_name)
        deadline = time.monotonic() + 90
        while not relay._sockets and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the job has opened the month: it is about to write
        time.sleep(0.3)
        assert job.poll() is None, "the job ended before the database went away"
        relay.cut()
        _, err = job.communicate(timeout=120)
    finally:
        relay.close()
    message = " ".join(err.split())
    print(message[-400:])
    assert job.returncode == 2, message[-2000:]
    assert "Traceback" not in err and f"to table {unique_name} in postgresql" in message, message
    assert _month(sink) == before  # the previous run, whole
    assert sink.completed(key)["run_id"] in before[1]  # type: ignore[index]

    rerun = _score(trained, source, pg_cleanup, unique_name)
    _, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, err
    total, runs = _month(sink)
    assert total == before[0] and len(runs) == 1 and runs != before[1]
