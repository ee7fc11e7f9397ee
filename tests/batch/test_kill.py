"""A scoring process killed mid-month (SIGKILL while it writes) leaves nothing partial visible,
and scoring the month again completes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ridecast.batch.job import score_month
from ridecast.batch.sinks import DirectorySink, MonthKey, SqlSink, open_sink
from ridecast.batch.sources import open_source
from ridecast.data.schema import TaxiType
from ridecast.data.synth import synthesize_month
from ridecast.predictor import Predictor

from ..conftest import Trained
from .conftest import MONTH

GREEN = TaxiType.GREEN
ROWS = 300_000
CHUNK = 1_000  # small chunks: hundreds of writes, so the kill lands in the middle


@pytest.fixture(scope="module")
def big_month(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "green_tripdata_2025-02.parquet"
    pq.write_table(synthesize_month(GREEN, MONTH, ROWS, seed=9), path)
    return path


def _start(trained: Trained, source: Path, sink: str, table: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "ridecast", "batch", "score", "--month", str(MONTH)]
    command += ["--source", str(source), "--sink", sink, "--chunk-rows", str(CHUNK)]
    command += ["--sink-table", table, "--rejects-table", f"{table}_rejects"]
    return subprocess.Popen(
        command, env=trained.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _kill_when(process: subprocess.Popen[bytes], writing: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 90
    while not writing():
        if process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            pytest.fail(f"the job ended (status {process.returncode}) before the kill: {stderr}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the job did not start writing within 90 s")
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL  # killed, not finished


def _staging_file_growing(root: Path) -> Callable[[], bool]:
    def check() -> bool:
        files = list((root / ".staging").glob("*/output=*/part-0.parquet"))
        return bool(files) and files[0].stat().st_size > 200_000

    return check


def _table_created_then_a_moment(exists: Callable[[], bool]) -> Callable[[], bool]:
    seen: list[float] = []

    def check() -> bool:
        if not seen and exists():
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] > 0.4

    return check


def _sqlite_has_table(path: Path, table: str) -> Callable[[], bool]:
    def check() -> bool:
        if not path.exists():
            return False
        try:
            with sqlite3.connect(path, timeout=0.1) as connection:
                return bool(
                    connection.execute(
                        "SELECT 1 FROM sqlite_master WHERE name = ?", (table,)
                    ).fetchone()
                )
        except sqlite3.Error:
            return False

    return check


def _pg_has_table(url: str, table: str) -> Callable[[], bool]:
    import psycopg
    from sqlalchemy.engine import make_url

    target = make_url(url).set(drivername="postgresql").render_as_string(False)

    def check() -> bool:
        with psycopg.connect(target) as connection:
            return connection.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None

    return check


def _sql_rows(sink: SqlSink) -> tuple[int, int]:
    if sink.backend == "sqlite":
        connection = sqlite3.connect(sink.target)
    else:
        import psycopg

        connection = psycopg.connect(sink.target)  # type: ignore[assignment]
    try:
        total, distinct = connection.execute(
            f"SELECT count(*), count(DISTINCT ride_id) FROM {sink.table}"
        ).fetchone()
        return int(total), int(distinct)
    finally:
        connection.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["folder", "sqlite", "postgresql"])
def test_killed_mid_month_leaves_nothing_partial_and_the_rerun_completes(
    backend: str,
    trained: Trained,
    predictor: Predictor,
    big_month: Path,
    tmp_path: Path,
    unique_name: str,
    request: pytest.FixtureRequest,
) -> None:
    if backend == "folder":
        spec = str(tmp_path / "out")
        writing = _staging_file_growing(tmp_path / "out")
    elif backend == "sqlite":
        spec = f"sqlite:///{tmp_path / 'scores.db'}"
        writing = _table_created_then_a_moment(
            _sqlite_has_table(tmp_path / "scores.db", unique_name)
        )
    else:
        spec = request.getfixturevalue("pg_cleanup")
        writing = _table_created_then_a_moment(_pg_has_table(spec, unique_name))

    _kill_when(_start(trained, big_month, spec, unique_name), writing)

    sink = open_sink(spec, table=unique_name, rejects_table=f"{unique_name}_rejects")
    key = MonthKey(GREEN, MONTH, predictor.name, predictor.version, "")
    assert sink.completed(key) is None
    if isinstance(sink, DirectorySink):
        assert not sink.path(key).exists() and not sink.path(key, rejects=True).exists()
        assert any((tmp_path / "out" / ".staging").iterdir())  # the dead run's leftovers
    else:
        assert _sql_rows(sink) == (0, 0)

    source = open_source(str(big_month), taxi_type=GREEN, month=MONTH, data_dir=tmp_path)
    summary = score_month(GREEN, MONTH, predictor, source, sink, chunk_rows=50_000)
    assert summary.rows_read == ROWS == summary.rows_scored + summary.rows_rejected
    assert sink.completed(key) is not None
    if isinstance(sink, DirectorySink):
        assert pq.ParquetFile(sink.path(key)).metadata.num_rows == summary.rows_scored
        assert not any((tmp_path / "out" / ".staging").iterdir())  # leftovers cleaned
    else:
        assert _sql_rows(sink) == (summary.rows_scored, summary.rows_scored)
