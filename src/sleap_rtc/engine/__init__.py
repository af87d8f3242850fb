"""From a validated plan to running sleap-nn: commands, progress, backends, the sandbox.

A backend runs an :class:`~sleap_rtc.engine.backend.EngineJob` (a list of
sleap-nn steps) somewhere: the plug-ins of :mod:`~sleap_rtc.engine.backends` run
it as child processes on this machine (``local``) or as SLURM batch jobs
(``slurm``). Nothing here knows about rooms, peers or clients.
Names are loaded on first use, so ``python -m sleap_rtc.engine.sandbox`` (run
before every job step) imports nothing it doesn't need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Backend": "sleap_rtc.engine.backend",
    "BackendError": "sleap_rtc.engine.backend",
    "BackendJob": "sleap_rtc.engine.backend",
    "BackendPlugin": "sleap_rtc.engine.backend",
    "EngineJob": "sleap_rtc.engine.backend",
    "Step": "sleap_rtc.engine.backend",
    "build_track_job": "sleap_rtc.engine.commands",
    "build_train_job": "sleap_rtc.engine.commands",
    "hydra_quote": "sleap_rtc.engine.commands",
}

__all__ = [
    "Backend",
    "BackendError",
    "BackendJob",
    "BackendPlugin",
    "EngineJob",
    "Step",
    "build_track_job",
    "build_train_job",
    "hydra_quote",
]

if TYPE_CHECKING:
    from sleap_rtc.engine.backend import (
        Backend,
        BackendError,
        BackendJob,
        BackendPlugin,
        EngineJob,
        Step,
    )
    from sleap_rtc.engine.commands import build_track_job, build_train_job, hydra_quote


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sleap_rtc.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
