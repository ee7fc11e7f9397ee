"""64-bit row ids: a 32-bit id runs out after about 2.1 billion predictions (2.5 days at
10k rows/s). SQLite's INTEGER PRIMARY KEY is already 64-bit, so only PostgreSQL changes.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("predictions", "feedback", "prediction_errors")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.alter_column(table, "id", type_=sa.BigInteger(), existing_type=sa.Integer())
        op.execute(f"ALTER SEQUENCE IF EXISTS {table}_id_seq AS BIGINT")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.alter_column(table, "id", type_=sa.Integer(), existing_type=sa.BigInteger())
