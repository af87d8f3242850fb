"""Webhooks: a user's own (``/v1/me/webhook``) and a room's (``/v1/rooms/{room}/webhook``).

A room's hook is set, removed and tested by its owners; members may see whether
it is set, never where it goes. No answer carries a webhook URL (it is a secret):
only its scheme and host, to whoever set it.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from sleap_rtc.protocol import api
from sleap_rtc.server.deps import DatabaseDep, StateDep, UserDep
from sleap_rtc.server.logs import log
from sleap_rtc.server.models import Room
from sleap_rtc.server.notify import Outcome
from sleap_rtc.server.service import rooms, webhooks

router = APIRouter()


def _tested(outcome: Outcome) -> api.WebhookTest:
    return api.WebhookTest(
        delivered=outcome.delivered,
        status=outcome.status,
        attempts=outcome.attempts,
        message=outcome.message,
    )


# -- the user's own ------------------------------------------------------------------------


@router.put("/v1/me/webhook", response_model=api.WebhookView)
async def set_my_webhook(
    body: api.SetWebhook, user: UserDep, database: DatabaseDep
) -> api.WebhookView:
    """Where your jobs' notifications go (replaces the one set before)."""
    row = await database.run(
        lambda s: webhooks.set_hook(s, body.url, body.on_start, user_id=user.user_id)
    )
    log.info("webhook of user %s set (%s)", user.username, api.webhook_hint(body.url))
    return webhooks.view("user", user.username, row, reveal=True)


@router.get("/v1/me/webhook", response_model=api.WebhookView)
async def my_webhook(user: UserDep, database: DatabaseDep) -> api.WebhookView:
    row = await database.run(lambda s: webhooks.get_hook(s, user_id=user.user_id))
    return webhooks.view("user", user.username, row, reveal=True)


@router.delete("/v1/me/webhook", status_code=204)
async def delete_my_webhook(user: UserDep, database: DatabaseDep) -> Response:
    removed = await database.run(lambda s: webhooks.delete_hook(s, user_id=user.user_id))
    if not removed:
        raise webhooks.no_webhook("user", user.username)
    log.info("webhook of user %s removed", user.username)
    return Response(status_code=204)


@router.post("/v1/me/webhook/test", response_model=api.WebhookTest)
async def test_my_webhook(user: UserDep, state: StateDep) -> api.WebhookTest:
    """Post a test message to your webhook now, and say what it answered."""
    row = await state.database.run(lambda s: webhooks.get_hook(s, user_id=user.user_id))
    if row is None:
        raise webhooks.no_webhook("user", user.username)
    hook = webhooks.Hook("user", user.username, row.url, row.on_start)
    outcome = await state.notifier.test(hook, user.username)
    return _tested(outcome)


# -- a room's ------------------------------------------------------------------------------


@router.put("/v1/rooms/{room}/webhook", response_model=api.WebhookView)
async def set_room_webhook(
    room: str, body: api.SetWebhook, user: UserDep, database: DatabaseDep
) -> api.WebhookView:
    """Where notifications of every job in the room go (owners only)."""

    def write(session: Session) -> tuple[Room, api.WebhookView]:
        found = rooms.room_for_owner(session, user.user_id, room)
        row = webhooks.set_hook(session, body.url, body.on_start, room_id=found.id)
        return found, webhooks.view("room", found.name, row, reveal=True)

    found, shown = await database.run(write)
    log.info(
        "webhook of room %s set by %s (%s)", found.name, user.username, api.webhook_hint(body.url)
    )
    return shown


@router.get("/v1/rooms/{room}/webhook", response_model=api.WebhookView)
async def room_webhook(room: str, user: UserDep, database: DatabaseDep) -> api.WebhookView:
    """Whether the room has a webhook; where it goes only for the room's owners."""

    def read(session: Session) -> api.WebhookView:
        found, member = rooms.room_for_member(session, user.user_id, room)
        row = webhooks.get_hook(session, room_id=found.id)
        return webhooks.view("room", found.name, row, reveal=member.role == "owner")

    return await database.run(read)


@router.delete("/v1/rooms/{room}/webhook", status_code=204)
async def delete_room_webhook(room: str, user: UserDep, database: DatabaseDep) -> Response:
    def remove(session: Session) -> tuple[str, bool]:
        found = rooms.room_for_owner(session, user.user_id, room)
        return found.name, webhooks.delete_hook(session, room_id=found.id)

    name, removed = await database.run(remove)
    if not removed:
        raise webhooks.no_webhook("room", name)
    log.info("webhook of room %s removed by %s", name, user.username)
    return Response(status_code=204)


@router.post("/v1/rooms/{room}/webhook/test", response_model=api.WebhookTest)
async def test_room_webhook(room: str, user: UserDep, state: StateDep) -> api.WebhookTest:
    """Post a test message to the room's webhook now (owners only)."""

    def read(session: Session) -> tuple[str, webhooks.Hook | None]:
        found = rooms.room_for_owner(session, user.user_id, room)
        row = webhooks.get_hook(session, room_id=found.id)
        hook = webhooks.Hook("room", found.name, row.url, row.on_start) if row else None
        return found.name, hook

    name, hook = await state.database.run(read)
    if hook is None:
        raise webhooks.no_webhook("room", name)
    outcome = await state.notifier.test(hook, user.username)
    return _tested(outcome)
