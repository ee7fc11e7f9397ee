"""Shadow drops in the log: ``prediction_errors.kind`` says whether a version failed (it was
asked and raised) or a shadow copy was dropped (the shadow queue was full; never asked). Rows
written before are failures.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "prediction_errors",
        sa.Column("kind", sa.String(16), nullable=False, server_default=sa.text("'failed'")),
    )


def downgrade() -> None:
    with op.batch_alter_table("prediction_errors") as batch:
        batch.drop_column("kind")
