"""The job index keeps each job's options (to show the command that reruns it) and
its log tail (for the dashboard).

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


def upgrade() -> None:
    with op.batch_alter_table("job_index") as batch:
        batch.add_column(sa.Column("args", sa.JSON, nullable=True))
        batch.add_column(sa.Column("log_tail", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_index") as batch:
        batch.drop_column("log_tail")
        batch.drop_column("args")
