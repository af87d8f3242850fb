"""sleap-rtc: submit SLEAP training and tracking jobs to GPUs you don't sit next to.

The public, importable-without-torch pieces are re-exported here::

    from sleap_rtc import TrainSpec, TrackSpec, parse_frames

Worker-side pieces (validation against mounts, the sleap-nn engine, the local
backend) live in :mod:`sleap_rtc.jobs`, :mod:`sleap_rtc.engine` and
:mod:`sleap_rtc.worker`.
"""

from sleap_rtc.jobs.frames import FrameRange, parse_frames
from sleap_rtc.jobs.specs import JobSpec, TrackSpec, TrainSpec
from sleap_rtc.jobs.states import JobState

__version__ = "0.1.0"

__all__ = [
    "FrameRange",
    "JobSpec",
    "JobState",
    "TrackSpec",
    "TrainSpec",
    "__version__",
    "parse_frames",
]
