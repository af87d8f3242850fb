"""sleap-rtc: submit SLEAP training and tracking jobs to GPUs you don't sit next to.

The public, importable-without-torch pieces are re-exported here::

    from sleap_rtc import TrainSpec, TrackSpec, parse_frames

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
}

__all__ = [
    "FrameRange",
    "JobSpec",
    "JobState",
    "TrackSpec",
    "TrainSpec",
    "__version__",
    "parse_frames",
]

if TYPE_CHECKING:
    from sleap_rtc.jobs.frames import FrameRange, parse_frames
    from sleap_rtc.jobs.specs import JobSpec, TrackSpec, TrainSpec
    from sleap_rtc.jobs.states import JobState


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sleap_rtc' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
