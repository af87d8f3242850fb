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

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "FrameRange": "sleap_rtc.jobs.frames",
    "parse_frames": "sleap_rtc.jobs.frames",
    "JobSpec": "sleap_rtc.jobs.specs",
    "TrackSpec": "sleap_rtc.jobs.specs",
    "TrainSpec": "sleap_rtc.jobs.specs",
    "JobState": "sleap_rtc.jobs.states",
    "ClientError": "sleap_rtc.client.errors",
    "ServerClient": "sleap_rtc.client.session",
    "WorkerSession": "sleap_rtc.client.jobs",
    "JobHandle": "sleap_rtc.client.jobs",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sleap_rtc' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
