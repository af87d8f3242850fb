"""From a validated plan to running sleap-nn: commands, progress, backends.

A backend runs an :class:`~sleap_rtc.engine.backend.EngineJob` (a list of
sleap-nn steps) somewhere: :mod:`~sleap_rtc.engine.local` runs it as child
processes on this machine. Nothing here knows about rooms, peers or clients.
"""

from sleap_rtc.engine.backend import Backend, BackendJob, EngineJob, Step
from sleap_rtc.engine.commands import build_track_job, build_train_job, hydra_quote

__all__ = [
    "Backend",
    "BackendJob",
    "EngineJob",
    "Step",
    "build_track_job",
    "build_train_job",
    "hydra_quote",
]
