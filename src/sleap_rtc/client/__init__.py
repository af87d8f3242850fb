"""The client's async API: log in, manage rooms and keys, discover workers.

The command line is a thin layer over it::

    import asyncio
    from sleap_rtc.client import ServerClient

    async def main() -> None:
        async with ServerClient.from_config() as server:   # uses `sleap-rtc login`'s session
            for worker in await server.workers("my-room", min_gpu_memory=8000):
                print(worker.name, worker.status, worker.best_gpu_memory_mb)

    asyncio.run(main())
"""

from sleap_rtc.client.errors import ClientError, NotLoggedIn, ServerError, ServerUnreachable
from sleap_rtc.client.session import ServerClient

__all__ = ["ClientError", "NotLoggedIn", "ServerClient", "ServerError", "ServerUnreachable"]
