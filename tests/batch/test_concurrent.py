"""Two batch jobs on the same month and sink: while one writes, the other fails at once with a
message naming the holder, and the month holds one complete run, never a mix. A holder killed
with SIGKILL leaves no lock behind.

The holder is a real process running the sink's own writer (so the test decides when it
commits); the second job is the real ``ridecast batch score``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ridecast.batch.sinks import DirectorySink, MonthKey, SqlSink, open_sink
from ridecast.data.schema import TaxiType
from ridecast.predictor import Predictor

from ..conftest import Trained
from .conftest import MONTH

GREEN = TaxiType.GREEN
HOLDER = """
import sys
from ridecast.batch.outputs import MonthKey, REJECT_SCHEMA
from ridecast.batch.sinks import open_sink
from ridecast.data.schema import Month, TaxiType
spec, table, name, version = sys.argv[1:5]
sink = open_sink(spec, table=table, rejects_table=table + "_rejects")
key = MonthKey(TaxiType.GREEN, Month(2025, 2), name, version, "holder-run")
writer = sink.open_month(key)
print("locked", flush=True)
if sys.stdin.readline().strip() == "commit":
    writer.commit({"run_id": "holder-run"})
    print("committed", flush=True)
"""


def _holder(trained: Trained, spec: str, table: str, p: Predictor) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, spec, table, p.name, p.version],
        env=trained.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line == "locked", line + (process.stderr.read() if process.stderr else "")
    return process


def _score(
    trained: Trained, source: Path, spec: str, table: str
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ridecast", "batch", "score", "--month", str(MONTH)]
    command += ["--source", str(source), "--sink", spec]
    command += ["--sink-table", table, "--rejects-table", f"{table}_rejects"]
    return subprocess.run(command, env=trained.env(), capture_output=True, text=True, timeout=180)


def _run_ids(sink: DirectorySink | SqlSink, key: MonthKey) -> tuple[set[str], set[str]]:
    """The run ids found in the month's predictions and in its rejects."""
    if isinstance(sink, DirectorySink):
        found = []
        for rejects in (False, True):
            path = sink.path(key, rejects=rejects)
            found.append(
                set(pq.read_table(path).column("run_id").to_pylist()) if path.exists() else set()
            )
        return found[0], found[1]
    if sink.backend == "sqlite":
        connection = sqlite3.connect(sink.target)
    else:
        import psycopg

        connection = psycopg.connect(sink.target)  # type: ignore[assignment]
    try:
        return tuple(  # type: ignore[return-value]
            {row[0] for row in connection.execute(f"SELECT DISTINCT run_id FROM {t}").fetchall()}
            for t in (sink.table, sink.rejects_table)
        )
    finally:
        connection.close()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", ["folder", "sqlite", "postgresql"])
def test_a_second_job_on_a_month_being_written_fails_clearly_and_never_mixes(
    backend: str,
    trained: Trained,
    predictor: Predictor,
    dirty_file: Path,
    tmp_path: Path,
    unique_name: str,
    request: pytest.FixtureRequest,
) -> None:
    if backend == "folder":
        spec = str(tmp_path / "out")
    elif backend == "sqlite":
        spec = f"sqlite:///{tmp_path / 'scores.db'}"
    else:
        spec = request.getfixturevalue("pg_cleanup")
    sink = open_sink(spec, table=unique_name, rejects_table=f"{unique_name}_rejects")
    key = MonthKey(GREEN, MONTH, predictor.name, predictor.version, "")

    # A first job scores the month; a holder then starts a second write of it and keeps it open.
    first = _score(trained, dirty_file, spec, unique_name)
    assert first.returncode == 0, first.stderr
    (before,), (before_rejects,) = _run_ids(sink, key)
    holder = _holder(trained, spec, unique_name, predictor)
    try:
        refused = _score(trained, dirty_file, spec, unique_name)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        message = " ".join(refused.stderr.split())
        assert "being written by another job" in message, message
        assert f"{MONTH}" in message and key.stem in message, message
        if backend != "postgresql":
            assert f"pid {holder.pid}" in message, message
        # The refused job changed nothing: the first run's rows, all of them.
        assert _run_ids(sink, key) == ({before}, {before_rejects})
        assert sink.completed(key)["run_id"] == before  # type: ignore[index]
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # dies holding the lock: the OS releases it
        holder.wait(timeout=30)

    rerun = _score(trained, dirty_file, spec, unique_name)
    assert rerun.returncode == 0, rerun.stderr
    (after,), (after_rejects,) = _run_ids(sink, key)
    assert after == after_rejects != before  # one run's predictions and rejects, not a mix
    assert sink.completed(key)["run_id"] == after  # type: ignore[index]


def test_the_holder_commits_and_the_month_is_its_run_alone(
    trained: Trained, predictor: Predictor, dirty_file: Path, tmp_path: Path
) -> None:
    spec = str(tmp_path / "out")
    first = _score(trained, dirty_file, spec, "t")
    assert first.returncode == 0, first.stderr
    holder = _holder(trained, spec, "t", predictor)
    assert _score(trained, dirty_file, spec, "t").returncode == 2
    out, err = holder.communicate("commit\n", timeout=60)
    assert holder.returncode == 0 and "committed" in out, err
    sink = open_sink(spec, table="t", rejects_table="t_rejects")
    key = MonthKey(GREEN, MONTH, predictor.name, predictor.version, "")
    # The holder wrote no rows: its commit replaced the month whole (empty), not half of it.
    assert _run_ids(sink, key) == (set(), set())
    assert sink.completed(key)["run_id"] == "holder-run"  # type: ignore[index]
