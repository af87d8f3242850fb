"""Workers of a room: who is online (presence) and tickets to open a channel to one."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from sleap_rtc.protocol import api
from sleap_rtc.server.deps import StateDep, UserDep
from sleap_rtc.server.errors import ApiError
from sleap_rtc.server.events import EVENT_ID_HEADER
from sleap_rtc.server.models import Room
from sleap_rtc.server.service import rooms, workers
from sleap_rtc.server.views import worker_entry

router = APIRouter()


def _best_gpu_memory(gpus: list[dict[str, Any]]) -> int:
    best = 0
    for gpu in gpus:
        free = gpu.get("memory_free_mb")
        best = max(best, int(free if free is not None else gpu.get("memory_total_mb") or 0))
    return best


@router.get("/v1/rooms/{room}/workers", response_model=list[api.WorkerView])
async def list_workers(
    room: str,
    user: UserDep,
    state: StateDep,
    min_gpu_memory: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """Every worker the room knows, online ones first; the body is built without models.

    The ``X-Event-Id`` header names the room's newest live event the answer includes:
    ``GET /v1/rooms/{room}/events?after=<it>`` goes on from there."""

    def read(session: Session) -> tuple[Room, list[workers.WorkerRow]]:
        found, _ = rooms.room_for_member(session, user.user_id, room)
        return found, workers.room_worker_rows(session, found.id)

    hub = state.hub
    found, rows = await state.database.run(read)
    # Taken before the live part is read: the snapshot includes every event up to it.
    event_id = state.events.last_id(found.id)
    entries = [worker_entry(r, found.name, hub.worker(found.id, r[0])) for r in rows]
    if min_gpu_memory is not None:
        entries = [e for e in entries if _best_gpu_memory(e["gpus"]) >= min_gpu_memory]
    order = {"online": 0, "busy": 1, "offline": 2}
    entries.sort(key=lambda e: (order[e["status"]], e["name"], e["id"]))
    return Response(
        json.dumps(entries, separators=(",", ":")),
        media_type="application/json",
        headers={EVENT_ID_HEADER: event_id},
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
