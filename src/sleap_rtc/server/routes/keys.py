"""Worker keys of a room: create one (its secret is shown once), list them, revoke one."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from sleap_rtc.protocol import api
from sleap_rtc.protocol.signaling import CLOSE_FORBIDDEN
from sleap_rtc.server.deps import DatabaseDep, StateDep, UserDep
from sleap_rtc.server.logs import log
from sleap_rtc.server.models import Room, WorkerKey
from sleap_rtc.server.service import accounts, keys, rooms

router = APIRouter()


def _key_view(key: WorkerKey, room: Room, creator: str | None) -> api.KeyView:
    return api.KeyView(
        id=key.id,
        name=key.name,
        room=room.name,
        created_by=creator,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
    )


@router.post("/v1/rooms/{room}/keys", response_model=api.NewKey, status_code=201)
async def create_key(
    room: str, body: api.CreateKey, user: UserDep, database: DatabaseDep
) -> api.NewKey:
    def create(session: Session) -> api.NewKey:
        found, _ = rooms.room_for_member(session, user.user_id, room)
        secret, key = keys.create_key(session, found, user.user_id, body.name)
        view = _key_view(key, found, user.username)
        return api.NewKey(**view.model_dump(), secret=secret)

    created = await database.run(create)
    log.info(
        "worker key %s (%s) created in %s by %s", created.id, created.name, room, user.username
    )
    return created


@router.get("/v1/rooms/{room}/keys", response_model=list[api.KeyView])
async def list_keys(room: str, user: UserDep, database: DatabaseDep) -> list[api.KeyView]:
    def read(session: Session) -> list[api.KeyView]:
        found, _ = rooms.room_for_member(session, user.user_id, room)
        return [_key_view(k, found, c) for k, c in keys.list_keys(session, found)]

    return await database.run(read)


@router.delete("/v1/rooms/{room}/keys/{key}", response_model=api.KeyView)
async def revoke_key(room: str, key: str, user: UserDep, state: StateDep) -> api.KeyView:
    """Revoke a key (its creator or a room owner); workers using it are disconnected at once."""

    def revoke(session: Session) -> api.KeyView:
        found, member = rooms.room_for_member(session, user.user_id, room)
        row = keys.revoke_key(session, found, member, key)
        return _key_view(row, found, accounts.username_of(session, row.created_by))

    view = await state.database.run(revoke)
    state.worker_keys.forget_key(view.id)
    dropped = state.hub.disconnect_key(view.id, CLOSE_FORBIDDEN, "worker key was revoked")
    log.info(
        "worker key %s revoked in %s by %s (%d disconnected)",
        view.id,
        room,
        user.username,
        dropped,
    )
    return view
