"""The client's async API: log in, manage rooms and keys, discover workers, run jobs.

The command line is a thin layer over it::

    import asyncio
    from sleap_rtc.client import ServerClient

    async def main() -> None:
        async with ServerClient.from_config() as server:   # uses `sleap-rtc login`'s session
            for worker in await server.workers("my-room", min_gpu_memory=8000):
                print(worker.name, worker.status, worker.best_gpu_memory_mb)

    asyncio.run(main())

A job goes to one worker through a :class:`WorkerSession` (see
:mod:`sleap_rtc.client.jobs`)::

    async with await WorkerSession.open(server, "my-room", worker.id) as session:
        job = await session.submit(TrainSpec(config_paths=["/vast/project/centroid.yaml"]))
        print(await job.wait())
"""

from sleap_rtc.client.errors import (
    ClientError,
    JobRejectedError,
    NotLoggedIn,
    ServerError,
    ServerUnreachable,
    SessionClosed,
    WorkerError,
)
from sleap_rtc.client.jobs import JobHandle, WorkerSession
from sleap_rtc.client.session import ServerClient

__all__ = [
    "ClientError",
    "JobHandle",
    "JobRejectedError",
    "NotLoggedIn",
    "ServerClient",
    "ServerError",
    "ServerUnreachable",
    "SessionClosed",
    "WorkerError",
    "WorkerSession",
]
