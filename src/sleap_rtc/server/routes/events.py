"""Live updates for the dashboard: Server-Sent Events of a room, or of one job.

A page reads its snapshot from the JSON API, then opens one of these with
``?after=<X-Event-Id of the snapshot>``. The browser reconnects by itself and
sends ``Last-Event-ID``; the stream goes on after it, or sends ``reset`` when it
can't (the page then reads the snapshot again). See :mod:`sleap_rtc.server.events`.

- ``/v1/rooms/{room}/events``: ``worker`` (a WorkerView) and ``job`` (a JobView).
- ``/v1/rooms/{room}/jobs/{job}/events``: that job's ``job``, ``points``
  (``{"points": [LossPoint]}``, new epochs) and ``log`` (``{"lines": [LogLine]}``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from sqlalchemy.orm import Session
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

from sleap_rtc.server import views
from sleap_rtc.server.auth import AccessClaims
from sleap_rtc.server.deps import StateDep, UserDep
from sleap_rtc.server.errors import ApiError, not_found
from sleap_rtc.server.events import Event, JobKey, Reset, Stream, StreamLimit
from sleap_rtc.server.service import accounts, jobindex, rooms
from sleap_rtc.server.state import ServerState

router = APIRouter(tags=["live events"])

#: A comment line this often keeps proxies from closing a quiet stream.
KEEPALIVE_S = 15.0
#: How often a stream checks that its login session and membership still hold.
RECHECK_S = 60.0
#: How long a browser waits before reconnecting, in milliseconds.
RETRY_MS = 3000

_SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "a stream of events"},
    404: {"description": "no such room (or not a member) or job"},
    429: {"description": "TOO_MANY_STREAMS"},
}

Filter = Callable[[Event], bool]


def _open(state: ServerState, room_id: str, after: str | None, user: AccessClaims) -> Stream | None:
    """The stream after ``after``; None when it can't resume (the reader resets)."""
    try:
        return state.events.open(room_id, after, user.session_id)
    except Reset:
        return None
    except StreamLimit:
        raise ApiError(
            429, "TOO_MANY_STREAMS", "too many live pages are open; close some and reload"
        ) from None


def _still_allowed(
    state: ServerState, user: AccessClaims, room_id: str
) -> Callable[[Session], bool]:
    def check(session: Session) -> bool:
        return accounts.session_active(session, user.session_id) and rooms.is_member(
            session, user.user_id, room_id
        )

    return check


def _data(event: Event, username: str) -> str:
    if event.name != "job":
        return event.text
    # Who may press Stop/Cancel differs per reader.
    data = event.data
    allowed = views.may_control(data.get("owner"), str(data.get("state")), username)
    return event.text_with(can_control=allowed)


async def _events(
    request: Request,
    state: ServerState,
    user: AccessClaims,
    room_id: str,
    stream: Stream | None,
    wanted: Filter,
) -> AsyncIterator[ServerSentEvent]:
    if stream is None:
        yield ServerSentEvent("{}", event="reset", id=state.events.last_id(room_id), retry=RETRY_MS)
        return
    try:
        checked = time.monotonic()
        yield ServerSentEvent(comment="live", retry=RETRY_MS)
        while not stream.ended.is_set():
            try:
                batch = await stream.next(KEEPALIVE_S)
            except Reset:
                yield ServerSentEvent("{}", event="reset", id=state.events.last_id(room_id))
                return
            for event in batch:
                if wanted(event):
                    yield ServerSentEvent(
                        _data(event, user.username), event=event.name, id=stream.event_id(event)
                    )
            if not batch:
                yield ServerSentEvent(comment="keepalive")
            if time.monotonic() - checked > RECHECK_S or user.expires_at.timestamp() < time.time():
                checked = time.monotonic()
                allowed = _still_allowed(state, user, room_id)
                if user.expires_at.timestamp() < time.time() or not await state.database.run(
                    allowed
                ):
                    return
    finally:
        stream.close()


def resume_point(
    after: Annotated[str | None, Query(max_length=64, description="an event id")] = None,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> str | None:
    """Where a stream starts: after the browser's Last-Event-ID (set on every
    reconnect, so newer than the URL's), else after ``?after=``, else from now."""
    return (last_event_id or after or "")[:64] or None


ResumeDep = Annotated[str | None, Depends(resume_point)]


def _respond(
    request: Request,
    state: ServerState,
    user: AccessClaims,
    room_id: str,
    after: str | None,
    wanted: Filter,
) -> EventSourceResponse:
    stream = _open(state, room_id, after, user)
    events = _events(request, state, user, room_id, stream, wanted)
    return EventSourceResponse(events, ping=None, send_timeout=30)


@router.get("/v1/rooms/{room}/events", responses=_SSE_DOC, response_class=EventSourceResponse)
async def room_events(
    room: str, request: Request, user: UserDep, state: StateDep, after: ResumeDep
) -> EventSourceResponse:
    """The room's workers and jobs as they change (events ``worker``, ``job``, ``reset``)."""
    found = await state.database.run(rooms.room_by_name_for_member, user.user_id, room)
    if found is None:
        raise not_found("room", room)
    return _respond(request, state, user, found.id, after, lambda e: e.name in ("worker", "job"))


@router.get(
    "/v1/rooms/{room}/jobs/{job}/events", responses=_SSE_DOC, response_class=EventSourceResponse
)
async def job_events(
    room: str, job: str, request: Request, user: UserDep, state: StateDep, after: ResumeDep
) -> EventSourceResponse:
    """One job as it runs (events ``job``, ``points``, ``log``, ``reset``)."""

    def read(session: Session) -> tuple[str, JobKey]:
        found, _ = rooms.room_for_member(session, user.user_id, room)
        row = jobindex.find_job(session, found.id, found.name, job)
        return found.id, (row.worker_id, row.job.job_id)

    room_id, key = await state.database.run(read)
    return _respond(request, state, user, room_id, after, lambda e: e.job == key)
