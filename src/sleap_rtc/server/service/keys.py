"""Worker keys: the secrets that let a worker join one room, and their revocation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sleap_rtc.server import auth
from sleap_rtc.server.errors import ApiError, forbidden
from sleap_rtc.server.models import Membership, Room, User, WorkerKey, utcnow
from sleap_rtc.server.service.names import check_label

#: How finely a key's ``last_used_at`` is kept (each connection would otherwise write).
LAST_USED_RESOLUTION = timedelta(minutes=1)


def create_key(
    session: Session, room: Room, user_id: int, name: str | None
) -> tuple[str, WorkerKey]:
    if name is not None:
        check_label("key", name)
    secret = auth.new_secret(auth.WORKER_KEY_PREFIX)
    count = session.scalar(
        select(func.count()).select_from(WorkerKey).where(WorkerKey.room_id == room.id)
    )
    key = WorkerKey(
        id=auth.new_id("key_"),
        room_id=room.id,
        name=name or f"key-{int(count or 0) + 1}",
        secret_hash=auth.digest(secret),
        created_by=user_id,
    )
    session.add(key)
    session.commit()
    return secret, key


def list_keys(session: Session, room: Room) -> Sequence[tuple[WorkerKey, str | None]]:
    rows = session.execute(
        select(WorkerKey, User.username)
        .outerjoin(User, User.id == WorkerKey.created_by)
        .where(WorkerKey.room_id == room.id)
        .order_by(WorkerKey.created_at)
    ).all()
    return [(r[0], r[1]) for r in rows]


def find_key(session: Session, room: Room, key: str) -> WorkerKey:
    """A key of ``room`` by id or by name."""
    row = session.scalar(
        select(WorkerKey).where(
            WorkerKey.room_id == room.id, (WorkerKey.id == key) | (WorkerKey.name == key)
        )
    )
    if row is None:
        raise ApiError(404, "NOT_FOUND", f"room {room.name!r} has no worker key {key!r}")
    return row


def revoke_key(session: Session, room: Room, membership: Membership, key: str) -> WorkerKey:
    row = find_key(session, room, key)
    if membership.role != "owner" and row.created_by != membership.user_id:
        raise forbidden("only the key's creator or a room owner can revoke it")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return row


def count_active_keys(session: Session, room_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(WorkerKey)
            .where(WorkerKey.room_id == room_id, WorkerKey.revoked_at.is_(None))
        )
        or 0
    )


def authenticate_worker(session: Session, secret: str) -> tuple[WorkerKey, Room]:
    """The key and room for a worker's secret; raises AuthError when unusable."""
    if not secret.startswith(auth.WORKER_KEY_PREFIX):
        raise auth.AuthError("INVALID_KEY", "that is not a worker key (they start with 'srk_')")
    row = session.execute(
        select(WorkerKey, Room)
        .join(Room, Room.id == WorkerKey.room_id)
        .where(WorkerKey.secret_hash == auth.digest(secret))
    ).first()
    if row is None:
        raise auth.AuthError("INVALID_KEY", "worker key is not known to this server")
    key, room = row[0], row[1]
    if key.revoked_at is not None:
        raise auth.AuthError("KEY_REVOKED", f"worker key {key.name!r} has been revoked")
    if room.expires_at is not None and room.expires_at <= utcnow():
        raise auth.AuthError("ROOM_EXPIRED", f"room {room.name!r} has expired")
    now = utcnow()
    # To the minute: a thousand workers sharing a key reconnecting at once write once.
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        key.last_used_at = now
        session.commit()
    return key, room
