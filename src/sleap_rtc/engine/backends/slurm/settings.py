"""``[slurm]`` in worker.toml: what every SLURM job of a worker asks for, and how it starts.

A pure model (no I/O), so the worker's configuration reads it without loading the
backend.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from sleap_rtc.engine.backends.slurm.resources import Resources, single_line


class SlurmSettings(Resources):
    """``[slurm]`` in worker.toml: resources for every job, and how jobs start.

    Example::

        [slurm]
        partition = "gpu"
        time = "12:00:00"
        mem = "32G"
        cpus = 8
        gpus = 1
        setup = ["module load cuda/12.1", "source /vast/envs/sleap/bin/activate"]
        spool_dir = "/vast/home/me/.sleap-rtc-spool"   # shared with the compute nodes
    """

    #: Shell lines run before the job (module load, environment activation). A
    #: failing line fails the job.
    setup: list[str] = Field(default_factory=list, max_length=100)
    #: The folder shared with compute nodes where jobs and their events live
    #: [default: the worker's state folder].
    spool_dir: Path | None = None
    #: The Python that runs sleap-rtc on the compute nodes [default: the worker's].
    python: list[str] | None = Field(default=None, min_length=1)
    #: Seconds between state polls (one sacct call for all of the worker's jobs).
    poll_interval_s: float = Field(default=5.0, ge=0.2, le=600)
    #: Seconds between reads of the jobs' event files.
    events_interval_s: float = Field(default=0.2, ge=0.05, le=10)
    #: Keep a job's spool folder after it ends (its script, slurm.out, events).
    keep_spool: bool = False

    @field_validator("setup")
    @classmethod
    def _setup_lines(cls, value: list[str]) -> list[str]:
        for line in value:
            single_line(line, "each setup line")
        return value
