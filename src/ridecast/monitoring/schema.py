"""ridecast's tables, as the newest migration leaves them: the prediction log's, and the rollout
state store's (which shares the log's database by default).

The migrations under ``migrations/versions`` are what creates and changes them in a database; these
definitions are what the code reads and writes with, and a test checks that both agree.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
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
    # A rollout's window of one arm, and one version's rows over time: the analysis queries. The
    # first covers what the analysis reads of each row (migration 0007): no lookups in the table.
    Index(
        "ix_predictions_rollout_arm_ts",
        "rollout_id",
        "arm",
        "ts",
        "version",
        "prediction",
        "latency_ms",
    ),
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

# Each rollout answer joined to its ride's feedback, one row per answer and target, written by
# whichever of the two arrives second (ridecast.monitoring.outcomes, migration 0007): a
# version's error over a window is a range scan here instead of a join over the window.
outcomes = Table(
    "outcomes",
    metadata,
    Column("prediction_id", ROW_ID, primary_key=True, autoincrement=False),
    Column("target", String(16), primary_key=True),
    Column("rollout_id", String(64), nullable=False),
    Column("arm", String(16), nullable=False),
    Column("version", String(32), nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),  # the prediction's
    Column("pair_key", String(128), nullable=False),  # the prediction's request_id, else ride_id
    Column("prediction", Float, nullable=False),
    Column("actual", Float, nullable=False),
    # Another answer of this rollout to this ride shares pair_key: the only rows that can pair.
    Column("paired", Boolean, nullable=False),
    # One side's window, covering its error (count, sum, squares); and the rows that can pair.
    Index(
        "ix_outcomes_rollout_target_arm_ts",
        "rollout_id",
        "target",
        "arm",
        "ts",
        "version",
        "prediction",
        "actual",
    ),
    Index("ix_outcomes_rollout_target_paired_ts", "rollout_id", "target", "paired", "ts"),
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
    # failed: the version was asked and raised; dropped: a shadow copy the full queue turned
    # away, never asked (migration 0006). Only failures count in a version's error rate.
    Column("kind", String(16), nullable=False, server_default=text("'failed'")),
    Index("ix_prediction_errors_rollout_arm_ts", "rollout_id", "arm", "ts"),
    Index("ix_prediction_errors_model_version_ts", "model", "version", "ts"),
)

# The rollout state store (ridecast.control.store), migration 0005. Before it, the store made
# these with create_all; the migration leaves tables it finds in place.
rollouts = Table(
    "rollouts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("model", String(64), nullable=False),
    Column("strategy", String(16), nullable=False),
    Column("stable_version", String(32), nullable=False),
    Column("candidate_version", String(32), nullable=False),
    Column("phase", String(16), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("step", Integer, nullable=False),
    Column("weight", Integer, nullable=False),
    Column("shadow_percent", Integer, nullable=False),
    Column("preview", Boolean, nullable=False),
    Column("step_started_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("reason", Text, nullable=False),
    Column("spec", JSON, nullable=False),
    Column("memory", JSON, nullable=False),
    # One active rollout per model (NULL when not active: NULLs never collide).
    Column("active_model", String(64), nullable=True, unique=True),
    Index("ix_rollouts_model_created", "model", "created_at"),
)
rollout_transitions = Table(
    "rollout_transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout_id", String(64), nullable=False, index=True),
    Column("ts", Float, nullable=False),
    Column("phase", String(16), nullable=False),
    Column("step", Integer, nullable=False),
    Column("weight", Integer, nullable=False),
    Column("shadow_percent", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("figures", JSON, nullable=False),
    Column("actor", String(128), nullable=False),
)
rollout_leases = Table(
    "rollout_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", Float, nullable=False),
)
# What each indexed serving worker answers with, reported every few seconds while it follows a
# rolling rollout: the evidence that a moved worker is ready before the next one moves.
rollout_workers = Table(
    "rollout_workers",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("host", String(128), primary_key=True),
    Column("worker", Integer, primary_key=True),
    Column("pid", Integer, nullable=False),
    Column("rollout_id", String(64)),
    Column("answering", String(32), nullable=False),
    Column("versions", String(256), nullable=False),  # every version it has loaded, comma-joined
    Column("error", Text),  # why it does not serve what the rollout asks, if it knows
    Column("ts", Float, nullable=False),
)

# What each batch run found, one row per taxi type, month, model, version and kind of run (a rerun
# replaces its row): the dashboard's batch page reads it without the sink (migration 0004).
batch_results = Table(
    "batch_results",
    metadata,
    _row_id(),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("taxi_type", String(16), nullable=False),
    Column("month", String(7), nullable=False),
    Column("model", String(64), nullable=False),
    Column("version", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("rows_read", BigInteger, nullable=False),
    Column("rows_scored", BigInteger, nullable=False),
    Column("rows_rejected", BigInteger, nullable=False),
    Column("mean_prediction", Float),
    Column("std_prediction", Float),
    Column("rmse", Float),
    Column("mae", Float),
    # The run's whole record as JSON: rejects by reason, histograms, comparison or rollout split.
    Column("details", Text, nullable=False),
    Index("uq_batch_results_run", "taxi_type", "month", "model", "version", "kind", unique=True),
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
ERROR_COLUMNS = ("ts", "model", "version", "arm", "rollout_id", "source", "kind", "count")
# prediction_errors.kind: a version asked and failing (its error rate), or a shadow copy dropped
# unasked because the shadow queue was full (the shadow report's ``dropped``).
FAILED_KIND, DROPPED_KIND = "failed", "dropped"
