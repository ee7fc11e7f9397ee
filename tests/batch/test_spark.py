"""The Spark engine, run for real on ``local[2]``: the local engine's results (columns,
partitions, rejects by reason, predictions to 1e-9; plain runs, comparisons and rollout splits)
and its guarantees (reruns replace, backfill skips and resumes), and one-line answers where
Spark cannot run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ridecast.batch.backfill import backfill
from ridecast.batch.job import REJECT_REASONS, ScoreSummary, score_month
from ridecast.batch.plan import ScoringPlan, plan_job
from ridecast.batch.sinks import DirectorySink
from ridecast.batch.sources import open_source
from ridecast.batch.spark_engine import score_month_spark
from ridecast.batch.spark_input import open_spark_input
from ridecast.data.schema import Month, TaxiType
from ridecast.data.synth import synthesize_month
from ridecast.errors import DataError
from ridecast.predictor import Predictor

from ..conftest import Trained
from .conftest import MONTH, make_dirty_month
from .test_follow_rollout import _canary

GREEN = TaxiType.GREEN
SCORE = ["batch", "score", "--month", "2025-02", "--engine", "spark"]
FLOAT_COLUMNS = {
    "predicted_duration",
    "diff",
    "abs_error",
    "candidate_predicted_duration",
    "candidate_abs_error",
    "prediction_diff",
}


def _output(sink: DirectorySink, summary: ScoreSummary) -> tuple[Path, pa.Table, pa.Table]:
    assert summary.key is not None
    output = sink.output(summary.key)
    parts = sorted(output.glob("part-*.parquet"))
    predictions = pa.concat_tables(pq.read_table(p) for p in parts).sort_by("ride_id")
    rejects = pq.read_table(output / "_rejects.parquet")
    return output.relative_to(sink.root), predictions, rejects


def _assert_same_run(
    spark: Any, plan: ScoringPlan, source: str, tmp_path: Path
) -> tuple[ScoreSummary, ScoreSummary]:
    """Score ``source`` with both engines; every output column and figure must agree."""
    local_sink, spark_sink = DirectorySink(tmp_path / "local"), DirectorySink(tmp_path / "spark")
    trips = open_source(source, taxi_type=GREEN, month=MONTH, data_dir=tmp_path)
    local = score_month(GREEN, MONTH, plan, trips, local_sink, chunk_rows=700)
    spark_trips = open_spark_input(spark, source, taxi_type=GREEN, month=MONTH, data_dir=tmp_path)
    on_spark = score_month_spark(spark, GREEN, MONTH, plan, spark_trips, spark_sink, chunk_rows=500)

    where, predictions, rejects = _output(local_sink, local)
    s_where, s_predictions, s_rejects = _output(spark_sink, on_spark)
    assert s_where == where  # the same kind/taxi_type=/year=/month=/output= folder
    assert s_predictions.schema.equals(predictions.schema)  # names, types and nullability
    assert s_rejects.schema.equals(rejects.schema)
    for name in predictions.column_names:
        if name in FLOAT_COLUMNS:
            gap = np.abs(s_predictions[name].to_numpy() - predictions[name].to_numpy())
            assert gap.max() <= 1e-9, name
        elif name != "run_id":
            assert s_predictions[name].equals(predictions[name]), name
    # Rejects: the same rows, reasons and raw values, in the same (ride id) order.
    assert s_rejects.drop_columns(["run_id"]).equals(rejects.drop_columns(["run_id"]))
    assert set(s_predictions["run_id"].to_pylist()) == {on_spark.run_id}

    assert on_spark.rejected == local.rejected
    assert on_spark.rows_read == local.rows_read == trips.total_rows
    assert on_spark.rows_read == on_spark.rows_scored + on_spark.rows_rejected
    assert on_spark.rows_scored == local.rows_scored == s_predictions.num_rows
    record, s_record = local.record(), on_spark.record()
    for figure in ("rmse", "mae", "mean_prediction", "std_prediction"):
        assert s_record[figure] == pytest.approx(record[figure], rel=1e-9), figure
    assert s_record["histograms"] == record["histograms"]
    stored = json.loads((spark_sink.root / s_where / "_run.json").read_text())
    assert stored["run_id"] == on_spark.run_id and stored["rows_scored"] == local.rows_scored
    return local, on_spark


@pytest.mark.parametrize("model", ["predictor", "challenger"])  # linear (compiled) and gbm
def test_spark_scores_a_dirty_month_as_the_local_engine_does(
    spark: Any, model: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    predictor: Predictor = request.getfixturevalue(model)
    # Two files of one month (a glob): ride ids count on across files, as the local engine's do.
    pq.write_table(make_dirty_month(3000), tmp_path / "green_tripdata_2025-02-a.parquet")
    pq.write_table(make_dirty_month(2000, seed=8), tmp_path / "green_tripdata_2025-02-b.parquet")
    source = str(tmp_path / "green_tripdata_2025-02-*.parquet")
    local, _ = _assert_same_run(spark, ScoringPlan(predictor), source, tmp_path)
    assert {r for r, n in local.rejected.items() if n} >= set(REJECT_REASONS)  # every kind of dirt
    assert local.rows_read == 5000


def test_a_comparison_and_a_rollout_split_on_spark_equal_the_local_engines(
    spark: Any, private: Trained, predictor: Predictor, challenger: Predictor, tmp_path: Path
) -> None:
    source = tmp_path / "green_tripdata_2025-02.parquet"
    pq.write_table(make_dirty_month(4000), source)

    compare = ScoringPlan(predictor, candidate=challenger)
    local, on_spark = _assert_same_run(spark, compare, str(source), tmp_path / "compare")
    assert on_spark.kind == "compare" and on_spark.comparison is not None
    assert local.comparison is not None
    for side in ("stable", "candidate"):
        for figure in ("mae", "rmse"):
            got = on_spark.comparison.record()[side][figure]
            assert got == pytest.approx(local.comparison.record()[side][figure], rel=1e-9)
    assert on_spark.comparison.far_apart == local.comparison.far_apart > 0

    state = _canary(private, weight=40)
    rollout = plan_job(private.settings, "models:/ride-duration@champion")
    assert rollout.kind == "rollout"
    local, on_spark = _assert_same_run(spark, rollout, str(source), tmp_path / "rollout")
    assert on_spark.split is not None and local.split is not None
    by_version = {v["version"]: v for v in on_spark.split.record()["versions"]}
    for v in local.split.record()["versions"]:
        assert by_version[v["version"]]["rows"] == v["rows"] > 1000
        assert by_version[v["version"]]["mae"] == pytest.approx(v["mae"], rel=1e-9)
    assert on_spark.split.rollout_id == state.id


def test_a_rerun_replaces_the_month_without_duplicates_and_hadoop_paths_read_alike(
    spark: Any, predictor: Predictor, tmp_path: Path
) -> None:
    source = tmp_path / "green_tripdata_2025-02.parquet"
    pq.write_table(make_dirty_month(2500), source)
    sink = DirectorySink(tmp_path / "out")
    local_path = open_spark_input(
        spark, str(source), taxi_type=GREEN, month=MONTH, data_dir=tmp_path
    )
    as_uri = open_spark_input(
        spark, source.as_uri(), taxi_type=GREEN, month=MONTH, data_dir=tmp_path
    )
    folder_uri = open_spark_input(
        spark, tmp_path.as_uri(), taxi_type=GREEN, month=MONTH, data_dir=tmp_path
    )
    assert as_uri.total_rows == local_path.total_rows == folder_uri.total_rows == 2500
    first = score_month_spark(spark, GREEN, MONTH, predictor, local_path, sink)
    second = score_month_spark(spark, GREEN, MONTH, predictor, as_uri, sink)
    assert second.run_id != first.run_id
    _, predictions, rejects = _output(sink, second)
    assert predictions.num_rows == second.rows_scored == first.rows_scored
    assert len(set(predictions.column("ride_id").to_pylist())) == predictions.num_rows
    assert set(predictions.column("run_id").to_pylist()) == {second.run_id}
    assert set(rejects.column("run_id").to_pylist()) == {second.run_id}
    assert sink.completed(second.key)["run_id"] == second.run_id  # type: ignore[arg-type,index]
    assert not list((sink.root / ".staging").glob("*"))


def test_a_column_that_is_not_numbers_fails_the_month_in_one_line_and_changes_nothing(
    spark: Any, predictor: Predictor, tmp_path: Path
) -> None:
    table = make_dirty_month(500)
    zones = pa.array(["north"] * table.num_rows)  # a file of another schema, not dirty rows
    table = table.set_column(table.schema.get_field_index("PULocationID"), "PULocationID", zones)
    source = tmp_path / "green_tripdata_2025-02.parquet"
    pq.write_table(table, source)
    sink = DirectorySink(tmp_path / "out")
    trips = open_spark_input(spark, str(source), taxi_type=GREEN, month=MONTH, data_dir=tmp_path)
    with pytest.raises(DataError) as failed:
        score_month_spark(spark, GREEN, MONTH, predictor, trips, sink)
    message = str(failed.value)
    assert message.startswith(f"{source}: Spark could not score green 2025-02: ")
    assert "north" in message and "\n" not in message
    assert not list(sink.root.glob("taxi_type=*")) and not list((sink.root / ".staging").iterdir())
    local = open_source(str(source), taxi_type=GREEN, month=MONTH, data_dir=tmp_path)
    with pytest.raises(DataError, match="expected timestamps, zone ids and distances as numbers"):
        score_month(GREEN, MONTH, predictor, local, DirectorySink(tmp_path / "local"))


def test_backfill_on_spark_skips_done_months_and_resumes_after_a_failure(
    spark: Any, trained: Trained, predictor: Predictor, tmp_path: Path
) -> None:
    from rich.console import Console

    from ridecast.batch.spark_cli import run_months

    data = tmp_path / "data"
    data.mkdir()
    for month in ("2025-01", "2025-02"):
        shutil.copy(trained.data_dir / f"green_tripdata_{month}.parquet", data)
    sink = DirectorySink(tmp_path / "out")
    months = [Month(2025, 1), Month(2025, 2), Month(2025, 3)]
    plan = ScoringPlan(predictor)
    score_one = run_months(Console(quiet=True), spark, plan, sink, GREEN, chunk_rows=5000)

    def run() -> list[str]:
        outcomes = backfill(
            GREEN, months, plan, sink, source=str(data), data_dir=data, score=score_one,
            open_month=lambda m: open_spark_input(spark, str(data), taxi_type=GREEN, month=m,
                                                  data_dir=data),
        )  # fmt: skip
        return [o.status for o in outcomes]

    assert run() == ["scored", "scored", "failed"]  # March's file is missing
    pq.write_table(
        synthesize_month(GREEN, Month(2025, 3), 3000, seed=3),
        data / "green_tripdata_2025-03.parquet",
    )
    assert run() == ["skipped", "skipped", "scored"]
    assert run() == ["skipped", "skipped", "skipped"]


@pytest.fixture
def cli(
    trained: Trained, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[[list[str]], tuple[int, str, str]]]:
    """Run ``ridecast`` (its console entry point) in this process: (exit status, stdout,
    stderr). A Spark run uses the test session's Spark session, as under spark-submit."""
    from ridecast.cli import main
    from ridecast.settings import get_settings

    for name in ("RIDECAST_HOME", "RIDECAST_DATA_DIR", "MLFLOW_TRACKING_URI"):
        monkeypatch.setenv(name, trained.env()[name])
    get_settings.cache_clear()

    def run(args: list[str]) -> tuple[int, str, str]:
        capsys.readouterr()
        with monkeypatch.context() as patch:
            patch.setattr(sys, "argv", ["ridecast", *args])
            with pytest.raises(SystemExit) as ended:
                main()
        out = capsys.readouterr()
        return int(ended.value.code or 0), out.out, out.err

    yield run
    get_settings.cache_clear()


def test_the_cli_scores_a_comparison_on_spark_with_the_local_engines_summary(
    spark: Any, cli: Any, tmp_path: Path
) -> None:
    sink = tmp_path / "scores"
    candidate = ["--candidate", "models:/ride-duration@challenger"]
    code, text, err = cli([*SCORE, *candidate, "--sink", str(sink)])
    assert code == 0, err
    assert "on Spark (local[2])" in text
    for needle in ("stable v1 vs candidate v2", "MAE vs actual", "candidate v2 is better",
                   "not written to the prediction log", "rows read"):  # fmt: skip
        assert needle in text, text
    output = sink / "comparisons/taxi_type=green/year=2025/month=02/output=ride-duration-v1-vs-v2"
    columns = pq.read_schema(output / "part-0.parquet").names
    assert "candidate_predicted_duration" in columns and "prediction_diff" in columns
    assert json.loads((output / "_run.json").read_text())["comparison"]["better"] == "candidate"


def test_the_cli_backfills_on_spark_and_prints_the_local_engines_lines(
    spark: Any, cli: Any, tmp_path: Path
) -> None:
    sink = tmp_path / "scores"
    args = ["batch", "backfill", "--engine", "spark", "--from", "2025-01", "--to", "2025-02"]
    code, text, err = cli([*args, "--sink", str(sink)])
    assert code == 0, err
    assert "2 scored, 0 skipped, 0 failed" in text
    for month in ("01", "02"):
        output = sink / f"taxi_type=green/year=2025/month={month}/output=ride-duration-v1"
        assert (output / "part-0.parquet").is_file() and (output / "_run.json").is_file()
    code, text, _ = cli([*args, "--sink", str(sink)])
    assert code == 0 and "0 scored, 2 skipped, 0 failed" in text


def _one_line(result: tuple[int, str, str], needle: str) -> str:
    """The run failed with exit status 2 and one line on stderr holding ``needle``."""
    code, _, err = result
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err, err
    return err


def test_what_the_spark_engine_does_not_do_is_refused_in_one_line(cli: Any, tmp_path: Path) -> None:
    sql = cli([*SCORE, "--sink", f"sqlite:///{tmp_path / 's.db'}"])
    _one_line(sql, "--engine spark writes a partitioned parquet folder, not a database")
    log = cli([*SCORE, "--log-predictions"])
    _one_line(log, "--log-predictions is not supported by --engine spark")
    source = cli([*SCORE, "--source", f"sqlite:///{tmp_path / 's.db'}"])
    _one_line(source, "the Spark engine reads TLC parquet files or folders")
    wrong = cli(["batch", "score", "--month", "2025-02", "--engine", "dask"])
    _one_line(wrong, "expected local or spark")
    master = cli(["batch", "score", "--month", "2025-02", "--master", "local[2]"])
    _one_line(master, "--master is an option of --engine spark")


def test_without_pyspark_or_java_the_command_says_what_to_install(
    cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "pyspark", None)  # as where the extra is not installed
        no_pyspark = cli(SCORE)
    _one_line(no_pyspark, "--engine spark needs pyspark, which is not installed: ")
    assert "pip install 'ridecast[spark]'" in no_pyspark[2]

    empty = tmp_path / "jdk"
    (empty / "bin").mkdir(parents=True)
    monkeypatch.setenv("JAVA_HOME", str(empty))
    err = _one_line(cli(SCORE), "needs Java 17 or newer, and there is no java in $JAVA_HOME/bin")
    assert "install a JDK" in err

    monkeypatch.delenv("JAVA_HOME")
    path = os.environ["PATH"].split(os.pathsep)
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in path if not Path(p, "java").exists()))
    _one_line(cli(SCORE), "needs Java 17 or newer, and there is no java on PATH")

    old = tmp_path / "old-jdk"
    (old / "bin").mkdir(parents=True)
    (old / "bin" / "java").write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\"' >&2\n")
    (old / "bin" / "java").chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(old))
    err = _one_line(cli(SCORE), "needs Java 17 or newer; ")
    assert "is Java 11" in err


def test_the_local_engine_never_imports_pyspark() -> None:
    code = (
        "import sys; from ridecast import cli; from ridecast.batch import cli as b, job, backfill;"
        "print('pyspark' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
