"""Job specs, validation rules and job states.

This layer is the data model of the project: importable without network, torch
or subprocess machinery, and the only place job rules are written down.
"""

from sleap_rtc.jobs.frames import FrameRange, FramesError, format_frames, parse_frames
from sleap_rtc.jobs.specs import SPEC_VERSION, JobSpec, TrackSpec, TrainSpec, parse_spec
from sleap_rtc.jobs.states import TERMINAL_STATES, JobState, check_transition

__all__ = [
    "SPEC_VERSION",
    "TERMINAL_STATES",
    "FrameRange",
    "FramesError",
    "JobSpec",
    "JobState",
    "TrackSpec",
    "TrainSpec",
    "check_transition",
    "format_frames",
    "parse_frames",
    "parse_spec",
]
