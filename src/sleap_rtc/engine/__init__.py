"""From a validated plan to running sleap-nn: commands, progress, backends, the sandbox.

A backend runs an :class:`~sleap_rtc.engine.backend.EngineJob` (a list of
sleap-nn steps) somewhere: the plug-ins of :mod:`~sleap_rtc.engine.backends` run
it as child processes on this machine (``local``) or as SLURM batch jobs
(``slurm``). Nothing here knows about rooms, peers or clients.
Names are loaded on first use, so ``python -m sleap_rtc.engine.sandbox`` (run
before every job step) imports nothing it doesn't need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lazy_loader

__getattr__, __dir__, _ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "backend": ["Backend", "BackendError", "BackendJob", "BackendPlugin", "EngineJob", "Step"],
        "backends": ["BACKENDS", "DEFAULT_BACKEND", "backend_plugin"],
        "backends.local.backend": ["LocalBackend"],
        "commands": ["build_track_job", "build_train_job", "hydra_quote"],
        "gpus": ["GpuInfo", "detect_gpus", "sleap_nn_version"],
        "sandbox": ["SandboxPolicy", "protect_worker"],
    },
)

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "Backend",
    "BackendError",
    "BackendJob",
    "BackendPlugin",
    "EngineJob",
    "GpuInfo",
    "LocalBackend",
    "SandboxPolicy",
    "Step",
    "backend_plugin",
    "build_track_job",
    "build_train_job",
    "detect_gpus",
    "hydra_quote",
    "protect_worker",
    "sleap_nn_version",
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
    from sleap_rtc.engine.backends import BACKENDS, DEFAULT_BACKEND, backend_plugin
    from sleap_rtc.engine.backends.local.backend import LocalBackend
    from sleap_rtc.engine.commands import build_track_job, build_train_job, hydra_quote
    from sleap_rtc.engine.gpus import GpuInfo, detect_gpus, sleap_nn_version
    from sleap_rtc.engine.sandbox import SandboxPolicy, protect_worker
