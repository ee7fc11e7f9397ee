"""Rollouts: each prediction's arm, rollout and request; one feedback per ride and target;
errors per version.

Repeated feedback already stored is reduced to its first row before the unique index is built.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "predictions",
        sa.Column("arm", sa.String(16), nullable=False, server_default=sa.text("'stable'")),
    )
    op.add_column("predictions", sa.Column("rollout_id", sa.String(64)))
    op.add_column("predictions", sa.Column("request_id", sa.String(128)))
    op.create_index("ix_predictions_rollout_arm_ts", "predictions", ["rollout_id", "arm", "ts"])
    op.create_index("ix_predictions_model_version_ts", "predictions", ["model", "version", "ts"])

    op.execute(
        "DELETE FROM feedback WHERE id NOT IN "
        "(SELECT first_id FROM (SELECT MIN(id) AS first_id FROM feedback "
        "GROUP BY ride_id, target) AS firsts)"
    )
    op.create_index("uq_feedback_ride_target", "feedback", ["ride_id", "target"], unique=True)
    op.drop_index("ix_feedback_ride_id", table_name="feedback")  # the unique index leads with it

    op.create_table(
        "prediction_errors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("arm", sa.String(16), nullable=False, server_default=sa.text("'stable'")),
        sa.Column("rollout_id", sa.String(64)),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_index(
        "ix_prediction_errors_rollout_arm_ts", "prediction_errors", ["rollout_id", "arm", "ts"]
    )
    op.create_index(
        "ix_prediction_errors_model_version_ts", "prediction_errors", ["model", "version", "ts"]
    )


def downgrade() -> None:
    op.drop_table("prediction_errors")
    op.create_index("ix_feedback_ride_id", "feedback", ["ride_id"])
    op.drop_index("uq_feedback_ride_target", table_name="feedback")
    op.drop_index("ix_predictions_model_version_ts", table_name="predictions")
    op.drop_index("ix_predictions_rollout_arm_ts", table_name="predictions")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("request_id")
        batch.drop_column("rollout_id")
        batch.drop_column("arm")
