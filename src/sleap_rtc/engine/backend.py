"""The backend interface: where and how an engine job's processes run.

A backend is a plug-in (like submitit's executors): :class:`Backend` submits an
:class:`EngineJob` and returns a :class:`BackendJob` whose :meth:`~BackendJob.events`
stream ends with exactly one :class:`Finished`. A new scheduler (PBS, LSF) is one
new folder under :mod:`sleap_rtc.engine.backends` implementing these two classes,
and one :class:`BackendPlugin` entry in that package's registry; the worker's
configuration and command line read the registry, so nothing above the engine
changes.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from sleap_rtc.engine.sandbox import SandboxPolicy
from sleap_rtc.jobs.events import Progress
from sleap_rtc.jobs.states import JobState


@dataclass(frozen=True)
class Step:
    """One sleap-nn process of a job."""

    name: str
    kind: Literal["train", "track"]
    argv: list[str]
    index: int  # 1-based position in the job
    total: int
    #: Epochs this step will run (training), for progress and ETA.
    total_epochs: int | None = None
    #: The model folder (train) or predictions file (track) this step makes.
    output: Path | None = None
    #: The effective sleap-nn config a training step runs (also written as a file).
    config: dict[str, Any] | None = None
    #: Lines for the job's log when the step starts, such as a run name that was taken;
    #: each starts with :data:`~sleap_rtc.jobs.events.NOTE_PREFIX`, so clients show it.
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class EngineJob:
    job_id: str
    kind: Literal["train", "track"]
    steps: list[Step]
    #: Variables set for the job's processes on top of the allowed part of the worker's
    #: environment (see :func:`~sleap_rtc.engine.sandbox.job_environment`).
    env: dict[str, str] = field(default_factory=dict)
    #: The job's own work folder: its working directory, HOME and TMPDIR.
    cwd: Path | None = None
    #: More variable names (or patterns) the job inherits from the worker's environment.
    env_allow: tuple[str, ...] = ()
    #: Where the job's processes are confined; None runs them unconfined (sandbox = "off").
    sandbox: SandboxPolicy | None = None
    #: Let training be stopped early. sleap-nn's controller then waits up to 10 ms
    #: for a command after every batch, which costs time on fast GPUs.
    stop_early: bool = True


# ------------------------------------------------------------------- events


@dataclass(frozen=True)
class StepStarted:
    """A step's process started. ``native_id`` lets a later worker find it again."""

    step: Step
    native_id: str


@dataclass(frozen=True)
class Submitted:
    """The job was handed to a scheduler, which may hold it before any step starts.

    ``native_id`` finds the scheduler's job again after a worker restart;
    ``note`` is a line for the job's log.
    """

    native_id: str
    note: str


@dataclass(frozen=True)
class LogLine:
    text: str


@dataclass(frozen=True)
class ProgressUpdate:
    progress: Progress


@dataclass(frozen=True)
class Finished:
    """The job ended. ``state`` is COMPLETE, FAILED or CANCELLED."""

    state: JobState
    exit_code: int | None = None
    reason: str | None = None
    outputs: list[str] = field(default_factory=list)
    stopped_early: bool = False


BackendEvent = Submitted | StepStarted | LogLine | ProgressUpdate | Finished


class BackendJob(ABC):
    """A submitted job. One consumer reads :meth:`events` to the end."""

    job_id: str

    @abstractmethod
    def events(self) -> AsyncIterator[BackendEvent]:
        """Events in order; the last one is always :class:`Finished`."""

    @abstractmethod
    async def cancel(self) -> None:
        """Stop the job now; it finishes CANCELLED. Safe to call at any time."""

    @abstractmethod
    async def stop_early(self) -> bool:
        """Ask training to end after the current batch, keeping the model.

        Returns False when the running step can't be stopped early (e.g. tracking).
        """


class QueuedJob(BackendJob):
    r"""A job whose running code :meth:`emit`\ s events onto a queue that
    :meth:`events` drains; the code must end with one :class:`Finished`."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._queue: asyncio.Queue[BackendEvent] = asyncio.Queue()

    def emit(self, event: BackendEvent) -> None:
        self._queue.put_nowait(event)

    async def events(self) -> AsyncIterator[BackendEvent]:
        while True:
            event = await self._queue.get()
            yield event
            if isinstance(event, Finished):
                return


class Backend(ABC):
    name: str
    #: Jobs keep running when the worker process stops (a scheduler runs them), so
    #: a worker that shuts down leaves them be and follows them again on restart.
    jobs_outlive_worker: bool = False
    #: Where jobs' work folders go when it matters where (a folder compute nodes share);
    #: None leaves it to the worker (its state folder).
    work_root: Path | None = None

    async def start(self) -> None:  # noqa: B027 (optional hook)
        """Get ready for jobs (e.g. warm up); called once before the first submit."""

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Release what :meth:`start` took; called once when the worker stops."""

    @abstractmethod
    async def submit(self, job: EngineJob) -> BackendJob:
        """Start ``job``; raise on a failure to start (nothing is left running)."""

    async def reattach(self, job_id: str, native_id: str) -> BackendJob | None:
        """Follow a job a previous worker process left running, or None if it can't be.

        A job that can't be followed is then :meth:`reap`-ed.
        """
        return None

    @abstractmethod
    async def reap(self, native_id: str) -> str:
        """Deal with a job a previous worker process left behind.

        Returns the reason to record. The local backend kills leftover processes
        (their output has no reader any more); a cluster backend may re-attach.
        """


class BackendError(Exception):
    """A backend can't be used here, or its scheduler refused a request; says why."""


@dataclass(frozen=True)
class BackendContext:
    """What every backend may use from the worker that builds it."""

    #: The worker's state folder; a backend keeps its own files in ``state_dir / name``.
    state_dir: Path
    #: How long a cancelled step gets to end after each signal.
    cancel_grace_s: float = 5.0
    #: Start steps from a process that has already imported sleap-nn (``warm_engine``).
    warm_engine: bool = True


@dataclass(frozen=True)
class BackendPlugin:
    """One registry entry: a backend's name, its ``worker.toml`` table and its factory."""

    #: ``backend = NAME`` in worker.toml and ``--backend NAME``.
    name: str
    #: One line for ``--help``: where this backend runs jobs.
    summary: str
    #: The model of the ``[NAME]`` table of worker.toml (defaults when it is absent).
    settings: type[BaseModel]
    #: Builds the backend; raises :class:`BackendError` when it can't be used here.
    build: Callable[[Any, BackendContext], Backend]
    #: Whether this machine's own GPUs run the jobs. False for a scheduler's login
    #: node: its GPUs (if any) don't run them, so the worker announces none unless
    #: they are declared ([[gpus]] in worker.toml).
    local_gpus: bool = True
    #: Where jobs go, for the worker's start line (e.g. "SLURM jobs on gpu"); None: here.
    describe: Callable[[Any], str] | None = None
