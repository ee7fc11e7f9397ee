"""A batch job follows the model's active rollout: rows routed by ride id, and it says so."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ridecast.batch.job import score_month
from ridecast.batch.plan import plan_job
from ridecast.batch.sinks import DirectorySink, MonthKey
from ridecast.batch.sources import open_source
from ridecast.control.store import RolloutStore
from ridecast.data.schema import TaxiType
from ridecast.predictor import Predictor
from ridecast.rollout.router import Router, routing_key
from ridecast.rollout.state import RolloutState

from ..conftest import Trained
from .conftest import MONTH

GREEN = TaxiType.GREEN


def _canary(private: Trained, weight: int = 50) -> RolloutState:
    now = time.time()
    state = RolloutState(
        id=f"ride-duration-test-{int(now * 1000)}",
        model="ride-duration",
        strategy="canary",
        stable_version="1",
        candidate_version="2",
        weight=weight,
        step_started_at=now,
        created_at=now,
        updated_at=now,
    )
    return RolloutStore(private.settings.resolved_state_url).create(state, reason="test")


def _score(private: Trained, tmp_path: Path, **plan_options: object):  # type: ignore[no-untyped-def]
    plan = plan_job(private.settings, "models:/ride-duration@champion", **plan_options)  # type: ignore[arg-type]
    source = open_source(None, taxi_type=GREEN, month=MONTH, data_dir=private.data_dir)
    sink = DirectorySink(tmp_path / "out")
    return plan, sink, score_month(GREEN, MONTH, plan, source, sink, chunk_rows=4000)


def test_rows_are_routed_by_ride_id_as_the_router_says_and_reruns_agree(
    private: Trained, tmp_path: Path
) -> None:
    state = _canary(private)
    plan, sink, summary = _score(private, tmp_path)
    assert plan.kind == "rollout" and plan.rollout_id == state.id
    key = MonthKey(GREEN, MONTH, "ride-duration", "1", "", rollout_id=state.id)
    out = pq.read_table(sink.path(key))
    assert "rollouts" in str(sink.path(key))
    assert {"model_version", "arm", "rollout_id"} <= set(out.column_names)
    versions = np.array(out["model_version"].to_pylist())
    arms = np.array(out["arm"].to_pylist())
    assert set(out["rollout_id"].to_pylist()) == {state.id}
    assert set(zip(versions.tolist(), arms.tolist(), strict=True)) == {
        ("1", "stable"),
        ("2", "canary"),
    }
    # Each row's version is the one the rollout's router gives its ride id (as web and stream).
    router = Router("1", state)
    expected = [
        router.route(routing_key(None, ride)).version for ride in out["ride_id"].to_pylist()
    ]
    assert versions.tolist() == expected
    share = float(np.mean(versions == "2"))
    assert 0.46 <= share <= 0.54, share
    for version in ("1", "2"):
        assert int(np.sum(versions == version)) > 1000
    figures = summary.record()["rollout"]
    assert figures["rollout_id"] == state.id and figures["weight"] == 50
    counts = {v["version"]: v["rows"] for v in figures["versions"]}
    assert counts == {"1": int(np.sum(versions == "1")), "2": int(np.sum(versions == "2"))}

    # A rerun (a new process would do the same: the hash is seeded by the rollout id) agrees.
    _, sink2, _ = _score(private, tmp_path / "again")
    again = pq.read_table(sink2.path(key))
    assert again["ride_id"].to_pylist() == out["ride_id"].to_pylist()
    assert again["model_version"].to_pylist() == versions.tolist()


def test_predictions_follow_each_rows_version(
    private: Trained, predictor: Predictor, challenger: Predictor, tmp_path: Path
) -> None:
    import pyarrow as pa

    from ridecast.batch.ride_ids import month_base
    from ridecast.features import RideArrays

    _canary(private, weight=30)
    _, _sink, summary = _score(private, tmp_path)
    assert summary.split is not None
    out = pq.read_table(next((tmp_path / "out" / "rollouts").rglob("part-0.parquet")))
    month_file = private.data_dir / "green_tripdata_2025-02.parquet"
    rows = pq.read_table(month_file).take(
        pa.array(out["ride_id"].to_numpy() - month_base(GREEN, MONTH))
    )
    rides = RideArrays(
        pu=rows["PULocationID"].to_numpy().astype(np.int64),
        do=rows["DOLocationID"].to_numpy().astype(np.int64),
        distance=rows["trip_distance"].to_numpy(zero_copy_only=False).astype(np.float64),
    )
    versions = np.array(out["model_version"].to_pylist())
    expected = np.where(
        versions == "2", challenger.predict_arrays(rides), predictor.predict_arrays(rides)
    )
    assert np.allclose(out["predicted_duration"].to_numpy(), expected, atol=1e-9)
    assert 0.26 <= float(np.mean(versions == "2")) <= 0.34


def test_no_follow_rollout_scores_everything_with_the_alias_version(
    private: Trained, tmp_path: Path
) -> None:
    _canary(private)
    plan, sink, summary = _score(private, tmp_path, follow_rollout=False)
    assert plan.kind == "score" and summary.split is None
    out = pq.read_table(sink.path(MonthKey(GREEN, MONTH, "ride-duration", "1", "")))
    assert set(out["model_version"].to_pylist()) == {"1"}
    assert "arm" not in out.column_names


@pytest.mark.timeout(300)
def test_cli_says_the_rows_were_split_and_logs_each_arm(private: Trained, tmp_path: Path) -> None:
    state = _canary(private)
    env = private.env() | {"COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "ridecast", "batch", "score", "--month", "2025-02",
         "--sink", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert f"split by rollout {state.id}" in text
    assert "rows were split between versions" in text
    assert "canary" in text and "v2" in text
    record = json.loads(
        next((tmp_path / "out" / "rollouts").glob("**/output=*rollout*/_run.json")).read_text()
    )
    counts = {v["arm"]: v["rows"] for v in record["rollout"]["versions"]}
    log_db = Path(private.settings.resolved_prediction_log_url.removeprefix("sqlite:///"))
    with sqlite3.connect(log_db) as db:
        logged = dict(
            db.execute(
                "SELECT arm, COUNT(*) FROM predictions WHERE source = 'batch' "
                "AND rollout_id = ? GROUP BY arm",
                (state.id,),
            ).fetchall()
        )
    assert logged == counts and set(counts) == {"stable", "canary"}


@pytest.mark.timeout(180)
def test_comparison_and_rollout_runs_into_postgresql_replace_only_themselves(
    private: Trained,
    predictor: Predictor,
    challenger: Predictor,
    postgres_url: str,
    unique_name: str,
    tmp_path: Path,
) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    from ridecast.batch.plan import ScoringPlan
    from ridecast.batch.sinks import SqlSink

    target = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    tables = {kind: f"{unique_name}_{kind}" for kind in ("cmp", "roll", "rej")}
    try:
        source = open_source(None, taxi_type=GREEN, month=MONTH, data_dir=private.data_dir)
        compare = SqlSink(postgres_url, table=tables["cmp"], rejects_table=tables["rej"])
        state = _canary(private)
        rollout_plan = plan_job(private.settings, "models:/ride-duration@champion")
        rollout = SqlSink(postgres_url, table=tables["roll"], rejects_table=tables["rej"])
        for _ in range(2):  # a rerun replaces each run's rows, nothing else
            done = score_month(
                GREEN, MONTH, ScoringPlan(predictor, candidate=challenger), source, compare
            )
            split = score_month(GREEN, MONTH, rollout_plan, source, rollout)
        with psycopg.connect(target) as db:
            n_cmp, pairs = db.execute(
                f"SELECT COUNT(*), COUNT(DISTINCT (model_version, candidate_model_version)) "
                f"FROM {tables['cmp']}"
            ).fetchone()  # type: ignore[misc]
            by_version = dict(
                db.execute(
                    f"SELECT model_version, COUNT(*) FROM {tables['roll']} "
                    f"WHERE rollout_id = %s GROUP BY model_version",
                    (state.id,),
                ).fetchall()
            )
            rejects = dict(
                db.execute(
                    f"SELECT model_version, COUNT(*) FROM {tables['rej']} GROUP BY model_version"
                ).fetchall()
            )
        assert n_cmp == done.rows_scored and pairs == 1
        assert split.split is not None
        assert by_version == {v["version"]: v["rows"] for v in split.split.record()["versions"]}
        assert rejects == {"1-vs-2": done.rows_rejected, f"rollout-{state.id}": split.rows_rejected}
    finally:
        with psycopg.connect(target) as db:
            for table in tables.values():
                db.execute(f"DROP TABLE IF EXISTS {table}")
            db.execute(
                "DELETE FROM ride_batch_runs WHERE sink_table = ANY(%s)",
                ([tables["cmp"], tables["roll"]],),
            )
