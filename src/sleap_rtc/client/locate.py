"""Find the worker of a room that holds a job, and open a session to it.

Job ids are made by workers. The server's job index says which worker has a
job (by its id or a unique prefix); a job too new for the index (it lags its
worker by a moment) is looked for on each online worker in turn
(:func:`~sleap_rtc.client.select.job_candidates`).
"""

from __future__ import annotations

from sleap_rtc.client.errors import ClientError, NoSuchJob, ServerError
from sleap_rtc.client.ice import ice_servers
from sleap_rtc.client.jobs import Transport, WorkerError, WorkerSession
from sleap_rtc.client.select import NoWorker, job_candidates
from sleap_rtc.client.session import ServerClient
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.api import JobDetail, JobView, WorkerView


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
    """An open session to the worker that has ``job_id`` (or a unique prefix of
    it), and the job's summary.

    The caller closes the session. Raises :class:`ClientError` when the job's
    worker is offline, or no online worker has the job.
    """
    indexed = await indexed_job(server, room, job_id)
    if indexed is not None:
        if worker_id is not None and worker_id not in (indexed.worker_id, indexed.worker_name):
            raise ClientError(
                f"job {indexed.job_id} runs on worker {indexed.worker_name} "
                f"({indexed.worker_id}), not {worker_id!r}; leave out --worker"
            )
        if indexed.worker_status == "offline":
            raise WorkerOffline(indexed)
        session = await open_session(server, room, indexed.worker_id, transport=transport)
        try:
            return session, await session.status(indexed.job_id)
        except BaseException:
            await session.close()
            raise
    missing = NoSuchJob(
        f"no job {job_id[:64]!r} in room {room}: neither the job index nor an online "
        f"worker has it; see `sleap-rtc jobs list --room {room}`"
    )
    try:
        candidates = await online_workers(server, room, worker_id)
    except NoWorker:
        if worker_id is not None:
            raise
        raise missing from None
    for worker in candidates:
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
    raise missing


class WorkerOffline(ClientError):
    """The job's worker is offline: only its last reported record can be shown."""

    def __init__(self, job: JobView) -> None:
        super().__init__(
            f"job {job.job_id} is on worker {job.worker_name} ({job.worker_id}), which is "
            f"offline; it was {job.state} when last heard of. Its record stays on the worker: "
            f"`sleap-rtc jobs status {job.job_id[:8]} --room {job.room}` shows what the index "
            "has, and this command works again once the worker is back "
            f"(`sleap-rtc rooms workers --room {job.room}`)"
        )
        self.job = job


async def indexed_job(server: ServerClient, room: str, job_id: str) -> JobDetail | None:
    """The room's indexed job with this id or unique id prefix; None if the index lacks it."""
    try:
        return await server.room_job(room, job_id)
    except ServerError as exc:
        if exc.code == "NO_SUCH_JOB":
            return None
        raise
