"""Migrations: a database made by ridecast before them is upgraded in place with its rows; a new
one gets exactly the tables the code uses; many processes may upgrade at once; Alembic leaves
ridecast's logging alone."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from ridecast.monitoring import PredictionBatch, PredictionLog, migrate, schema

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]

# What ridecast's create_all emitted before migrations existed (copied from its CREATE output).
LEGACY_DDL = {
    "sqlite": """
CREATE TABLE predictions (
    id INTEGER NOT NULL, ts DATETIME NOT NULL, model VARCHAR(64) NOT NULL,
    version VARCHAR(32) NOT NULL, ride_id VARCHAR(128), user_id VARCHAR(128),
    pu_location_id INTEGER NOT NULL, do_location_id INTEGER NOT NULL,
    trip_distance FLOAT NOT NULL, prediction FLOAT NOT NULL, latency_ms FLOAT NOT NULL,
    source VARCHAR(32) NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_predictions_ride_id ON predictions (ride_id);
CREATE TABLE feedback (
    id INTEGER NOT NULL, ts DATETIME NOT NULL, ride_id VARCHAR(128) NOT NULL,
    target VARCHAR(16) NOT NULL, actual FLOAT NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_feedback_ride_id ON feedback (ride_id);
""",
    "postgresql": """
CREATE TABLE predictions (
    id SERIAL NOT NULL, ts TIMESTAMP WITH TIME ZONE NOT NULL, model VARCHAR(64) NOT NULL,
    version VARCHAR(32) NOT NULL, ride_id VARCHAR(128), user_id VARCHAR(128),
    pu_location_id INTEGER NOT NULL, do_location_id INTEGER NOT NULL,
    trip_distance FLOAT NOT NULL, prediction FLOAT NOT NULL, latency_ms FLOAT NOT NULL,
    source VARCHAR(32) NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_predictions_ride_id ON predictions (ride_id);
CREATE TABLE feedback (
    id SERIAL NOT NULL, ts TIMESTAMP WITH TIME ZONE NOT NULL, ride_id VARCHAR(128) NOT NULL,
    target VARCHAR(16) NOT NULL, actual FLOAT NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_feedback_ride_id ON feedback (ride_id);
""",
}


def _legacy_database(url: str) -> None:
    engine = create_engine(url)
    ts: object = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    if engine.dialect.name == "sqlite":
        ts = "2025-03-01 12:00:00.000000"
    with engine.begin() as conn:
        for statement in LEGACY_DDL[engine.dialect.name].split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)
        conn.execute(
            text(
                "INSERT INTO predictions (ts, model, version, ride_id, user_id, pu_location_id, "
                "do_location_id, trip_distance, prediction, latency_ms, source) VALUES "
                "(:ts, 'ride-duration', '1', 'old-1', NULL, 10, 20, 2.5, 14.0, 0.4, 'web'), "
                "(:ts, 'ride-duration', '1', 'old-2', 'u7', 11, 21, 3.5, 17.0, 0.6, 'batch')"
            ),
            {"ts": ts},
        )
        conn.execute(
            text(
                "INSERT INTO feedback (ts, ride_id, target, actual) VALUES "
                "(:ts, 'old-1', 'duration', 15.0), (:ts, 'old-1', 'duration', 99.0), "
                "(:ts, 'old-2', 'duration', 16.0)"
            ),
            {"ts": ts},
        )
    engine.dispose()


def _schema_diff(url: str) -> list[object]:
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    engine.dispose()
    return [d for d in diff if "ridecast_log_version" not in str(d)]


def _one(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        got = [tuple(r) for r in conn.execute(text(sql))]
    engine.dispose()
    return got


def test_a_database_made_before_migrations_is_upgraded_with_its_rows(db_url: str) -> None:
    _legacy_database(db_url)
    log = PredictionLog(db_url)
    log.log(
        PredictionBatch(
            "ride-duration",
            "2",
            "web",
            np.array([1]),
            np.array([2]),
            np.array([1.5]),
            np.array([9.0]),
            0.3,
            ["new-1"],
            arm="canary",
            rollout_id="r1",
            request_ids=["q1"],
        )
    )
    log.log_feedback("old-2", "duration", 50.0)  # already stored before the upgrade: once
    log.log_feedback("new-1", "duration", 8.0)
    log.close()
    assert log.feedback_counts["duplicate"] == 1 and log.feedback_counts["recorded"] == 1
    got = _one(
        db_url,
        "select ride_id, user_id, prediction, source, arm, rollout_id, request_id "
        "from predictions order by id",
    )
    assert got == [
        ("old-1", None, 14.0, "web", "stable", None, None),
        ("old-2", "u7", 17.0, "batch", "stable", None, None),
        ("new-1", None, 9.0, "web", "canary", "r1", "q1"),
    ]
    # The repeated feedback kept its first value; one row per ride and target from now on.
    feedback = _one(db_url, "select ride_id, actual from feedback order by ride_id")
    assert feedback == [("new-1", 8.0), ("old-1", 15.0), ("old-2", 16.0)]
    assert _one(db_url, "select version_num from ridecast_log_version") == [
        (migrate.head_revision(),)
    ]
    assert _schema_diff(db_url) == []


def test_a_new_database_gets_exactly_the_tables_the_code_uses(db_url: str) -> None:
    PredictionLog(db_url).close()
    assert _schema_diff(db_url) == []
    engine = create_engine(db_url)
    names = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"predictions", "feedback", "prediction_errors", "ridecast_log_version"} <= names
    # The rollout state store's tables too: it shares the database by default (migration 0005).
    assert {"rollouts", "rollout_transitions", "rollout_leases", "rollout_workers"} <= names


UPGRADE = """
import sys, time
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
from ridecast.monitoring import PredictionLog
log = PredictionLog(sys.argv[1])
log.close()
print("ok")
"""


def test_several_processes_upgrade_the_same_database_at_once(db_url: str) -> None:
    start = time.time() + 3.0  # after every interpreter has imported ridecast
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", UPGRADE, db_url, str(start)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == "ok"
    assert _one(db_url, "select version_num from ridecast_log_version") == [
        (migrate.head_revision(),)
    ]
    assert _schema_diff(db_url) == []


def test_alembic_leaves_ridecast_logging_alone(tmp_path: Path) -> None:
    ours = logging.getLogger("ridecast.web")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    PredictionLog(f"sqlite:///{tmp_path / 'log.db'}").close()  # a fresh database: migrations run
    assert not ours.disabled and not logging.getLogger("ridecast.monitoring").disabled
    assert root.handlers == handlers and root.level == level


# What the rollout state store's create_all emitted before migration 0005 made its tables (the
# same text on SQLite and PostgreSQL but for the transitions' id).
LEGACY_STORE_DDL = """
CREATE TABLE rollout_leases (
    name VARCHAR(64) NOT NULL, holder VARCHAR(128) NOT NULL, expires_at FLOAT NOT NULL,
    PRIMARY KEY (name));
CREATE TABLE rollout_transitions (
    id {serial} NOT NULL, rollout_id VARCHAR(64) NOT NULL, ts FLOAT NOT NULL,
    phase VARCHAR(16) NOT NULL, step INTEGER NOT NULL, weight INTEGER NOT NULL,
    shadow_percent INTEGER NOT NULL, reason TEXT NOT NULL, figures JSON NOT NULL,
    actor VARCHAR(128) NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_rollout_transitions_rollout_id ON rollout_transitions (rollout_id);
CREATE TABLE rollouts (
    id VARCHAR(64) NOT NULL, model VARCHAR(64) NOT NULL, strategy VARCHAR(16) NOT NULL,
    stable_version VARCHAR(32) NOT NULL, candidate_version VARCHAR(32) NOT NULL,
    phase VARCHAR(16) NOT NULL, active BOOLEAN NOT NULL, step INTEGER NOT NULL,
    weight INTEGER NOT NULL, shadow_percent INTEGER NOT NULL, preview BOOLEAN NOT NULL,
    step_started_at FLOAT NOT NULL, created_at FLOAT NOT NULL, updated_at FLOAT NOT NULL,
    reason TEXT NOT NULL, spec JSON NOT NULL, memory JSON NOT NULL, active_model VARCHAR(64),
    PRIMARY KEY (id), UNIQUE (active_model));
CREATE INDEX ix_rollouts_model_created ON rollouts (model, created_at);
"""


def test_a_state_store_made_before_its_migration_is_upgraded_with_its_rollouts(
    db_url: str,
) -> None:
    """The state store's tables come from the migrations now (0005); a database whose store
    made them with create_all keeps them and their rows, and old error rows count as failures."""
    from ridecast.control.store import RolloutStore

    engine = create_engine(db_url)
    migrate.upgrade(engine, "0004")
    serial = "SERIAL" if engine.dialect.name == "postgresql" else "INTEGER"
    with engine.begin() as conn:
        for statement in LEGACY_STORE_DDL.format(serial=serial).split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)
        conn.execute(
            text(
                "INSERT INTO rollouts VALUES ('r-old', 'ride-duration', 'canary', '1', '2', "
                "'progressing', :t, 1, 20, 0, :t, 1.0, 1.0, 1.0, 'started', '{}', '{}', "
                "'ride-duration')"
            ),
            {"t": True},
        )
        conn.execute(
            text(
                "INSERT INTO prediction_errors (ts, model, version, arm, rollout_id, source, "
                "count) VALUES (:ts, 'ride-duration', '2', 'canary', 'r-old', 'web', 3)"
            ),
            {"ts": datetime(2025, 3, 1, 12, 0, tzinfo=UTC)},
        )
    engine.dispose()

    store = RolloutStore(db_url)
    old = store.active("ride-duration")
    assert old is not None and (old.id, old.weight, old.phase) == ("r-old", 20, "progressing")
    store.report_worker(
        "ride-duration",
        host="h",
        worker=0,
        pid=1,
        rollout_id="r-old",
        answering="2",
        versions=["1", "2"],
        error=None,
    )
    assert [w.answering for w in store.worker_reports("ride-duration")] == ["2"]
    assert _one(db_url, "select kind, count from prediction_errors") == [("failed", 3)]
    assert _one(db_url, "select version_num from ridecast_log_version") == [
        (migrate.head_revision(),)
    ]
    assert _schema_diff(db_url) == []
