"""Workers of a room: who is online (presence) and tickets to open a channel to one."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response

from sleap_rtc.protocol import api
from sleap_rtc.server.deps import StateDep, UserDep
from sleap_rtc.server.errors import ApiError
from sleap_rtc.server.events import EVENT_ID_HEADER
from sleap_rtc.server.service import rooms, workers

router = APIRouter()


#: Header of a listing: how many workers matched the filters (``limit`` may show fewer).
TOTAL_HEADER = "X-Total-Count"


@router.get("/v1/rooms/{room}/workers", response_model=list[api.WorkerView])
async def list_workers(
    room: str,
    user: UserDep,
    state: StateDep,
    min_gpu_memory: Annotated[int | None, Query(ge=0)] = None,
    status: Annotated[list[api.PresenceStatus] | None, Query()] = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> Response:
    """Every worker the room knows, online ones first, then by name.

    Filters apply on the server: ``min_gpu_memory`` (MiB one GPU offers, free where
    known), ``status`` (repeatable: online, busy, offline), and ``limit`` (the
    first so many; the ``X-Total-Count`` header says how many matched). The answer
    is joined from entries encoded once per change (:mod:`~sleap_rtc.server.directory`).

    The ``X-Event-Id`` header names the room's newest live event the answer includes:
    ``GET /v1/rooms/{room}/events?after=<it>`` goes on from there."""
    directory = state.directory
    found, _ = await state.database.run(rooms.room_for_member, user.user_id, room)
    if not directory.loaded(found.id):
        directory.loading(found.id)
        rows = await state.database.run(workers.room_worker_rows, found.id)
        directory.load(found.id, found.name, rows)
    # Taken before the live part is read: the snapshot includes every event up to it.
    event_id = state.events.last_id(found.id)
    body, total = directory.listing(
        found.id,
        state.hub,
        statuses=set(status) if status else None,
        min_gpu_memory=min_gpu_memory,
        limit=limit,
    )
    return Response(
        body,
        media_type="application/json",
        headers={EVENT_ID_HEADER: event_id, TOTAL_HEADER: str(total)},
    )


@router.post("/v1/rooms/{room}/tickets", response_model=api.TicketView, status_code=201)
async def ticket(
    room: str, body: api.CreateTicket, user: UserDep, state: StateDep
) -> api.TicketView:
    """A short-lived ticket for one channel from this user to one online worker of the room."""
    found = await state.database.run(rooms.room_by_name_for_member, user.user_id, room)
    if found is None:
        raise ApiError(404, "NOT_FOUND", f"room {room!r} not found (or you are not a member)")
    if state.hub.worker(found.id, body.worker_id) is None:
        raise ApiError(
            404,
            "WORKER_OFFLINE",
            f"worker {body.worker_id!r} is not online in room {room!r}; "
            f"see `sleap-rtc rooms workers --room {room}`",
        )
    token, expires = state.signer.issue_ticket(
        user,
        found.name,
        found.id,
        body.worker_id,
        timedelta(seconds=state.settings.ticket_ttl_s),
    )
    return api.TicketView(
        ticket=token, worker_id=body.worker_id, room=found.name, expires_at=expires
    )
