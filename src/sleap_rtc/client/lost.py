"""What a lost channel means for the job it carried: is the worker still there?

A channel to a worker closes when the network drops it, and also when the worker
itself goes away (stopped, crashed, or its key revoked and the server refused it).
Only in the first case can the job be attached to again right away; in the second
the job's record and log wait on the worker until it is back online.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from sleap_rtc.client.errors import ClientError
from sleap_rtc.client.session import ServerClient
from sleap_rtc.protocol.api import WorkerView

#: How long the server is given to notice a worker that went away with the channel.
SETTLE_S = 2.0
#: How much of the reason the server couldn't be asked is kept.
MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class LostChannel:
    """Where a job stands after its channel closed: the worker's presence, if known."""

    worker_id: str
    worker_name: str
    room: str
    job_id: str
    #: True: listed online; False: offline or not listed; None: the server couldn't say.
    worker_online: bool | None
    #: Why the server couldn't say (when ``worker_online`` is None).
    unknown_because: str = ""

    @property
    def can_attach(self) -> bool:
        """Whether ``sleap-rtc jobs attach`` can follow the job again now."""
        return self.worker_online is True

    @property
    def attach_command(self) -> str:
        return f"sleap-rtc jobs attach {self.job_id} --room {self.room}"

    @property
    def workers_command(self) -> str:
        return f"sleap-rtc rooms workers --room {self.room}"


def is_online(workers: Sequence[WorkerView], worker_id: str) -> bool:
    """Whether the listing has ``worker_id`` and it is not offline."""
    return any(w.id == worker_id and w.status != "offline" for w in workers)


async def after_lost_channel(
    server: ServerClient,
    room: str,
    worker_id: str,
    worker_name: str,
    job_id: str,
    *,
    settle_s: float = SETTLE_S,
) -> LostChannel:
    """Ask the server whether the worker is still online, giving it ``settle_s`` seconds
    to notice a worker that left with the channel."""
    online: bool | None = None
    why = ""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle_s
    while True:
        try:
            online = is_online(await server.workers(room), worker_id)
        except ClientError as exc:
            online, why = None, str(exc)[:MAX_REASON_CHARS]
            break
        if not online or loop.time() >= deadline:
            break
        await asyncio.sleep(min(0.5, max(0.0, deadline - loop.time())))
    return LostChannel(worker_id, worker_name, room, job_id, online, why)
