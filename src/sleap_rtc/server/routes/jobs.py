"""The room's job index: every job its workers reported, online or not."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from sleap_rtc.protocol import api
from sleap_rtc.protocol.index import JobStateName, LossPoint
from sleap_rtc.server.deps import DatabaseDep, HubDep, UserDep
from sleap_rtc.server.hub import Hub
from sleap_rtc.server.models import Room
from sleap_rtc.server.service import jobindex, rooms, workers

router = APIRouter()


def _presence(hub: Hub, room_id: str, worker_id: str) -> api.PresenceStatus:
    live = hub.worker(room_id, worker_id)
    if live is None:
        return "offline"
    return "busy" if live.status == "busy" else "online"


def _view(hub: Hub, room: Room, names: dict[str, str], row: jobindex.IndexRow) -> api.JobView:
    return api.JobView(
        **row.job.model_dump(),
        room=room.name,
        worker_id=row.worker_id,
        worker_name=names.get(row.worker_id, row.worker_id),
        worker_status=_presence(hub, room.id, row.worker_id),
        reported_at=row.reported_at,
    )


@router.get("/v1/rooms/{room}/jobs", response_model=api.JobPage)
async def list_jobs(
    room: str,
    user: UserDep,
    database: DatabaseDep,
    hub: HubDep,
    state: Annotated[list[JobStateName] | None, Query()] = None,
    owner: Annotated[str | None, Query(max_length=64)] = None,
    worker: Annotated[str | None, Query(max_length=64, description="a worker id or name")] = None,
    kind: Literal["train", "track"] | None = None,
    since: Annotated[float | None, Query(ge=0, description="Unix seconds")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> api.JobPage:
    """The room's jobs, newest first; filters combine (all must hold)."""

    def read(session: Session) -> tuple[Room, dict[str, str], list[jobindex.IndexRow], int]:
        found, _ = rooms.room_for_member(session, user.user_id, room)
        names = {r[0]: r[1] for r in workers.room_worker_rows(session, found.id)}
        worker_ids = None
        if worker is not None:
            worker_ids = frozenset(i for i, n in names.items() if worker in (i, n))
            worker_ids = worker_ids or frozenset({worker})
        where = jobindex.JobFilter(
            states=frozenset(state or ()),
            owner=owner,
            worker_ids=worker_ids,
            kind=kind,
            since=since,
            limit=limit,
            offset=offset,
        )
        rows, total = jobindex.list_jobs(session, found.id, where)
        return found, names, rows, total

    found, names, rows, total = await database.run(read)
    return api.JobPage(
        jobs=[_view(hub, found, names, r) for r in rows], total=total, offset=offset, limit=limit
    )


@router.get("/v1/rooms/{room}/jobs/{job}", response_model=api.JobDetail)
async def job_detail(
    room: str, job: str, user: UserDep, database: DatabaseDep, hub: HubDep
) -> api.JobDetail:
    """One job by its id or a unique prefix of it, with its loss points."""

    def read(
        session: Session,
    ) -> tuple[Room, dict[str, str], jobindex.IndexRow, list[LossPoint]]:
        found, _ = rooms.room_for_member(session, user.user_id, room)
        row = jobindex.find_job(session, found.id, found.name, job)
        names = {r[0]: r[1] for r in workers.room_worker_rows(session, found.id)}
        points = jobindex.job_points(session, found.id, row.worker_id, row.job.job_id)
        return found, names, row, points

    found, names, row, points = await database.run(read)
    view = _view(hub, found, names, row)
    return api.JobDetail(**view.model_dump(), points=points)
