"""The room's job index: every job its workers reported, online or not."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from sleap_rtc.protocol import api
from sleap_rtc.protocol.index import JobStateName, LossPoint
from sleap_rtc.server import views
from sleap_rtc.server.deps import DatabaseDep, HubDep, StateDep, UserDep
from sleap_rtc.server.events import EVENT_ID_HEADER
from sleap_rtc.server.hub import Hub
from sleap_rtc.server.models import Room
from sleap_rtc.server.service import control, jobindex, rooms, workers

router = APIRouter()


def _view(
    hub: Hub, room: Room, names: dict[str, str], row: jobindex.IndexRow, user: str
) -> api.JobView:
    name = names.get(row.worker_id, row.worker_id)
    return views.job_view(
        hub, room.id, room.name, name, row.worker_id, row.job, row.reported_at, user
    )


@router.get("/v1/rooms/{room}/jobs", response_model=api.JobPage)
async def list_jobs(
    room: str,
    user: UserDep,
    database: DatabaseDep,
    hub: HubDep,
    server: StateDep,
    response: Response,
    state: Annotated[list[JobStateName] | None, Query()] = None,
    owner: Annotated[str | None, Query(max_length=64)] = None,
    worker: Annotated[str | None, Query(max_length=64, description="a worker id or name")] = None,
    kind: Literal["train", "track"] | None = None,
    since: Annotated[float | None, Query(ge=0, description="Unix seconds")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> api.JobPage:
    """The room's jobs, newest first; filters combine (all must hold).

    The ``X-Event-Id`` header names the room's newest live event the page includes
    (``GET /v1/rooms/{room}/events?after=<it>`` goes on from there)."""

    def read(
        session: Session,
    ) -> tuple[str, Room, dict[str, str], list[jobindex.IndexRow], int]:
        found, _ = rooms.room_for_member(session, user.user_id, room)
        # Read before the index: events are published after their rows are written,
        # so the page includes every event up to this one.
        event_id = server.events.last_id(found.id)
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
        return event_id, found, names, rows, total

    event_id, found, names, rows, total = await database.run(read)
    response.headers[EVENT_ID_HEADER] = event_id
    return api.JobPage(
        jobs=[_view(hub, found, names, r, user.username) for r in rows],
        total=total,
        offset=offset,
        limit=limit,
    )


@router.get("/v1/rooms/{room}/jobs/{job}", response_model=api.JobDetail)
async def job_detail(
    room: str, job: str, user: UserDep, server: StateDep, response: Response
) -> api.JobDetail:
    """One job by its id or a unique prefix of it, with its loss points and log tail.

    The ``X-Event-Id`` header names the newest live event the answer includes
    (``GET /v1/rooms/{room}/jobs/{job}/events?after=<it>`` goes on from there)."""

    def read(
        session: Session,
    ) -> tuple[str, Room, dict[str, str], jobindex.IndexRow, list[LossPoint]]:
        found, _ = rooms.room_for_member(session, user.user_id, room)
        event_id = server.events.last_id(found.id)  # before the index, as for listings
        row = jobindex.find_job(session, found.id, found.name, job)
        names = {r[0]: r[1] for r in workers.room_worker_rows(session, found.id)}
        points = jobindex.job_points(session, found.id, row.worker_id, row.job.job_id)
        return event_id, found, names, row, points

    event_id, found, names, row, points = await server.database.run(read)
    response.headers[EVENT_ID_HEADER] = event_id
    view = _view(server.hub, found, names, row, user.username)
    return api.JobDetail(**view.model_dump(), points=points, log_tail=row.log_tail)


_CONTROL_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"model": api.ErrorResponse, "description": "NOT_OWNER: only the job's owner may"},
    404: {"model": api.ErrorResponse, "description": "no such room or job"},
    409: {
        "model": api.ErrorResponse,
        "description": "JOB_FINISHED, WORKER_OFFLINE, CANNOT_STOP: the worker's reason",
    },
    504: {"model": api.ErrorResponse, "description": "WORKER_NO_ANSWER"},
}


@router.post(
    "/v1/rooms/{room}/jobs/{job}/stop",
    response_model=api.JobControlView,
    status_code=202,
    responses=_CONTROL_RESPONSES,
)
async def stop_job(room: str, job: str, user: UserDep, server: StateDep) -> api.JobControlView:
    """Ask a training job to stop after this epoch, keeping its model (its owner only)."""
    return await control.control(server, user, room, job, "stop")


@router.post(
    "/v1/rooms/{room}/jobs/{job}/cancel",
    response_model=api.JobControlView,
    status_code=202,
    responses=_CONTROL_RESPONSES,
)
async def cancel_job(room: str, job: str, user: UserDep, server: StateDep) -> api.JobControlView:
    """Cancel a queued or running job (its owner only)."""
    return await control.control(server, user, room, job, "cancel")
