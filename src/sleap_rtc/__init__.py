"""sleap-rtc: submit SLEAP training and tracking jobs to GPUs you don't sit next to.

The public API is re-exported here: job specs, and the client that submits them::

    import asyncio
    from sleap_rtc import ServerClient, TrainSpec, WorkerSession

    async def main() -> None:
        async with ServerClient.from_config() as server:      # `sleap-rtc login`'s session
            async with await WorkerSession.open(server, "my-room", "worker-3f9a1c2e") as w:
                job = await w.submit(TrainSpec(config_paths=["/vast/project/centroid.yaml"]))
                print(await job.wait())

    asyncio.run(main())

Worker-side pieces (validation against mounts, the sleap-nn engine, the local
backend) live in :mod:`sleap_rtc.jobs`, :mod:`sleap_rtc.engine` and
:mod:`sleap_rtc.worker`. The re-exports are loaded on first use, so a small entry
point such as the job sandbox's launcher starts without importing pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

__version__ = "0.1.0"

__getattr__, __dir__, _ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "client.errors": ["ClientError"],
        "client.jobs": ["JobHandle", "WorkerSession"],
        "client.session": ["ServerClient"],
        "jobs.frames": ["FrameRange", "parse_frames"],
        "jobs.specs": ["JobSpec", "TrackSpec", "TrainSpec"],
        "jobs.states": ["JobState"],
    },
)

__all__ = [
    "ClientError",
    "FrameRange",
    "JobHandle",
    "JobSpec",
    "JobState",
    "ServerClient",
    "TrackSpec",
    "TrainSpec",
    "WorkerSession",
    "__version__",
    "parse_frames",
]

if TYPE_CHECKING:
    from sleap_rtc.client.errors import ClientError
    from sleap_rtc.client.jobs import JobHandle, WorkerSession
    from sleap_rtc.client.session import ServerClient
    from sleap_rtc.jobs.frames import FrameRange, parse_frames
    from sleap_rtc.jobs.specs import JobSpec, TrackSpec, TrainSpec
    from sleap_rtc.jobs.states import JobState
