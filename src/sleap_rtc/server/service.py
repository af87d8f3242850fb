"""The server's rules over its tables: accounts, tokens, rooms, invites, keys, workers.

Plain synchronous functions over one SQLAlchemy session; the HTTP and WebSocket
layers call them (in a thread) and turn :class:`ApiError` into responses. A room
a user doesn't belong to is reported as not found, never as forbidden, so rooms
of other users stay invisible.

Size: one module of table rules for every area; it splits with the routers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sleap_rtc.protocol.api import NAME_PATTERN, MemberView, RoomView
from sleap_rtc.protocol.signaling import Capabilities
from sleap_rtc.server import auth
from sleap_rtc.server.errors import ApiError, conflict, forbidden, invalid, not_found
from sleap_rtc.server.models import (
    Invite,
    Membership,
    RefreshToken,
    Room,
    User,
    Worker,
    WorkerKey,
    utcnow,
)

_NAME = re.compile(NAME_PATTERN)


def check_name(kind: str, name: str) -> None:
    """Names of users and rooms: a strict set of characters, as they go into URLs and commands."""
    if not _NAME.fullmatch(name):
        raise invalid(
            f"{kind} name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def check_label(kind: str, name: str) -> None:
    """Free-form names (worker keys): any printable text, as they are shown in tables and logs."""
    if not name.strip() or len(name) > 64 or not name.isprintable():
        raise invalid(
            f"{kind} name {name!r} is not allowed: use 1-64 printable characters, "
            "without control characters or line breaks"
        )


# -- accounts ---------------------------------------------------------------------------


def create_user(session: Session, username: str, password: str, *, is_admin: bool = False) -> User:
    check_name("user", username)
    try:
        auth.check_password_policy(password)
    except ValueError as exc:
        raise invalid(str(exc)) from None
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise conflict(f"user {username!r} already exists")
    user = User(
        username=username,
        provider="password",
        password_hash=auth.hash_password(password),
        is_admin=is_admin,
    )
    session.add(user)
    session.commit()
    return user


def set_password(session: Session, username: str, password: str) -> User:
    try:
        auth.check_password_policy(password)
    except ValueError as exc:
        raise invalid(str(exc)) from None
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise ApiError(404, "NOT_FOUND", f"user {username!r} does not exist")
    user.password_hash = auth.hash_password(password)
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    session.commit()
    return user


@dataclass(frozen=True)
class Tokens:
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime
    user: User


def issue_tokens(
    session: Session,
    signer: auth.TokenSigner,
    user: User,
    access_ttl: timedelta,
    refresh_ttl: timedelta,
    session_id: str | None = None,
) -> Tokens:
    """A token pair for ``user``: a new login session, or ``session_id`` continued."""
    login = session_id or auth.new_id("s")
    access, access_exp = signer.issue_access(user, login, access_ttl)
    refresh = auth.new_secret(auth.REFRESH_PREFIX)
    refresh_exp = utcnow() + refresh_ttl
    session.add(
        RefreshToken(
            user_id=user.id,
            token_hash=auth.digest(refresh),
            session_id=login,
            expires_at=refresh_exp,
        )
    )
    session.commit()
    return Tokens(access, access_exp, refresh, refresh_exp, user)


def session_active(session: Session, session_id: str) -> bool:
    """Whether a login session still holds a live refresh token (not logged out or revoked).

    Asked on every request, so an access token stops working the moment its
    session ends rather than when it expires.
    """
    return (
        session.scalar(
            select(RefreshToken.id)
            .where(
                RefreshToken.session_id == session_id,
                RefreshToken.revoked_at.is_(None),
                RefreshToken.expires_at > utcnow(),
            )
            .limit(1)
        )
        is not None
    )


def refresh_tokens(
    session: Session,
    signer: auth.TokenSigner,
    refresh_token: str,
    access_ttl: timedelta,
    refresh_ttl: timedelta,
) -> Tokens:
    """Trade a refresh token for a new pair; the old one is revoked (rotation).

    A refresh token that was already used is a sign it leaked: every refresh
    token of that user is revoked, so both holders must log in again.
    """
    row = session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == auth.digest(refresh_token))
    )
    now = utcnow()
    if row is None or row.expires_at <= now:
        raise ApiError(401, "INVALID_REFRESH", "session has ended; run `sleap-rtc login` again")
    if row.revoked_at is not None:
        session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == row.user_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        session.commit()
        raise ApiError(
            401,
            "INVALID_REFRESH",
            "session was ended (token already used or logged out); run `sleap-rtc login` again",
        )
    user = session.get(User, row.user_id)
    if user is None:
        raise ApiError(401, "INVALID_REFRESH", "account no longer exists")
    row.revoked_at = now
    return issue_tokens(session, signer, user, access_ttl, refresh_ttl, row.session_id)


def revoke_refresh(session: Session, refresh_token: str) -> str | None:
    """End the login session of ``refresh_token``; returns the session's id, if it had one."""
    row = session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == auth.digest(refresh_token))
    )
    if row is None:
        return None
    now = utcnow()
    if row.session_id is None:
        if row.revoked_at is None:
            row.revoked_at = now
    else:
        session.execute(
            update(RefreshToken)
            .where(RefreshToken.session_id == row.session_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    session.commit()
    return row.session_id


# -- rooms ------------------------------------------------------------------------------


def _live_rooms() -> Any:
    now = utcnow()
    return (Room.expires_at.is_(None)) | (Room.expires_at > now)


def create_room(
    session: Session, user_id: int, name: str, expires_at: datetime | None
) -> tuple[Room, Membership]:
    check_name("room", name)
    if session.scalar(select(Room.id).where(Room.name == name)) is not None:
        raise conflict(f"a room named {name!r} already exists; choose another name")
    room = Room(id=auth.new_id("r"), name=name, created_by=user_id, expires_at=expires_at)
    member = Membership(room_id=room.id, user_id=user_id, role="owner")
    session.add(room)
    session.flush()
    session.add(member)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise conflict(f"a room named {name!r} already exists; choose another name") from None
    return room, member


def room_for_member(session: Session, user_id: int, name: str) -> tuple[Room, Membership]:
    """The room ``name`` if the user belongs to it and it hasn't expired; else not found."""
    row = session.execute(
        select(Room, Membership)
        .join(Membership, Membership.room_id == Room.id)
        .where(Room.name == name, Membership.user_id == user_id, _live_rooms())
    ).first()
    if row is None:
        raise not_found("room", name)
    return row[0], row[1]


def room_for_owner(session: Session, user_id: int, name: str) -> Room:
    room, member = room_for_member(session, user_id, name)
    if member.role != "owner":
        raise forbidden(f"only an owner of room {name!r} can do that")
    return room


def is_member(session: Session, user_id: int, room_id: str) -> bool:
    return (
        session.scalar(
            select(Membership.user_id)
            .join(Room, Room.id == Membership.room_id)
            .where(Membership.room_id == room_id, Membership.user_id == user_id, _live_rooms())
        )
        is not None
    )


def room_by_name_for_member(session: Session, user_id: int, name: str) -> Room | None:
    try:
        return room_for_member(session, user_id, name)[0]
    except ApiError:
        return None


def list_rooms(session: Session, user_id: int) -> list[tuple[Room, Membership, int]]:
    members = (
        select(Membership.room_id, func.count().label("n")).group_by(Membership.room_id).subquery()
    )
    rows = session.execute(
        select(Room, Membership, members.c.n)
        .join(Membership, Membership.room_id == Room.id)
        .join(members, members.c.room_id == Room.id)
        .where(Membership.user_id == user_id, _live_rooms())
        .order_by(Room.name)
    ).all()
    return [(r[0], r[1], int(r[2])) for r in rows]


def room_view(room: Room, member: Membership, members: int, workers_online: int) -> RoomView:
    return RoomView(
        id=room.id,
        name=room.name,
        role="owner" if member.role == "owner" else "member",
        created_at=room.created_at,
        expires_at=room.expires_at,
        members=members,
        workers_online=workers_online,
    )


def room_members(session: Session, room_id: str) -> list[MemberView]:
    rows = session.execute(
        select(User.username, Membership.role, Membership.joined_at)
        .join(User, User.id == Membership.user_id)
        .where(Membership.room_id == room_id)
        .order_by(Membership.joined_at)
    ).all()
    return [
        MemberView(username=r[0], role="owner" if r[1] == "owner" else "member", joined_at=r[2])
        for r in rows
    ]


def username_of(session: Session, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    return session.scalar(select(User.username).where(User.id == user_id))


def count_active_keys(session: Session, room_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(WorkerKey)
            .where(WorkerKey.room_id == room_id, WorkerKey.revoked_at.is_(None))
        )
        or 0
    )


def delete_room(session: Session, room: Room) -> None:
    session.execute(delete(Room).where(Room.id == room.id))
    session.commit()


def purge_expired(session: Session) -> list[str]:
    """Delete expired rooms, invites and refresh tokens; returns the ids of rooms removed."""
    now = utcnow()
    rooms = list(
        session.scalars(select(Room.id).where(Room.expires_at.is_not(None), Room.expires_at <= now))
    )
    if rooms:
        session.execute(delete(Room).where(Room.id.in_(rooms)))
    session.execute(delete(Invite).where(Invite.expires_at <= now))
    session.execute(delete(RefreshToken).where(RefreshToken.expires_at <= now))
    session.commit()
    return rooms


# -- invites ----------------------------------------------------------------------------


def create_invite(
    session: Session, room: Room, user_id: int, expires_in: timedelta, max_uses: int
) -> tuple[str, Invite]:
    code = auth.new_invite_code()
    invite = Invite(
        id=auth.new_id("i"),
        room_id=room.id,
        code_hash=auth.digest(code),
        created_by=user_id,
        expires_at=utcnow() + expires_in,
        max_uses=max_uses,
        uses=0,
    )
    session.add(invite)
    session.commit()
    return code, invite


def accept_invite(session: Session, user_id: int, code: str) -> tuple[Room, Membership, int]:
    bad = ApiError(404, "INVALID_INVITE", "invite code is not valid (wrong, expired or used up)")
    invite = session.scalar(
        select(Invite).where(Invite.code_hash == auth.digest(code.strip())).with_for_update()
    )
    if invite is None or invite.expires_at <= utcnow():
        raise bad
    room = session.scalar(select(Room).where(Room.id == invite.room_id, _live_rooms()))
    if room is None:
        raise bad
    existing = session.get(Membership, (room.id, user_id))
    if existing is None:
        if invite.uses >= invite.max_uses:
            raise bad
        # Count the use in the same statement that checks it, so two joins at once
        # can't both take the last use.
        used = session.execute(
            update(Invite)
            .where(Invite.id == invite.id, Invite.uses < Invite.max_uses)
            .values(uses=Invite.uses + 1)
        )
        if not getattr(used, "rowcount", 0):
            session.rollback()
            raise bad
        existing = Membership(room_id=room.id, user_id=user_id, role="member")
        session.add(existing)
        session.commit()
    members = int(
        session.scalar(
            select(func.count()).select_from(Membership).where(Membership.room_id == room.id)
        )
        or 0
    )
    return room, existing, members


# -- worker keys ------------------------------------------------------------------------


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
    key.last_used_at = utcnow()
    session.commit()
    return key, room


def key_is_active(session: Session, key_id: str) -> bool:
    return (
        session.scalar(
            select(WorkerKey.id).where(WorkerKey.id == key_id, WorkerKey.revoked_at.is_(None))
        )
        is not None
    )


# -- workers ----------------------------------------------------------------------------


def worker_id_taken(worker_id: str, room_name: str) -> ApiError:
    return ApiError(
        409,
        "WORKER_ID_TAKEN",
        f"worker id {worker_id!r} already belongs to another worker key in room {room_name!r}; "
        "start this worker with the key it first registered with, or give it a new id by "
        "removing the worker_id file from its state folder",
    )


def record_worker(
    session: Session,
    room_id: str,
    room_name: str,
    worker_id: str,
    key_id: str,
    capabilities: Capabilities,
) -> None:
    """Record a worker's registration; raises ``WORKER_ID_TAKEN`` for another key's id.

    A worker id belongs to the key that first registered it, so a member with a
    key of their own can't take over (and listen in on) someone else's worker.
    The claim and the update are one conditional statement, so two keys
    registering the same new id at once can't both win.
    """
    now = utcnow()
    caps = capabilities.model_dump(mode="json")
    if session.get(Worker, (room_id, worker_id)) is None:
        session.add(
            Worker(
                room_id=room_id,
                worker_id=worker_id,
                key_id=key_id,
                name=capabilities.name,
                hostname=capabilities.hostname,
                capabilities=caps,
                first_seen=now,
                last_seen=now,
            )
        )
        try:
            session.commit()
            return
        except IntegrityError:
            session.rollback()  # registered by someone else meanwhile: check whose below
    claimed = session.execute(
        update(Worker)
        .where(
            Worker.room_id == room_id,
            Worker.worker_id == worker_id,
            (Worker.key_id == key_id) | Worker.key_id.is_(None),
        )
        .values(
            key_id=key_id,
            name=capabilities.name,
            hostname=capabilities.hostname,
            capabilities=caps,
            last_seen=now,
        )
    )
    if not getattr(claimed, "rowcount", 0):
        session.rollback()
        raise worker_id_taken(worker_id, room_name)
    session.commit()


def touch_workers(session: Session, seen: Iterable[tuple[str, str, datetime]]) -> None:
    """Save last-seen times of connected workers (room id, worker id, time)."""
    for room_id, worker_id, when in seen:
        session.execute(
            update(Worker)
            .where(Worker.room_id == room_id, Worker.worker_id == worker_id)
            .values(last_seen=when)
        )
    session.commit()


#: (worker id, name, hostname, stored capabilities, last seen)
WorkerRow = tuple[str, str, str, dict[str, Any], datetime]


def room_worker_rows(session: Session, room_id: str) -> list[WorkerRow]:
    rows = session.execute(
        select(
            Worker.worker_id, Worker.name, Worker.hostname, Worker.capabilities, Worker.last_seen
        ).where(Worker.room_id == room_id)
    ).all()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def room_workers(session: Session, room_id: str) -> Sequence[Worker]:
    return session.scalars(
        select(Worker).where(Worker.room_id == room_id).order_by(Worker.name)
    ).all()
