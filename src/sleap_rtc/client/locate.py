"""Find the worker of a room that holds a job, and open a session to it.

Job ids are made by workers, so a client that knows only the id asks each
candidate worker in turn (:func:`~sleap_rtc.client.select.job_candidates`).
"""

from __future__ import annotations

from sleap_rtc.client.errors import ClientError
from sleap_rtc.client.ice import ice_servers
from sleap_rtc.client.jobs import Transport, WorkerError, WorkerSession
from sleap_rtc.client.select import job_candidates
from sleap_rtc.client.session import ServerClient
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.api import WorkerView


async def online_workers(
    server: ServerClient, room: str, worker_id: str | None = None
) -> list[WorkerView]:
    """The room's online workers, or just ``worker_id`` (raises if it is not there)."""
    return job_candidates(await server.workers(room), room, worker_id=worker_id)


async def open_session(
    server: ServerClient, room: str, worker_id: str, *, transport: Transport = "auto"
) -> WorkerSession:
    """A session to one worker with this client's ICE settings."""
    return await WorkerSession.open(
        server, room, worker_id, transport=transport, ice_servers=ice_servers()
    )


async def find_job(
    server: ServerClient,
    room: str,
    job_id: str,
    *,
    worker_id: str | None = None,
    transport: Transport = "auto",
) -> tuple[WorkerSession, p.JobSummary]:
    """An open session to the worker that has ``job_id``, and the job's summary.

    The caller closes the session. Raises :class:`ClientError` when no online
    worker has the job.
    """
    for worker in await online_workers(server, room, worker_id):
        session = await open_session(server, room, worker.id, transport=transport)
        try:
            summary = await session.status(job_id)
        except WorkerError as exc:
            await session.close()
            if exc.code == "NO_SUCH_JOB":
                continue
            raise
        except BaseException:
            await session.close()
            raise
        return session, summary
    raise ClientError(f"no job {job_id!r} on the online workers of room {room}")
