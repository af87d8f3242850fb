"""Stopping and cancelling jobs: the one rule for who may, asked from anywhere.

A job is stopped early or cancelled by its owner only. The request comes over a
peer channel (``JOB_STOP`` / ``JOB_CANCEL``, the user proven by a ticket) or from
the server (``job_control``, sent when the owner presses a button on the
dashboard; the server checked its index, the worker checks its own record,
which is the one that counts). Both go through :func:`control_job`.
"""

from __future__ import annotations

import asyncio
import logging

from sleap_rtc.protocol.signaling import ControlAction, JobControl, JobControlResult, loggable
from sleap_rtc.worker.runner import JobRunner
from sleap_rtc.worker.store import JobRecord

log = logging.getLogger("sleap_rtc.worker")

#: How long the server's request waits for a cancel to end the job before the
#: answer says it is ending (the job ends all the same).
CANCEL_ANSWER_S = 5.0


class ControlRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_control(runner: JobRunner, job_id: str, action: ControlAction, user: str) -> JobRecord:
    """The job ``user`` may ``action``; raises :class:`ControlRefused` naming why not."""
    record = runner.store.get(job_id)
    if record is None:
        raise ControlRefused("NO_SUCH_JOB", f"no job {job_id!r} on this worker")
    if record.owner is not None and record.owner != user:
        raise ControlRefused(
            "FORBIDDEN", f"job {record.id} belongs to {record.owner}; only they can {action} it"
        )
    if action == "stop" and not runner.config.stop_early:
        raise ControlRefused(
            "CANNOT_STOP",
            "can't stop early: this worker has stop-early turned off (stop_early = false)",
        )
    return record


async def control_job(
    runner: JobRunner, job_id: str, action: ControlAction, user: str
) -> JobRecord:
    """Stop ``job_id`` early or cancel it for ``user``; the record after (a cancel
    waits for the job to end). Raises :class:`ControlRefused`."""
    record = check_control(runner, job_id, action, user)
    if action == "cancel":
        return await runner.cancel(record.id)
    if not await runner.stop_early(record.id):
        raise ControlRefused("CANNOT_STOP", "can't stop early: the job is not training right now")
    return runner.store.get(record.id) or record


async def answer_server(runner: JobRunner, message: JobControl) -> JobControlResult:
    """Carry out the server's ``job_control`` and say how it went."""

    def result(ok: bool, code: str, text: str) -> JobControlResult:
        return JobControlResult(
            request_id=message.request_id, ok=ok, code=code, message=loggable(text)[:256]
        )

    try:
        record = check_control(runner, message.job_id, message.action, message.user)
    except ControlRefused as exc:
        return result(False, exc.code, exc.message)
    if record.finished:
        return result(False, "JOB_FINISHED", f"job {record.id} already ended {record.state.value}")
    log.info("%s of job %s asked by %s (dashboard)", message.action, record.id, message.user)
    work = asyncio.ensure_future(control_job(runner, record.id, message.action, message.user))
    try:
        await asyncio.wait_for(asyncio.shield(work), CANCEL_ANSWER_S)
    except TimeoutError:
        return result(True, "", f"job {record.id} is being cancelled")
    except ControlRefused as exc:
        return result(False, exc.code, exc.message)
    if message.action == "stop":
        return result(True, "", f"job {record.id} will stop after this epoch and keep its model")
    return result(True, "", f"job {record.id} cancelled")
