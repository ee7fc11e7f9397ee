"""Parquet folders, SQLite and PostgreSQL as sinks and sources: reruns replace, never duplicate."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ridecast.batch.job import score_month
from ridecast.batch.sinks import DirectorySink, MonthKey, SqlSink, open_sink
from ridecast.batch.sources import open_source
from ridecast.data.schema import TaxiType
from ridecast.errors import DataError
from ridecast.predictor import Predictor

from ..conftest import Trained
from .conftest import MONTH, make_dirty_month

GREEN = TaxiType.GREEN


def _source(spec: str | Path, table: str = "trips"):  # type: ignore[no-untyped-def]
    return open_source(str(spec), taxi_type=GREEN, month=MONTH, data_dir=Path("."), table=table)


def _month_file(trained: Trained) -> Path:
    return trained.data_dir / "green_tripdata_2025-02.parquet"


def test_folder_rerun_replaces_the_month_and_versions_sit_side_by_side(
    trained: Trained, predictor: Predictor, challenger: Predictor, tmp_path: Path
) -> None:
    sink = DirectorySink(tmp_path / "out")
    first = score_month(GREEN, MONTH, predictor, _source(_month_file(trained)), sink)
    second = score_month(GREEN, MONTH, predictor, _source(_month_file(trained)), sink)
    other = score_month(GREEN, MONTH, challenger, _source(_month_file(trained)), sink)

    key = MonthKey(GREEN, MONTH, predictor.name, predictor.version, "")
    partition = sink.partition(key)
    assert sorted(p.name for p in partition.iterdir()) == [
        f"output=ride-duration-v{predictor.version}",
        f"output=ride-duration-v{challenger.version}",
    ]
    # The run's predictions, rejects and record sit in one folder, all of the rerun.
    assert sorted(p.name for p in sink.output(key).iterdir()) == [
        "_rejects.parquet",
        "_run.json",
        "part-0.parquet",
    ]
    assert set(pq.read_table(sink.path(key, rejects=True))["run_id"].to_pylist()) <= {second.run_id}
    table = pq.read_table(sink.path(key))
    assert table.num_rows == first.rows_scored == second.rows_scored
    assert set(table["run_id"].to_pylist()) == {second.run_id}  # replaced, not appended
    both = pd.read_parquet(partition)
    assert len(both) == first.rows_scored + other.rows_scored
    assert not both.duplicated(["ride_id", "model_version"]).any()
    assert sink.completed(key) is not None
    assert sink.completed(key)["run_id"] == second.run_id  # type: ignore[index]
    assert not any((tmp_path / "out" / ".staging").iterdir())


def _sql_counts(sink: SqlSink, version: str) -> tuple[int, int, int]:
    if sink.backend == "sqlite":
        connection = sqlite3.connect(sink.target)
    else:
        import psycopg

        connection = psycopg.connect(sink.target)  # type: ignore[assignment]
    try:
        mark = "?" if sink.backend == "sqlite" else "%s"
        total, distinct = connection.execute(
            f"SELECT count(*), count(DISTINCT ride_id) FROM {sink.table} "
            f"WHERE model_version = {mark}",
            (version,),
        ).fetchone()
        rejects = connection.execute(
            f"SELECT count(*) FROM {sink.rejects_table} WHERE model_version = {mark}", (version,)
        ).fetchone()[0]
        return int(total), int(distinct), int(rejects)
    finally:
        connection.close()


@pytest.fixture
def pg_tables(postgres_url: str, unique_name: str) -> Iterator[tuple[str, str, str]]:
    import psycopg
    from sqlalchemy.engine import make_url

    tables = (f"{unique_name}_pred", f"{unique_name}_rej")
    yield postgres_url, *tables
    target = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(target) as connection:
        for table in tables:
            connection.execute(f"DROP TABLE IF EXISTS {table}")
        connection.execute("DELETE FROM ride_batch_runs WHERE sink_table = %s", (tables[0],))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sql_sink_rerun_makes_no_duplicates(
    backend: str,
    trained: Trained,
    predictor: Predictor,
    challenger: Predictor,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    if backend == "sqlite":
        sink = open_sink(f"sqlite:///{tmp_path / 'scores.db'}")
    else:
        url, table, rejects = request.getfixturevalue("pg_tables")
        sink = open_sink(url, table=table, rejects_table=rejects)
    assert isinstance(sink, SqlSink)
    first = score_month(GREEN, MONTH, predictor, _source(_month_file(trained)), sink)
    assert _sql_counts(sink, predictor.version) == (
        first.rows_scored,
        first.rows_scored,
        first.rows_rejected,
    )
    second = score_month(GREEN, MONTH, predictor, _source(_month_file(trained)), sink)
    assert _sql_counts(sink, predictor.version) == (
        first.rows_scored,
        first.rows_scored,
        first.rows_rejected,
    )
    score_month(GREEN, MONTH, challenger, _source(_month_file(trained)), sink)
    assert _sql_counts(sink, predictor.version)[0] == first.rows_scored  # v2 did not touch v1
    key = MonthKey(GREEN, MONTH, predictor.name, predictor.version, "")
    record = sink.completed(key)
    assert record is not None and record["run_id"] == second.run_id
    assert record["rows_read"] == first.rows_read


def _write_trips(url: str, table: str, frame: pd.DataFrame) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        frame.to_sql(table, engine, index=False, if_exists="replace", chunksize=5000)
    finally:
        engine.dispose()


def _drop(url: str, table: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    engine.dispose()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sql_source_scores_like_the_parquet_file(
    backend: str,
    predictor: Predictor,
    tmp_path: Path,
    unique_name: str,
    request: pytest.FixtureRequest,
) -> None:
    month = make_dirty_month(rows=4000, seed=11)
    pq.write_table(month, tmp_path / "month.parquet")
    frame = month.to_pandas()
    frame.insert(0, "source_row", np.arange(len(frame)))  # keeps the rows' order, so ride ids
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'trips.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    _write_trips(url, unique_name, frame)
    request.addfinalizer(lambda: _drop(url, unique_name) if backend == "postgresql" else None)
    from_file = DirectorySink(tmp_path / "a")
    from_sql = DirectorySink(tmp_path / "b")
    file_summary = score_month(
        GREEN, MONTH, predictor, _source(tmp_path / "month.parquet"), from_file
    )
    sql_summary = score_month(
        GREEN, MONTH, predictor, _source(url, table=unique_name), from_sql, chunk_rows=1000
    )
    key = MonthKey(GREEN, MONTH, predictor.name, predictor.version, "")
    a = pq.read_table(from_file.path(key)).to_pandas()
    b = pq.read_table(from_sql.path(key)).to_pandas()
    columns = ["pickup_datetime", "PULocationID", "DOLocationID", "predicted_duration", "diff"]
    pd.testing.assert_frame_equal(a[columns], b[columns])
    # SQL ride ids count the month's rows in the table's key order: unique and stable.
    assert b["ride_id"].is_unique and b["ride_id"].is_monotonic_increasing
    again = DirectorySink(tmp_path / "c")
    score_month(GREEN, MONTH, predictor, _source(url, table=unique_name), again)
    assert pq.read_table(again.path(key))["ride_id"].to_pylist() == b["ride_id"].tolist()
    # The SQL query selects the month by pickup time: other months' rows, and rows without a
    # pickup time, are not part of the month's input there.
    outside = file_summary.rejected["pickup_outside_month"] + file_summary.rejected["missing_time"]
    assert outside > 0
    assert sql_summary.rows_read == file_summary.rows_read - outside
    assert sql_summary.rejected["pickup_outside_month"] == 0
    assert sql_summary.rows_read == sql_summary.rows_scored + sql_summary.rows_rejected


def test_bad_sinks_are_refused_with_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected sqlite:///FILE"):
        open_sink("mysql://u@h/db")
    with pytest.raises(DataError, match="not a plain table name"):
        open_sink(f"sqlite:///{tmp_path / 'x.db'}", table="x; DROP TABLE y")
    with pytest.raises(DataError, match="does not exist"):
        open_sink(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="is a file"):
        open_sink(tmp_path / "file")
    with pytest.raises(DataError, match="not a supported database"):
        open_source("mysql://u@h/db", taxi_type=GREEN, month=MONTH, data_dir=tmp_path)


def test_staging_clean_up_removes_only_runs_that_are_certainly_gone(tmp_path: Path) -> None:
    """A folder is removed when its job ran on this host and its process is gone, or when nothing
    touched it for a day; never a live job's, here or on another host sharing the volume."""
    import os
    import socket
    import subprocess
    import sys

    from ridecast.batch.sinks import STALE_STAGING_SECONDS, remove_abandoned_staging

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    root = tmp_path / ".staging"
    owners = {
        "here-dead": f"{host} {gone.pid}",
        "here-alive": f"{host} {os.getpid()}",
        "other-host": f"another-host {gone.pid}",  # its pid means nothing here
        "other-host-old": f"another-host {gone.pid}",
        # A day-old job on another host, still appending to a file deep in its folder.
        "other-host-writing": f"another-host {gone.pid}",
        "no-pid-yet": None,  # a job between creating its folder and writing its pid
        "no-pid-old": None,
    }
    for name, owner in owners.items():
        (root / name / "output=m-v1").mkdir(parents=True)
        (root / name / "output=m-v1" / "part-0.parquet").write_bytes(b"partial")
        if owner is not None:
            (root / name / "pid").write_text(owner)
    old = time.time() - STALE_STAGING_SECONDS - 60
    for name in ("other-host-old", "no-pid-old", "other-host-writing"):
        for path in (root / name, *(root / name).rglob("*")):
            os.utime(path, (old, old))
    with (root / "other-host-writing" / "output=m-v1" / "part-0.parquet").open("ab") as file:
        file.write(b"another row group")
    remove_abandoned_staging(root)
    left = sorted(p.name for p in root.iterdir())
    assert left == ["here-alive", "no-pid-yet", "other-host", "other-host-writing"]


def test_a_running_job_keeps_its_staging_folder_fresh_while_it_computes(tmp_path: Path) -> None:
    """A job on another host that computes for over a day without writing a file keeps its
    folder: its heartbeat touches its owner file. Once it stops, the folder ages like any."""
    import os

    from ridecast.batch.sinks import (
        STALE_STAGING_SECONDS,
        StagingHeartbeat,
        remove_abandoned_staging,
    )

    root = tmp_path / ".staging"
    folder = root / "busy"
    (folder / "output=m-v1").mkdir(parents=True)
    heartbeat = StagingHeartbeat(folder, interval=0.05)
    (folder / "pid").write_text("another-host 4242")  # as that host's job wrote it
    old = time.time() - STALE_STAGING_SECONDS - 60

    def age() -> None:
        for path in (folder, *folder.rglob("*")):
            os.utime(path, (old, old))

    try:
        age()
        deadline = time.monotonic() + 10
        while (folder / "pid").stat().st_mtime == old:
            assert time.monotonic() < deadline, "the heartbeat never touched the owner file"
            time.sleep(0.02)
        remove_abandoned_staging(root)
        assert folder.is_dir()
    finally:
        heartbeat.stop()
    time.sleep(0.2)  # a beat in flight lands before the folder is aged again
    age()
    time.sleep(0.2)
    remove_abandoned_staging(root)
    assert not folder.exists()


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_month_is_swapped_in_whole_and_a_crash_mid_swap_never_mixes_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    """The run's folder (predictions, rejects, record) replaces the previous one in one step;
    where the atomic exchange is missing, a crash between the fallback's two renames leaves the
    run's folder absent (not scored), never the new rejects beside the old predictions."""
    from ridecast.batch import swap

    def folder(name: str, run: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        for file in ("part-0.parquet", "_rejects.parquet", "_run.json"):
            (path / file).write_text(run)
        return path

    final = tmp_path / "month" / "output=m-v1"
    swap.swap_in(folder("first", "a"), final)
    if not exchange:
        monkeypatch.setattr(swap, "_exchange", lambda a, b: False)
    swap.swap_in(folder("second", "b"), final)
    assert {p.read_text() for p in final.iterdir()} == {"b"} and len(list(final.iterdir())) == 3
    assert not (tmp_path / "second").exists()

    if exchange:
        assert swap._exchange(folder("probe", "c"), final)  # this file system has it
        return
    renames: list[tuple[object, object]] = []
    real = os.rename

    def crash_on_second(a: object, b: object) -> None:
        renames.append((a, b))
        if len(renames) == 3:  # 1: the plain try; 2: the old aside; 3: the new in
            raise OSError("killed mid-swap")
        real(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(swap.os, "rename", crash_on_second)
    with pytest.raises(OSError, match="killed mid-swap"):
        swap.swap_in(folder("third", "c"), final)
    assert not final.exists()  # not scored, rather than mixed
    monkeypatch.setattr(swap.os, "rename", real)
    swap.swap_in(folder("fourth", "d"), final)  # the rerun
    assert {p.read_text() for p in final.iterdir()} == {"d"}
