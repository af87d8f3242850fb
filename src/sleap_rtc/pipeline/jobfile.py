"""The job file's fields as written: datasets, stages, configs, resources, needs.

:class:`JobFile` is the schema a job file must fit (types, formats, names);
the rules across fields are in :mod:`sleap_rtc.pipeline.rules`, and
:func:`sleap_rtc.pipeline.spec.load_job` resolves a job file that passes both.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sleap_rtc.engine.backends.slurm.resources import Resources, single_line
from sleap_rtc.engine.backends.slurm.tools import Dependency
from sleap_rtc.jobs.options import JobKind
from sleap_rtc.pipeline.datasets import NAME
from sleap_rtc.pipeline.throttle import ThrottleSettings

TRAINING_STAGES = ("single_instance", "centroid", "centered_instance", "bottomup")
STAGES = (*TRAINING_STAGES, "track")
StageName = Literal["single_instance", "centroid", "centered_instance", "bottomup", "track"]
TrainingStage = Literal["single_instance", "centroid", "centered_instance", "bottomup"]

PLACEHOLDERS = ("dataset", "experiment_root")
#: The group of the stages that run once for the whole job, where a dataset's name
#: would be (no dataset name can start with "_").
PIPELINE_GROUP = "_pipeline"
StageKind = Literal["train", "track", "command"]
Scope = Literal["dataset", "pipeline"]

_STRICT = ConfigDict(extra="forbid", frozen=True)
#: Largest ``array_parallelism`` (``%P`` of ``--array``).
MAX_ARRAY_PARALLELISM = 10_000


#: Ends after which a stage with ``retries`` tries again, unless ``retry_on`` says otherwise.
Retryable = Literal[
    "OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "FAILED", "BOOT_FAIL", "DEADLINE"
]
RETRY_ON: tuple[Retryable, ...] = ("OUT_OF_MEMORY", "TIMEOUT", "NODE_FAIL", "PREEMPTED")


class RetryResources(BaseModel):
    """Resources per attempt: attempt N takes the Nth entry (the last one for the rest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mem: list[str] = Field(default_factory=list, max_length=10)
    time: list[str] = Field(default_factory=list, max_length=10)

    @field_validator("mem", "time")
    @classmethod
    def _each(cls, value: list[str], info: Any) -> list[str]:
        for item in value:  # the same formats as slurm.mem and slurm.time
            Resources.model_validate({str(info.field_name): item})
        return value

    def for_attempt(self, attempt: int) -> dict[str, str]:
        """The ``mem``/``time`` of attempt ``attempt`` (1 for the first), where set."""
        found = {}
        for name in ("mem", "time"):
            values: list[str] = getattr(self, name)
            if values:
                found[name] = values[min(attempt, len(values)) - 1]
        return found


class StageSettings(BaseModel):
    """What one stage changes from the job-wide settings."""

    model_config = _STRICT

    config: str | None = None
    slurm: Resources = Field(default_factory=Resources)
    extra_args: dict[str, Any] = Field(default_factory=dict)
    setup: list[str] | None = None
    #: The stages this one waits for (default: track waits for the training stages).
    needs: list[str] | None = Field(default=None, max_length=64)
    #: How it waits for them (command stages only; training and track need afterok).
    dependency: Dependency = "afterok"
    #: At most one job of this stage runs at a time (SLURM's ``singleton``).
    singleton: bool = False
    #: A command stage's shell lines, run in its artifacts folder.
    command: str | list[str] | None = None
    #: A command stage runs once per dataset, or once for the whole job.
    scope: Scope = "dataset"
    #: Files a command stage writes in its artifacts folder, pinned in its manifest.
    outputs: list[str] = Field(default_factory=list, max_length=256)
    #: Try again this many times after an end in ``retry_on``, with ``retry_resources``;
    #: a training stage goes on from its last checkpoint.
    retries: int = Field(default=0, ge=0, le=10)
    retry_on: list[Retryable] = Field(default_factory=lambda: list(RETRY_ON), min_length=1)
    retry_resources: RetryResources = Field(default_factory=RetryResources)
    #: For track over several files (an array job): at most so many tasks at once.
    array_parallelism: int | None = Field(default=None, ge=1, le=MAX_ARRAY_PARALLELISM)

    @field_validator("command")
    @classmethod
    def _command(cls, value: str | list[str] | None) -> str | list[str] | None:
        lines = [value] if isinstance(value, str) else value or []
        for line in lines:
            single_line(line, "each command line (give several as a list)")
        if value is not None and not any(line.strip() for line in lines):
            raise ValueError("a command stage needs a command that is not empty")
        return value

    def command_lines(self) -> tuple[str, ...]:
        if self.command is None:
            return ()
        return (self.command,) if isinstance(self.command, str) else tuple(self.command)


class JobFile(BaseModel):
    """A job file as written; :func:`load_job` checks and resolves it."""

    model_config = _STRICT

    name: str
    datasets: list[str] | Literal["all"]
    datasets_registry: str = "datasets.json"
    #: The built-in stages to run (command stages are those defined in ``stages``).
    training_types: list[StageName] = Field(default_factory=list, max_length=len(STAGES))
    configs: dict[TrainingStage, str] = Field(default_factory=dict)
    extra_args: dict[str, Any] = Field(default_factory=dict)
    optimize_batch_size: bool = True
    dependency_manifests: dict[str, str] = Field(default_factory=dict)
    slurm: Resources = Field(default_factory=Resources)
    #: Settings per built-in stage, and command stages (any other name, with a command).
    stages: dict[str, StageSettings] = Field(default_factory=dict, max_length=64)
    setup: list[str] = Field(default_factory=list, max_length=100)
    #: At most so many sbatch calls per second, and jobs of this pipeline queued at once.
    throttle: ThrottleSettings = Field(default_factory=ThrottleSettings)
    #: Track over several files runs as an array job with at most so many tasks at once
    #: (``--array=0-N%P``); unset: as many as SLURM lets run.
    array_parallelism: int | None = Field(default=None, ge=1, le=MAX_ARRAY_PARALLELISM)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError(
                "name must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or "
                "digit (it names folders and scripts)"
            )
        return value

    @field_validator("setup")
    @classmethod
    def _setup(cls, value: list[str]) -> list[str]:
        for line in value:
            single_line(line, "each setup line")
        return value


def stage_kind(stage: str) -> JobKind:
    """The kind of sleap-nn job a built-in stage runs: ``track``, or ``train`` for every
    model type."""
    return "track" if stage == "track" else "train"
