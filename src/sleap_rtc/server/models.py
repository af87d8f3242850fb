"""The server's tables (SQLAlchemy 2). The schema itself is owned by Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite stores them naive)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(sa.String(64), unique=True)
    #: Which identity provider vouches for this account ("password" for built-in ones).
    provider: Mapped[str] = mapped_column(sa.String(32), default="password")
    password_hash: Mapped[str | None] = mapped_column(sa.String(256))
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    #: The login session: every token of one login (and its rotations) shares it.
    #: Access tokens carry it, so ending the session ends them at once.
    session_id: Mapped[str | None] = mapped_column(sa.String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Room(Base):
    __tablename__ = "rooms"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_by: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)


class Membership(Base):
    __tablename__ = "room_members"

    room_id: Mapped[str] = mapped_column(
        sa.ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(sa.String(16))
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Invite(Base):
    __tablename__ = "invites"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    room_id: Mapped[str] = mapped_column(sa.ForeignKey("rooms.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_by: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    max_uses: Mapped[int] = mapped_column(default=1)
    uses: Mapped[int] = mapped_column(default=0)


class WorkerKey(Base):
    __tablename__ = "worker_keys"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    room_id: Mapped[str] = mapped_column(sa.ForeignKey("rooms.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(64))
    secret_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_by: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Worker(Base):
    """A worker that has registered in a room at least once (online or not)."""

    __tablename__ = "workers"

    room_id: Mapped[str] = mapped_column(
        sa.ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    worker_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    #: The key that first registered this id: only it may register the id again.
    key_id: Mapped[str | None] = mapped_column(sa.ForeignKey("worker_keys.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(sa.String(64))
    hostname: Mapped[str] = mapped_column(sa.String(256), default="")
    capabilities: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SigningKey(Base):
    """The server's token-signing key pair (Ed25519), kept in the database."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    private_key_pem: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class IndexedJob(Base):
    """A job as its worker last reported it (the worker's store is the source of truth).

    A job is named by room, worker and the worker's job id: a worker can only
    report, and so only overwrite, its own jobs. Times are the worker's clock;
    ``worker_updated`` keeps its raw value, so the worker can be told exactly up to
    when the index has its records.
    """

    __tablename__ = "job_index"
    __table_args__ = (
        sa.Index("ix_job_index_room_created", "room_id", "created_at"),
        sa.Index("ix_job_index_room_owner", "room_id", "owner"),
    )

    room_id: Mapped[str] = mapped_column(
        sa.ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True
    )
    worker_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(sa.String(64))
    kind: Mapped[str] = mapped_column(sa.String(16))
    state: Mapped[str] = mapped_column(sa.String(16))
    summary: Mapped[str] = mapped_column(sa.Text, default="")
    reason: Mapped[str | None] = mapped_column(sa.Text)
    exit_code: Mapped[int | None] = mapped_column()
    stopped_early: Mapped[bool] = mapped_column(default=False)
    elapsed_s: Mapped[float | None] = mapped_column(sa.Float)
    notify: Mapped[bool | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    worker_updated: Mapped[float] = mapped_column(sa.Float)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    history: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    progress: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    outputs: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    results: Mapped[list[Any]] = mapped_column(sa.JSON, default=list)
    #: The job's options as command-line flags.
    args: Mapped[list[Any] | None] = mapped_column(sa.JSON)
    #: The newest log lines, ``[n, text]`` pairs in order (at most MAX_LOG_LINES_PER_JOB);
    #: read only for one job's page, not for listings.
    log_tail: Mapped[list[Any] | None] = mapped_column(sa.JSON, deferred=True)


class LossPoint(Base):
    """Losses at the end of one epoch of one model of an indexed training job."""

    __tablename__ = "job_points"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["room_id", "worker_id", "job_id"],
            ["job_index.room_id", "job_index.worker_id", "job_index.job_id"],
            ondelete="CASCADE",
        ),
    )

    room_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    worker_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    model: Mapped[int] = mapped_column(primary_key=True)
    epoch: Mapped[int] = mapped_column(primary_key=True)
    loss: Mapped[float | None] = mapped_column(sa.Float)
    val_loss: Mapped[float | None] = mapped_column(sa.Float)
    at: Mapped[float] = mapped_column(sa.Float)


class Webhook(Base):
    """Where a user's or a room's notifications go: exactly one of ``user_id`` and ``room_id``.

    The URL is a secret (it alone lets anyone post to the channel): it is never
    logged and never returned by the API, only its scheme and host.
    """

    __tablename__ = "webhooks"
    __table_args__ = (
        sa.CheckConstraint("(user_id IS NULL) <> (room_id IS NULL)", name="ck_webhooks_one_owner"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    room_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("rooms.id", ondelete="CASCADE"), unique=True
    )
    url: Mapped[str] = mapped_column(sa.String(2048))
    #: Also post when a job starts running.
    on_start: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
