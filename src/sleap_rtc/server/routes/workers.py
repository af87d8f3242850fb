"""Workers of a room: who is online (presence) and tickets to open a channel to one."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from sleap_rtc.protocol import api
from sleap_rtc.server.deps import DatabaseDep, HubDep, StateDep, UserDep
from sleap_rtc.server.errors import ApiError
from sleap_rtc.server.hub import WorkerConn
from sleap_rtc.server.models import Room
from sleap_rtc.server.service import rooms, workers

router = APIRouter()


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _best_gpu_memory(gpus: list[dict[str, Any]]) -> int:
    best = 0
    for gpu in gpus:
        free = gpu.get("memory_free_mb")
        best = max(best, int(free if free is not None else gpu.get("memory_total_mb") or 0))
    return best


def worker_entry(row: workers.WorkerRow, room_name: str, live: WorkerConn | None) -> dict[str, Any]:
    """One worker as in :class:`api.WorkerView`, built as plain data.

    Listing a room with a thousand workers builds no model per worker: the live
    part comes from the connection, the rest from the stored capabilities.
    """
    worker_id, name, hostname, stored, last_seen = row
    caps: dict[str, Any] = live.capabilities_dict if live else (stored or {})
    status = "offline"
    if live is not None:
        status = "busy" if live.status == "busy" else "online"
    return {
        "id": worker_id,
        "name": caps.get("name") or name,
        "room": room_name,
        "status": status,
        "hostname": caps.get("hostname") or hostname,
        "accelerator": caps.get("accelerator", "cpu"),
        "gpus": live.gpus_dicts if live else list(caps.get("gpus", [])),
        "running_jobs": live.running_jobs if live else 0,
        "max_concurrent_jobs": int(caps.get("max_concurrent_jobs", 1)),
        "sleap_nn_version": caps.get("sleap_nn_version"),
        "backends": list(caps.get("backends", [])),
        "mounts": list(caps.get("mounts", [])),
        "sandbox": str(caps.get("sandbox", "off")),
        "last_seen": _iso(live.last_seen if live else last_seen),
        "connected_since": _iso(live.connected_at) if live else None,
    }


@router.get("/v1/rooms/{room}/workers", response_model=list[api.WorkerView])
async def list_workers(
    room: str,
    user: UserDep,
    database: DatabaseDep,
    hub: HubDep,
    min_gpu_memory: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """Every worker the room knows, online ones first; the body is built without models."""

    def read(session: Session) -> tuple[Room, list[workers.WorkerRow]]:
        found, _ = rooms.room_for_member(session, user.user_id, room)
        return found, workers.room_worker_rows(session, found.id)

    found, rows = await database.run(read)
    entries = [worker_entry(r, found.name, hub.worker(found.id, r[0])) for r in rows]
    if min_gpu_memory is not None:
        entries = [e for e in entries if _best_gpu_memory(e["gpus"]) >= min_gpu_memory]
    order = {"online": 0, "busy": 1, "offline": 2}
    entries.sort(key=lambda e: (order[e["status"]], e["name"], e["id"]))
    return Response(json.dumps(entries, separators=(",", ":")), media_type="application/json")


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
