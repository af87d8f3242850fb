"""The SLURM backend: each job is one sbatch job, followed from a login node.

``backend.py`` follows jobs from the worker, ``node.py`` runs their steps on the
compute node, ``spool.py`` is the folder the two share, ``script.py`` renders the
batch script, ``tools.py`` talks to SLURM, ``watcher.py`` batches its state
queries, and ``resources.py`` / ``settings.py`` are the pure models of what a job
asks for. This module is the registry entry, light to import: the backend loads
when a worker builds it.
"""

from __future__ import annotations

from sleap_rtc.engine.backend import Backend, BackendContext, BackendPlugin
from sleap_rtc.engine.backends.slurm.settings import SlurmSettings


def _build(settings: SlurmSettings, context: BackendContext) -> Backend:
    from sleap_rtc.engine.backends.slurm.backend import SlurmBackend

    SlurmBackend.check()
    return SlurmBackend(
        settings,
        spool_dir=context.state_dir / "slurm",
        cancel_grace_s=context.cancel_grace_s,
        warm_engine=context.warm_engine,
    )


def _describe(settings: SlurmSettings) -> str:
    return f"SLURM jobs on {settings.partition or 'the default partition'}"


PLUGIN = BackendPlugin(
    name="slurm",
    summary="SLURM batch jobs, with the [slurm] table of worker.toml",
    settings=SlurmSettings,
    build=_build,
    # A login node's own GPUs (if any) don't run the jobs; the partition's GPUs are
    # declared with [[gpus]] so clients can pick this worker for them.
    local_gpus=False,
    describe=_describe,
)
