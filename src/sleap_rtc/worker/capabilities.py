"""What a worker advertises when it registers: its GPUs, accelerator, backends, mounts.

The hardware facts come from :mod:`sleap_rtc.engine.gpus`; this module adds the
worker's own rules (declared GPUs, ``device = "cpu"``, a scheduler's login node).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from sleap_rtc.engine.gpus import GpuInfo, detect_gpus, refresh_free_memory, sleap_nn_version

if TYPE_CHECKING:
    from sleap_rtc.protocol.signaling import Capabilities, Gpu
    from sleap_rtc.worker.config import WorkerConfig

__all__ = ["advertised"]


def advertised(config: WorkerConfig) -> tuple[Capabilities, Callable[[list[Gpu]], list[Gpu]]]:
    """What the worker registers with, and how its GPUs' free memory is re-read.

    GPUs declared in the configuration ([[gpus]]) are announced as they are and
    never measured. Otherwise this machine's GPUs are announced only when they run
    the jobs: not with ``device = "cpu"``, nor when the backend's plug-in says local
    GPUs don't count (a scheduler's login node).
    """
    from sleap_rtc import __version__
    from sleap_rtc.protocol.signaling import Capabilities, Gpu

    if config.gpus is not None:
        gpus = [
            Gpu(
                index=i,
                name=g.name,
                memory_total_mb=g.memory_total_mb,
                memory_free_mb=g.memory_free_mb,
            )
            for i, g in enumerate(config.gpus)
        ]
        accelerator = "cuda" if gpus else "cpu"
    elif config.device == "cpu" or not config.backend_plugin.local_gpus:
        gpus, accelerator = [], "cpu"
    else:
        found, accelerator = detect_gpus(use_torch=True)
        gpus = [Gpu.model_validate(g.model_dump()) for g in found]
    mounts = config.build_mounts()
    caps = Capabilities(
        name=config.name,
        hostname=socket.gethostname(),
        accelerator="cuda" if accelerator == "cuda" else "mps" if accelerator == "mps" else "cpu",
        gpus=gpus,
        sleap_nn_version=sleap_nn_version(),
        sleap_rtc_version=__version__,
        backends=[config.backend],
        mounts=[m.label for m in mounts],
        max_concurrent_jobs=config.max_concurrent_jobs,
        sandbox=config.sandbox,
    )

    def refresh(current: list[Gpu]) -> list[Gpu]:
        if config.gpus is not None:
            return current  # declared, not measured
        infos = [GpuInfo.model_validate(g.model_dump()) for g in current]
        return [Gpu.model_validate(g.model_dump()) for g in refresh_free_memory(infos)]

    return caps, refresh
