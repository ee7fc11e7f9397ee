"""The prediction log as ridecast created it before migrations: predictions and feedback.

Databases made by that code already hold these tables; this revision then creates nothing and
only records that they are at revision 1, so the next revisions upgrade them in place.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "predictions" not in existing:
        op.create_table(
            "predictions",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
            sa.Column("model", sa.String(64), nullable=False),
            sa.Column("version", sa.String(32), nullable=False),
            sa.Column("ride_id", sa.String(128)),
            sa.Column("user_id", sa.String(128)),
            sa.Column("pu_location_id", sa.Integer, nullable=False),
            sa.Column("do_location_id", sa.Integer, nullable=False),
            sa.Column("trip_distance", sa.Float, nullable=False),
            sa.Column("prediction", sa.Float, nullable=False),
            sa.Column("latency_ms", sa.Float, nullable=False),
            sa.Column("source", sa.String(32), nullable=False),
        )
        op.create_index("ix_predictions_ride_id", "predictions", ["ride_id"])
    if "feedback" not in existing:
        op.create_table(
            "feedback",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
            sa.Column("ride_id", sa.String(128), nullable=False),
            sa.Column("target", sa.String(16), nullable=False),
            sa.Column("actual", sa.Float, nullable=False),
        )
        op.create_index("ix_feedback_ride_id", "feedback", ["ride_id"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("predictions")
