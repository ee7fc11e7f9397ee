"""The prediction log's tables, as the newest migration leaves them.

The migrations under ``migrations/versions`` are what creates and changes them in a database; these
definitions are what the code reads and writes with, and a test checks that both agree.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    text,
)

# 64-bit ids on PostgreSQL (migration 0003); SQLite's INTEGER PRIMARY KEY is 64-bit already.
ROW_ID = BigInteger().with_variant(Integer, "sqlite")


def _row_id() -> Column[int]:
    return Column("id", ROW_ID, primary_key=True, autoincrement=True)


metadata = MetaData()

predictions = Table(
    "predictions",
    metadata,
    _row_id(),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("model", String(64), nullable=False),
    Column("version", String(32), nullable=False),
    Column("ride_id", String(128), index=True),
    Column("user_id", String(128)),
    Column("pu_location_id", Integer, nullable=False),
    Column("do_location_id", Integer, nullable=False),
    Column("trip_distance", Float, nullable=False),
    Column("prediction", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("source", String(32), nullable=False),
    # Which side of a rollout answered (stable, canary, shadow, a, b, blue, green, candidate).
    Column("arm", String(16), nullable=False, server_default=text("'stable'")),
    Column("rollout_id", String(64)),
    # Pairs a shadow answer with its live one; NULL means "pair by ride_id".
    Column("request_id", String(128)),
    # A rollout's window of one arm, and one version's rows over time: the analysis queries.
    Index("ix_predictions_rollout_arm_ts", "rollout_id", "arm", "ts"),
    Index("ix_predictions_model_version_ts", "model", "version", "ts"),
)

feedback = Table(
    "feedback",
    metadata,
    _row_id(),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("ride_id", String(128), nullable=False),
    Column("target", String(16), nullable=False),
    Column("actual", Float, nullable=False),
    # One outcome per ride and target: a repeated feedback counts once.
    Index("uq_feedback_ride_target", "ride_id", "target", unique=True),
)

prediction_errors = Table(
    "prediction_errors",
    metadata,
    _row_id(),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("model", String(64), nullable=False),
    Column("version", String(32), nullable=False),
    Column("arm", String(16), nullable=False, server_default=text("'stable'")),
    Column("rollout_id", String(64)),
    Column("source", String(32), nullable=False),
    Column("count", Integer, nullable=False),
    Index("ix_prediction_errors_rollout_arm_ts", "rollout_id", "arm", "ts"),
    Index("ix_prediction_errors_model_version_ts", "model", "version", "ts"),
)

PREDICTION_COLUMNS = (
    "ts",
    "model",
    "version",
    "ride_id",
    "user_id",
    "pu_location_id",
    "do_location_id",
    "trip_distance",
    "prediction",
    "latency_ms",
    "source",
    "arm",
    "rollout_id",
    "request_id",
)
FEEDBACK_COLUMNS = ("ts", "ride_id", "target", "actual")
ERROR_COLUMNS = ("ts", "model", "version", "arm", "rollout_id", "source", "count")
