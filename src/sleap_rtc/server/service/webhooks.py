"""Webhooks in the database: one per user and one per room, and whose hooks hear of a job.

A user sets their own hook; a room's hook is set by its owners. Members may ask
whether a room has one, never where it goes: the URL is a secret (whoever holds it
can post to the channel), so views carry only its scheme and host, and only to
those who set it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from sleap_rtc.protocol import api
from sleap_rtc.server.errors import ApiError
from sleap_rtc.server.models import Room, User, Webhook, utcnow
from sleap_rtc.server.service.rooms import is_member

Scope = Literal["user", "room"]


@dataclass(frozen=True)
class Hook:
    """A webhook a notification may go to; ``scope`` and ``name`` say whose it is."""

    scope: Scope
    name: str
    url: str
    on_start: bool


@dataclass(frozen=True)
class JobHooks:
    """The hooks that may hear of one room's job: the owner's (when the owner is an
    account that belongs to the room) and the room's."""

    owner: Hook | None
    owner_is_member: bool
    room: Hook | None


def no_webhook(scope: Scope, name: str) -> ApiError:
    if scope == "room":
        hint = f"its owner sets one with `sleap-rtc notify set URL --room {name}`"
        return ApiError(404, "NO_WEBHOOK", f"room {name!r} has no webhook; {hint}")
    return ApiError(
        404, "NO_WEBHOOK", "you have no webhook; set one with `sleap-rtc notify set URL`"
    )


def _row(
    session: Session, *, user_id: int | None = None, room_id: str | None = None
) -> Webhook | None:
    if user_id is not None:
        return session.scalar(select(Webhook).where(Webhook.user_id == user_id))
    return session.scalar(select(Webhook).where(Webhook.room_id == room_id))


def set_hook(
    session: Session,
    url: str,
    on_start: bool,
    *,
    user_id: int | None = None,
    room_id: str | None = None,
) -> Webhook:
    """Set (or replace) the user's or the room's hook."""
    row = _row(session, user_id=user_id, room_id=room_id)
    if row is None:
        row = Webhook(user_id=user_id, room_id=room_id)
        session.add(row)
    row.url = url
    row.on_start = on_start
    row.created_at = utcnow()
    session.commit()
    return row


def get_hook(
    session: Session, *, user_id: int | None = None, room_id: str | None = None
) -> Webhook | None:
    return _row(session, user_id=user_id, room_id=room_id)


def delete_hook(
    session: Session, *, user_id: int | None = None, room_id: str | None = None
) -> bool:
    """Remove the user's or the room's hook; False when there was none."""
    where = Webhook.user_id == user_id if user_id is not None else Webhook.room_id == room_id
    removed = session.execute(delete(Webhook).where(where))
    session.commit()
    return bool(getattr(removed, "rowcount", 0))


def view(scope: Scope, name: str, row: Webhook | None, *, reveal: bool) -> api.WebhookView:
    """``row`` as the API shows it; ``reveal``: whether the caller may see where it goes."""
    if row is None:
        return api.WebhookView(scope=scope, name=name, set=False)
    return api.WebhookView(
        scope=scope,
        name=name,
        set=True,
        on_start=row.on_start,
        hint=api.webhook_hint(row.url) if reveal else None,
        created_at=row.created_at if reveal else None,
    )


def hooks_for_job(session: Session, room_id: str, owner: str | None) -> JobHooks:
    """Who may hear of a job of room ``room_id`` that ``owner`` (a username) submitted."""
    room = session.get(Room, room_id)
    room_row = _row(session, room_id=room_id)
    room_hook = (
        Hook("room", room.name if room else room_id, room_row.url, room_row.on_start)
        if room_row is not None
        else None
    )
    user_id = session.scalar(select(User.id).where(User.username == owner)) if owner else None
    if user_id is None:
        return JobHooks(None, False, room_hook)
    member = is_member(session, user_id, room_id)
    owner_row = _row(session, user_id=user_id)
    owner_hook = (
        Hook("user", owner or "", owner_row.url, owner_row.on_start)
        if owner_row is not None
        else None
    )
    return JobHooks(owner_hook, member, room_hook)
