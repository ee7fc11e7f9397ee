"""`batch score --candidate`: both versions on every row, their difference and errors, a summary."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ridecast.batch.job import score_month
from ridecast.batch.plan import ScoringPlan
from ridecast.batch.ride_ids import month_base
from ridecast.batch.sinks import DirectorySink, MonthKey
from ridecast.batch.sources import open_source
from ridecast.data.schema import TaxiType
from ridecast.features import RideArrays
from ridecast.predictor import Predictor

from ..conftest import Trained
from .conftest import MONTH

GREEN = TaxiType.GREEN
CANDIDATE = "models:/ride-duration@challenger"


def _own_predictions(predictor: Predictor, source: pa.Table, ride_ids: np.ndarray) -> np.ndarray:
    """What ``predictor`` itself says for the output's rides, from the source rows."""
    rows = source.take(pa.array(ride_ids - month_base(GREEN, MONTH)))
    return predictor.predict_arrays(
        RideArrays(
            pu=rows["PULocationID"].to_numpy().astype(np.int64),
            do=rows["DOLocationID"].to_numpy().astype(np.int64),
            distance=rows["trip_distance"].to_numpy(zero_copy_only=False).astype(np.float64),
        )
    )


def test_both_versions_score_every_row_with_diff_errors_and_summary(
    trained: Trained, predictor: Predictor, challenger: Predictor, tmp_path: Path
) -> None:
    month_file = trained.data_dir / "green_tripdata_2025-02.parquet"
    source = open_source(str(month_file), taxi_type=GREEN, month=MONTH, data_dir=tmp_path)
    sink = DirectorySink(tmp_path / "out")
    plan = ScoringPlan(predictor, candidate=challenger)
    summary = score_month(GREEN, MONTH, plan, source, sink, chunk_rows=5000)

    key = MonthKey(GREEN, MONTH, "ride-duration", "1", "", candidate_version="2")
    path = sink.path(key)
    assert path.parent.parent == tmp_path / "out/comparisons/taxi_type=green/year=2025/month=02"
    out = pq.read_table(path)
    assert out.column_names == [
        "ride_id", "pickup_datetime", "PULocationID", "DOLocationID", "actual_duration",
        "predicted_duration", "diff", "model_version", "abs_error",
        "candidate_predicted_duration", "candidate_model_version", "candidate_abs_error",
        "prediction_diff", "run_id",
    ]  # fmt: skip
    assert out.num_rows == summary.rows_scored > 10_000
    ids = out["ride_id"].to_numpy()
    stable = out["predicted_duration"].to_numpy()
    candidate = out["candidate_predicted_duration"].to_numpy()
    actual = out["actual_duration"].to_numpy()
    source_table = pq.read_table(month_file)
    assert np.allclose(stable, _own_predictions(predictor, source_table, ids), atol=1e-9)
    assert np.allclose(candidate, _own_predictions(challenger, source_table, ids), atol=1e-9)
    assert not np.allclose(stable, candidate)  # two different models really answered
    assert np.allclose(out["prediction_diff"].to_numpy(), candidate - stable)
    assert np.allclose(out["abs_error"].to_numpy(), np.abs(actual - stable))
    assert np.allclose(out["candidate_abs_error"].to_numpy(), np.abs(actual - candidate))
    assert np.allclose(out["diff"].to_numpy(), actual - stable)  # the contract's column
    assert set(out["model_version"].to_pylist()) == {"1"}
    assert set(out["candidate_model_version"].to_pylist()) == {"2"}

    figures = summary.record()["comparison"]
    assert figures["rows"] == out.num_rows
    assert figures["stable"]["mae"] == pytest.approx(np.mean(np.abs(actual - stable)))
    assert figures["candidate"]["mae"] == pytest.approx(np.mean(np.abs(actual - candidate)))
    assert figures["stable"]["rmse"] == pytest.approx(np.sqrt(np.mean((actual - stable) ** 2)))
    assert figures["candidate"]["rmse"] == pytest.approx(
        np.sqrt(np.mean((actual - candidate) ** 2))
    )
    assert figures["mean_diff"] == pytest.approx(np.mean(candidate - stable))
    assert figures["mean_abs_diff"] == pytest.approx(np.mean(np.abs(candidate - stable)))
    assert figures["share_abs_diff_over_2min"] == pytest.approx(
        np.mean(np.abs(candidate - stable) > 2)
    )
    assert figures["better"] == "candidate"  # v2 (gbm) is the better model of the fixture
    # The run record in the sink carries the same comparison.
    record = json.loads((tmp_path / "out/comparisons/taxi_type=green/year=2025/month=02").joinpath(
        "output=ride-duration-v1-vs-v2/_run.json").read_text())  # fmt: skip
    assert record["comparison"] == figures


def _ridecast(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ridecast", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.timeout(300)
def test_cli_candidate_into_sql_prints_the_summary_and_logs_both_arms(
    trained: Trained, tmp_path: Path
) -> None:
    env = trained.env() | {
        "RIDECAST_PREDICTION_LOG_URL": f"sqlite:///{tmp_path / 'log.db'}",
        "RIDECAST_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "COLUMNS": "200",
    }
    sink = f"sqlite:///{tmp_path / 'scores.db'}"
    args = ["batch", "score", "--month", "2025-02", "--candidate", CANDIDATE, "--sink", sink]
    result = _ridecast(args, env)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for needle in ("stable v1 vs candidate v2", "MAE vs actual", "RMSE vs actual",
                   "share |diff| > 2 min", "candidate v2 is better", "prediction log"):  # fmt: skip
        assert needle in text, text

    with sqlite3.connect(tmp_path / "scores.db") as db:
        rows, versions = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT model_version || '/' || candidate_model_version) "
            "FROM ride_comparisons"
        ).fetchone()
        record = json.loads(db.execute("SELECT record FROM ride_batch_runs").fetchone()[0])
    assert versions == 1 and rows == record["rows_scored"] > 10_000
    assert record["comparison"]["rows"] == rows

    with sqlite3.connect(tmp_path / "log.db") as db:
        logged = dict(
            db.execute(
                "SELECT arm || ':' || version, COUNT(*) FROM predictions "
                "WHERE source = 'batch' GROUP BY arm, version"
            ).fetchall()
        )
    assert logged == {"stable:1": rows, "shadow:2": rows}

    # Run again: the comparison replaces itself; no duplicate rows.
    assert _ridecast([*args, "--no-log-predictions"], env).returncode == 0
    with sqlite3.connect(tmp_path / "scores.db") as db:
        assert db.execute("SELECT COUNT(*) FROM ride_comparisons").fetchone()[0] == rows


@pytest.mark.parametrize(
    ("candidate", "needles"),
    [
        ("models:/ride-duration@nope", ["--candidate models:/ride-duration@nope", "registry"]),
        ("models:/ride-duration@champion", ["--candidate", "nothing to compare"]),
        ("models:/ride-tip@champion", ["--candidate", "ride-duration"]),
        ("not a uri!", ["--candidate", "not understood"]),
    ],
)
def test_bad_candidate_is_one_line_exit_2_and_nothing_written(
    trained: Trained, tmp_path: Path, candidate: str, needles: list[str]
) -> None:
    env = trained.env() | {
        "RIDECAST_PREDICTION_LOG_URL": f"sqlite:///{tmp_path / 'log.db'}",
        "RIDECAST_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
    }
    out = tmp_path / "out"
    args = ["batch", "score", "--month", "2025-02", "--candidate", candidate, "--sink", str(out)]
    result = _ridecast(args, env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    text = " ".join(result.stderr.split())
    for needle in needles:
        assert needle in text, result.stderr
    assert not out.exists()
    assert not (tmp_path / "log.db").exists()


@pytest.mark.timeout(300)
def test_cli_backfill_compares_each_month_and_resumes(trained: Trained, tmp_path: Path) -> None:
    env = trained.env() | {
        "RIDECAST_PREDICTION_LOG_URL": f"sqlite:///{tmp_path / 'log.db'}",
        "RIDECAST_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
    }
    out = tmp_path / "out"
    args = ["batch", "backfill", "--from", "2025-01", "--to", "2025-02", "--sink", str(out),
            "--candidate", CANDIDATE, "--no-log-predictions"]  # fmt: skip
    first = _ridecast(args, env)
    assert first.returncode == 0, first.stderr
    assert "candidate v2" in first.stdout
    files = sorted(p.parent.name for p in (out / "comparisons").rglob("part-0.parquet"))
    assert files == ["output=ride-duration-v1-vs-v2"] * 2
    again = _ridecast(args, env)
    assert again.returncode == 0, again.stderr
    assert [line[:16] for line in again.stdout.splitlines() if line.startswith("2025-")] == [
        "2025-01  skipped",
        "2025-02  skipped",
    ]
    # The month summaries go to the dashboard's table; no answer went to the prediction log.
    assert _logged_predictions(tmp_path / "log.db") == 0


def _logged_predictions(database: Path) -> int:
    if not database.exists():
        return 0
    with sqlite3.connect(database) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if "predictions" not in tables:
            return 0
        return int(db.execute("SELECT count(*) FROM predictions").fetchone()[0])


@pytest.mark.timeout(300)
def test_a_candidate_run_logs_under_the_arms_of_the_rollout_it_compares(
    trained: Trained, tmp_path: Path
) -> None:
    """With a blue/green rollout of v1 → v2 active, `--candidate` logs v1's answers on arm `blue`
    (not `stable`) with the rollout's id, so that rollout's analysis pairs them with v2's."""
    import time

    from ridecast.control.measure import measure_url
    from ridecast.control.store import RolloutStore
    from ridecast.rollout.state import RolloutState

    log_url, state_url = f"sqlite:///{tmp_path / 'log.db'}", f"sqlite:///{tmp_path / 'state.db'}"
    now = time.time()
    rollout = RolloutStore(state_url).create(
        RolloutState(
            id="bg-batch",
            model="ride-duration",
            strategy="blue_green",
            stable_version="1",
            candidate_version="2",
            shadow_percent=100,
            step_started_at=now,
            created_at=now,
            updated_at=now,
        ),
        reason="test",
    )
    env = trained.env() | {"RIDECAST_PREDICTION_LOG_URL": log_url, "RIDECAST_STATE_URL": state_url}
    sink = f"sqlite:///{tmp_path / 'scores.db'}"
    args = ["batch", "score", "--month", "2025-02", "--candidate", CANDIDATE, "--sink", sink]
    result = _ridecast(args, env)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "log.db") as db:
        logged = dict(
            db.execute(
                "SELECT arm || ':' || version || ':' || rollout_id, COUNT(*) FROM predictions "
                "GROUP BY arm, version, rollout_id"
            ).fetchall()
        )
    assert set(logged) == {"blue:1:bg-batch", "shadow:2:bg-batch"}
    rows = logged["blue:1:bg-batch"]
    assert rows == logged["shadow:2:bg-batch"] > 10_000
    m = measure_url(log_url, rollout, now - 1, time.time() + 1, "duration")
    assert m.stable.requests == m.candidate.requests == m.shadow.n == rows
