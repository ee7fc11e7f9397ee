"""The rollout state store's tables: rollouts, their transitions, the controller lease, and the
serving workers' reports (new: what each indexed worker answers with, for rolling rollouts).

Before this migration the store made its first three tables itself with ``create_all``; a database
that already has them keeps them, rows included.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _missing(table: str) -> bool:
    return not sa.inspect(op.get_bind()).has_table(table)


def upgrade() -> None:
    if _missing("rollouts"):
        op.create_table(
            "rollouts",
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("model", sa.String(64), nullable=False),
            sa.Column("strategy", sa.String(16), nullable=False),
            sa.Column("stable_version", sa.String(32), nullable=False),
            sa.Column("candidate_version", sa.String(32), nullable=False),
            sa.Column("phase", sa.String(16), nullable=False),
            sa.Column("active", sa.Boolean, nullable=False),
            sa.Column("step", sa.Integer, nullable=False),
            sa.Column("weight", sa.Integer, nullable=False),
            sa.Column("shadow_percent", sa.Integer, nullable=False),
            sa.Column("preview", sa.Boolean, nullable=False),
            sa.Column("step_started_at", sa.Float, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("spec", sa.JSON, nullable=False),
            sa.Column("memory", sa.JSON, nullable=False),
            sa.Column("active_model", sa.String(64), nullable=True, unique=True),
        )
        op.create_index("ix_rollouts_model_created", "rollouts", ["model", "created_at"])
    if _missing("rollout_transitions"):
        op.create_table(
            "rollout_transitions",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("rollout_id", sa.String(64), nullable=False),
            sa.Column("ts", sa.Float, nullable=False),
            sa.Column("phase", sa.String(16), nullable=False),
            sa.Column("step", sa.Integer, nullable=False),
            sa.Column("weight", sa.Integer, nullable=False),
            sa.Column("shadow_percent", sa.Integer, nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("figures", sa.JSON, nullable=False),
            sa.Column("actor", sa.String(128), nullable=False),
        )
        op.create_index("ix_rollout_transitions_rollout_id", "rollout_transitions", ["rollout_id"])
    if _missing("rollout_leases"):
        op.create_table(
            "rollout_leases",
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("holder", sa.String(128), nullable=False),
            sa.Column("expires_at", sa.Float, nullable=False),
        )
    op.create_table(
        "rollout_workers",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(128), primary_key=True),
        sa.Column("worker", sa.Integer, primary_key=True),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("rollout_id", sa.String(64)),
        sa.Column("answering", sa.String(32), nullable=False),
        sa.Column("versions", sa.String(256), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("ts", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rollout_workers")
    op.drop_table("rollout_leases")
    op.drop_table("rollout_transitions")
    op.drop_table("rollouts")
