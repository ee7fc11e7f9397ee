"""Batch results: one summary per taxi type, month, model, version and kind of batch run, so the
dashboard can show them from the database alone.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "batch_results",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("taxi_type", sa.String(16), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("rows_read", sa.BigInteger, nullable=False),
        sa.Column("rows_scored", sa.BigInteger, nullable=False),
        sa.Column("rows_rejected", sa.BigInteger, nullable=False),
        sa.Column("mean_prediction", sa.Float),
        sa.Column("std_prediction", sa.Float),
        sa.Column("rmse", sa.Float),
        sa.Column("mae", sa.Float),
        sa.Column("details", sa.Text, nullable=False),
    )
    op.create_index(
        "uq_batch_results_run",
        "batch_results",
        ["taxi_type", "month", "model", "version", "kind"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_table("batch_results")
