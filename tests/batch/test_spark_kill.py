"""A Spark scoring job killed mid-month (SIGKILL while Spark writes) leaves the previous month
whole and visible, and scoring the month again completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from ridecast.batch.sinks import DirectorySink
from ridecast.batch.spark_engine import score_month_spark
from ridecast.batch.spark_input import open_spark_input
from ridecast.data.schema import TaxiType
from ridecast.data.synth import synthesize_month
from ridecast.predictor import Predictor

from ..conftest import Trained
from .conftest import MONTH

GREEN = TaxiType.GREEN


def test_a_killed_spark_job_leaves_the_old_month_and_a_rerun_completes(
    spark: Any, trained: Trained, predictor: Predictor, tmp_path: Path
) -> None:
    source = tmp_path / "green_tripdata_2025-02.parquet"
    pq.write_table(synthesize_month(GREEN, MONTH, 300_000, seed=9), source)
    sink = DirectorySink(tmp_path / "out")
    trips = open_spark_input(spark, str(source), taxi_type=GREEN, month=MONTH, data_dir=tmp_path)
    old = score_month_spark(spark, GREEN, MONTH, predictor, trips, sink)
    assert old.key is not None
    output = sink.output(old.key)

    command = [sys.executable, "-m", "ridecast", "batch", "score", "--engine", "spark"]
    command += ["--master", "local[2]", "--month", str(MONTH), "--source", str(source)]
    command += ["--sink", str(sink.root), "--chunk-rows", "1000"]  # small batches: a long write
    process = subprocess.Popen(
        command, env=trained.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not list((sink.root / ".staging").glob("*/spark-predictions/_temporary")):
        if process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            pytest.fail(f"the job ended (status {process.returncode}) before the kill: {stderr}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the Spark job did not start writing within 120 s")
        time.sleep(0.02)
    time.sleep(1.0)  # well into the write
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL  # killed, not finished

    # Readers still see the old run, whole: its record, its rows, nothing of the killed one.
    assert sink.completed(old.key) is not None
    assert sink.completed(old.key)["run_id"] == old.run_id  # type: ignore[index]
    assert [p.name for p in output.parent.iterdir()] == [output.name]
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in output.glob("part-*.parquet"))
    assert rows == old.rows_scored

    again = score_month_spark(spark, GREEN, MONTH, predictor, trips, sink)
    assert sink.completed(old.key)["run_id"] == again.run_id  # type: ignore[index]
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in output.glob("part-*.parquet"))
    assert rows == again.rows_scored == old.rows_scored
    assert not list((sink.root / ".staging").iterdir())  # the killed job's staging is gone
