"""Stop early and Cancel from the dashboard (or the API): the server asks the worker.

The server finds the job in its index and refuses at once what the index
already tells (not the owner, finished, worker offline). Otherwise it sends the
job's worker a ``job_control`` over the worker's connection and waits for its
``job_control_result``: the worker checks the owner again against its own
record and carries it out.
"""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy.orm import Session

from sleap_rtc.protocol import api
from sleap_rtc.protocol.signaling import ControlAction, JobControl, JobControlResult
from sleap_rtc.server.auth import AccessClaims
from sleap_rtc.server.errors import ApiError
from sleap_rtc.server.logs import log
from sleap_rtc.server.service import jobindex, rooms
from sleap_rtc.server.state import ServerState

#: How long the server waits for the worker's answer.
ANSWER_TIMEOUT_S = 15.0

#: A worker's refusal as the HTTP status the API answers with.
_STATUS = {"FORBIDDEN": 403, "NO_SUCH_JOB": 404}


async def control(
    state: ServerState, user: AccessClaims, room: str, ref: str, action: ControlAction
) -> api.JobControlView:
    def read(session: Session) -> tuple[str, jobindex.IndexRow]:
        found, _ = rooms.room_for_member(session, user.user_id, room)
        return found.id, jobindex.find_job(session, found.id, found.name, ref)

    room_id, row = await state.database.run(read)
    job = row.job
    if job.owner != user.username:
        raise ApiError(
            403, "NOT_OWNER", f"job {job.job_id} belongs to {job.owner}; only they can {action} it"
        )
    if job.finished:
        raise ApiError(409, "JOB_FINISHED", f"job {job.job_id} already ended {job.state}")
    if action == "stop" and job.kind != "train":
        raise ApiError(409, "CANNOT_STOP", f"job {job.job_id} is a {job.kind} job; cancel it")
    worker = state.hub.worker(room_id, row.worker_id)
    if worker is None:
        raise ApiError(
            409,
            "WORKER_OFFLINE",
            f"the worker of job {job.job_id} is offline; try again when it is back",
        )
    request_id = uuid.uuid4().hex[:16]
    answer: asyncio.Future[JobControlResult] = asyncio.get_running_loop().create_future()
    worker.controls[request_id] = answer
    try:
        sent = worker.conn.send(
            JobControl(request_id=request_id, job_id=job.job_id, action=action, user=user.username)
        )
        if not sent:
            raise ApiError(409, "WORKER_OFFLINE", "the worker's connection is closing; try again")
        try:
            result = await asyncio.wait_for(answer, ANSWER_TIMEOUT_S)
        except TimeoutError:
            raise ApiError(
                504,
                "WORKER_NO_ANSWER",
                f"the worker did not answer within {ANSWER_TIMEOUT_S:.0f} s "
                "(it may run an older sleap-rtc); try the CLI: "
                f"`sleap-rtc jobs {action} {job.job_id} --room {room}`",
            ) from None
    finally:
        worker.controls.pop(request_id, None)
    log.info("%s of job %s by %s: %s", action, job.job_id, user.username, result.code or "ok")
    if not result.ok:
        raise ApiError(_STATUS.get(result.code, 409), result.code or "REFUSED", result.message)
    return api.JobControlView(job_id=job.job_id, action=action, message=result.message)


def answered(
    controls: dict[str, asyncio.Future[JobControlResult]], result: JobControlResult
) -> None:
    """A worker's answer: hand it to the request waiting for it (others are dropped)."""
    waiting = controls.get(result.request_id)
    if waiting is not None and not waiting.done():
        waiting.set_result(result)


def disconnected(controls: dict[str, asyncio.Future[JobControlResult]]) -> None:
    """The worker went away: the requests still waiting get that as its answer."""
    for request_id, waiting in controls.items():
        if not waiting.done():
            waiting.set_result(
                JobControlResult(
                    request_id=request_id,
                    ok=False,
                    code="WORKER_OFFLINE",
                    message="the worker disconnected before it answered; see the job's state",
                )
            )
