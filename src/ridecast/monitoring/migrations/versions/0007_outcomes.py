"""Outcomes: each rollout answer joined to its ride's feedback, kept by the writers
(:mod:`ridecast.monitoring.outcomes`), so that a version's error is a range scan. The rows of the
predictions and feedback already stored are joined here once. The predictions' window index
covers what the analysis reads of each row (version, prediction, latency).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")
WINDOW = ["rollout_id", "arm", "ts"]  # the predictions' window index, as 0002 made it
COVERED = ["version", "prediction", "latency_ms"]  # ... and what the analysis reads from it

# The join as this revision knows it (ridecast.monitoring.outcomes.SELECT, over every ride).
BACKFILL = """
INSERT INTO outcomes (prediction_id, target, rollout_id, arm, version, ts, pair_key, prediction,
                      actual, paired)
SELECT p.id, f.target, p.rollout_id, p.arm, p.version, p.ts,
       COALESCE(p.request_id, p.ride_id), p.prediction, f.actual,
       COUNT(*) OVER (PARTITION BY f.target, p.rollout_id, p.ride_id,
                      COALESCE(p.request_id, p.ride_id)) > 1
FROM feedback f JOIN predictions p ON p.ride_id = f.ride_id
WHERE p.rollout_id IS NOT NULL
"""


def upgrade() -> None:
    op.drop_index("ix_predictions_rollout_arm_ts", table_name="predictions")
    op.create_index("ix_predictions_rollout_arm_ts", "predictions", WINDOW + COVERED)
    op.create_table(
        "outcomes",
        sa.Column("prediction_id", ROW_ID, primary_key=True, autoincrement=False),
        sa.Column("target", sa.String(16), primary_key=True),
        sa.Column("rollout_id", sa.String(64), nullable=False),
        sa.Column("arm", sa.String(16), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pair_key", sa.String(128), nullable=False),
        sa.Column("prediction", sa.Float, nullable=False),
        sa.Column("actual", sa.Float, nullable=False),
        sa.Column("paired", sa.Boolean, nullable=False),
    )
    op.execute(BACKFILL)
    op.create_index(
        "ix_outcomes_rollout_target_arm_ts",
        "outcomes",
        ["rollout_id", "target", "arm", "ts", "version", "prediction", "actual"],
    )
    op.create_index(
        "ix_outcomes_rollout_target_paired_ts",
        "outcomes",
        ["rollout_id", "target", "paired", "ts"],
    )


def downgrade() -> None:
    op.drop_table("outcomes")
    op.drop_index("ix_predictions_rollout_arm_ts", table_name="predictions")
    op.create_index("ix_predictions_rollout_arm_ts", "predictions", WINDOW)
