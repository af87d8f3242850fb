"""The worker: configuration, the durable job store, the job runner, and its daemon.

The worker is the only part of sleap-rtc that touches its machine's files, and
only inside its mounts; every job is validated here before anything runs. The
names below are its public API (the CLI uses nothing else); each loads on first
use, so ``sleap-rtc local`` never imports the peer-channel stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

__getattr__, __dir__, _ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "agent": ["WorkerAgent"],
        "capabilities": ["advertised"],
        "config": ["MountConfig", "WorkerConfig", "WorkerConfigError", "load_worker_config"],
        "planning": ["JobPlanner", "Preview"],
        "presence": ["WorkerRefused", "load_worker_id"],
        "replies": ["rejection", "summarize", "terminal_message"],
        "runner": [
            "JobEvent",
            "JobRunner",
            "LogEvent",
            "ProgressEvent",
            "QueueEvent",
            "StateEvent",
        ],
        "store": ["JobRecord", "JobStore", "StoreLocked"],
    },
)

__all__ = [
    "JobEvent",
    "JobPlanner",
    "JobRecord",
    "JobRunner",
    "JobStore",
    "LogEvent",
    "MountConfig",
    "Preview",
    "ProgressEvent",
    "QueueEvent",
    "StateEvent",
    "StoreLocked",
    "WorkerAgent",
    "WorkerConfig",
    "WorkerConfigError",
    "WorkerRefused",
    "advertised",
    "load_worker_config",
    "load_worker_id",
    "rejection",
    "summarize",
    "terminal_message",
]

if TYPE_CHECKING:
    from sleap_rtc.worker.agent import WorkerAgent
    from sleap_rtc.worker.capabilities import advertised
    from sleap_rtc.worker.config import (
        MountConfig,
        WorkerConfig,
        WorkerConfigError,
        load_worker_config,
    )
    from sleap_rtc.worker.planning import JobPlanner, Preview
    from sleap_rtc.worker.presence import WorkerRefused, load_worker_id
    from sleap_rtc.worker.replies import rejection, summarize, terminal_message
    from sleap_rtc.worker.runner import (
        JobEvent,
        JobRunner,
        LogEvent,
        ProgressEvent,
        QueueEvent,
        StateEvent,
    )
    from sleap_rtc.worker.store import JobRecord, JobStore, StoreLocked
