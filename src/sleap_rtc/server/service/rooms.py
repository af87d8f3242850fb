"""Rooms: who owns and who belongs to which, invites to join, and expiry.

A room past its ``expires_at`` is gone for every rule here (as if deleted) until
the sweeper removes its rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sleap_rtc.protocol.api import MemberView, RoomView
from sleap_rtc.server import auth
from sleap_rtc.server.errors import ApiError, conflict, forbidden, not_found
from sleap_rtc.server.models import Invite, Membership, RefreshToken, Room, User, utcnow
from sleap_rtc.server.service.names import check_name


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
