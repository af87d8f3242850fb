"""Rooms: create, list, show and delete them; invite members and join with an invite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from sleap_rtc.protocol import api
from sleap_rtc.protocol.signaling import CLOSE_FORBIDDEN
from sleap_rtc.server.deps import DatabaseDep, HubDep, StateDep, UserDep
from sleap_rtc.server.logs import log
from sleap_rtc.server.service import accounts, keys, rooms, workers

router = APIRouter()


@router.post("/v1/rooms", response_model=api.RoomView, status_code=201)
async def create_room(body: api.CreateRoom, user: UserDep, database: DatabaseDep) -> api.RoomView:
    expires = (
        datetime.now(UTC) + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
    )
    room, member = await database.run(rooms.create_room, user.user_id, body.name, expires)
    log.info("room %s created by %s", room.name, user.username)
    return rooms.room_view(room, member, 1, 0)


@router.get("/v1/rooms", response_model=list[api.RoomView])
async def list_rooms(user: UserDep, database: DatabaseDep, hub: HubDep) -> list[api.RoomView]:
    rows = await database.run(rooms.list_rooms, user.user_id)
    return [rooms.room_view(r, m, n, hub.online_count(r.id)) for r, m, n in rows]


@router.get("/v1/rooms/{room}", response_model=api.RoomInfo)
async def room_info(room: str, user: UserDep, database: DatabaseDep, hub: HubDep) -> api.RoomInfo:
    def read(session: Session) -> api.RoomInfo:
        found, member = rooms.room_for_member(session, user.user_id, room)
        members = rooms.room_members(session, found.id)
        view = rooms.room_view(found, member, len(members), hub.online_count(found.id))
        return api.RoomInfo(
            **view.model_dump(),
            owner=accounts.username_of(session, found.created_by),
            member_list=members,
            keys_active=keys.count_active_keys(session, found.id),
            workers_known=len(workers.room_workers(session, found.id)),
        )

    return await database.run(read)


@router.delete("/v1/rooms/{room}", status_code=204)
async def delete_room(room: str, user: UserDep, state: StateDep) -> Response:
    """Delete a room (owners only); its workers are disconnected at once."""

    def remove(session: Session) -> str:
        found = rooms.room_for_owner(session, user.user_id, room)
        rooms.delete_room(session, found)
        return found.id

    database, hub = state.database, state.hub
    room_id = await database.run(remove)
    hub.disconnect_room(room_id, CLOSE_FORBIDDEN, "room was deleted")
    state.events.forget_room(room_id)
    state.directory.forget([room_id])
    state.worker_keys.forget_room(room_id)
    log.info("room %s deleted by %s", room, user.username)
    return Response(status_code=204)


@router.post("/v1/rooms/{room}/invites", response_model=api.InviteView, status_code=201)
async def invite(
    room: str, body: api.CreateInvite, user: UserDep, database: DatabaseDep
) -> api.InviteView:
    def create(session: Session) -> api.InviteView:
        found = rooms.room_for_owner(session, user.user_id, room)
        code, row = rooms.create_invite(
            session, found, user.user_id, timedelta(seconds=body.expires_in_s), body.max_uses
        )
        return api.InviteView(
            code=code, room=found.name, expires_at=row.expires_at, max_uses=row.max_uses
        )

    return await database.run(create)


@router.post("/v1/invites/accept", response_model=api.RoomView)
async def accept(
    body: api.AcceptInvite, user: UserDep, database: DatabaseDep, hub: HubDep
) -> api.RoomView:
    room, member, members = await database.run(rooms.accept_invite, user.user_id, body.code)
    log.info("%s joined room %s", user.username, room.name)
    return rooms.room_view(room, member, members, hub.online_count(room.id))
