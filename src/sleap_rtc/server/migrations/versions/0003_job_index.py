"""The job index: each worker's jobs as it reports them, and their loss points.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sleap_rtc.server.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_index",
        sa.Column(
            "room_id",
            sa.String(32),
            sa.ForeignKey("rooms.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("worker_id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("stopped_early", sa.Boolean, nullable=False),
        sa.Column("elapsed_s", sa.Float, nullable=True),
        sa.Column("notify", sa.Boolean, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("worker_updated", sa.Float, nullable=False),
        sa.Column("reported_at", UTCDateTime(), nullable=False),
        sa.Column("history", sa.JSON, nullable=False),
        sa.Column("progress", sa.JSON, nullable=True),
        sa.Column("outputs", sa.JSON, nullable=False),
        sa.Column("results", sa.JSON, nullable=False),
    )
    op.create_index("ix_job_index_room_created", "job_index", ["room_id", "created_at"])
    op.create_index("ix_job_index_room_owner", "job_index", ["room_id", "owner"])
    op.create_table(
        "job_points",
        sa.Column("room_id", sa.String(32), primary_key=True),
        sa.Column("worker_id", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.Integer, primary_key=True),
        sa.Column("epoch", sa.Integer, primary_key=True),
        sa.Column("loss", sa.Float, nullable=True),
        sa.Column("val_loss", sa.Float, nullable=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(
            ["room_id", "worker_id", "job_id"],
            ["job_index.room_id", "job_index.worker_id", "job_index.job_id"],
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("job_points")
    op.drop_index("ix_job_index_room_owner", "job_index")
    op.drop_index("ix_job_index_room_created", "job_index")
    op.drop_table("job_index")
