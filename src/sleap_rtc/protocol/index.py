"""A job's record in the server's job index: what workers report, what members read.

A worker reports each of its jobs over its server connection (``job_report`` in
:mod:`sleap_rtc.protocol.signaling`): the record as it is now, plus the loss
points of epochs the server hasn't had yet. The worker's store stays the source
of truth: on every registration the server says up to when it has this worker's
records (``index_since``) and the worker sends what changed after that, so a
job that ended while the worker was disconnected reaches the index too.

Every field is bounded: a report always fits one signaling message, and text a
worker sends is printable, so it is safe in tables, logs and notifications.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from sleap_rtc.jobs.events import TrackProgress, TrainProgress
from sleap_rtc.jobs.results import StepResult
from sleap_rtc.jobs.states import JobState

#: Most state changes kept per job (a job has at most four; more is a broken peer).
MAX_HISTORY = 16
#: Most loss points in one report; the rest follow in the next reports.
MAX_POINTS_PER_REPORT = 200
#: Most loss points the index keeps per job (one per epoch per model).
MAX_POINTS_PER_JOB = 20_000
#: Most log lines in one report, and the most the index keeps per job (the tail).
MAX_LOG_LINES_PER_REPORT = 100
MAX_LOG_LINES_PER_JOB = 200
#: Longest log line kept; a longer one is cut.
MAX_LOG_LINE = 512
#: Most command-line arguments of the job's options (``IndexedJob.args``).
MAX_ARGS = 256

ID_PATTERN = r"^[A-Za-z0-9._:-]+$"


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable text, without control characters or line breaks")
    return value


_JOB_ID = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
_REASON = Annotated[str, Field(max_length=1024), AfterValidator(_printable)]
_PATH = Annotated[str, Field(max_length=4096)]
_FINITE = Annotated[float, Field(allow_inf_nan=False)]
_TIME = Annotated[float, Field(ge=0, allow_inf_nan=False)]

JobStateName = Literal["REJECTED", "QUEUED", "RUNNING", "COMPLETE", "FAILED", "CANCELLED"]
TERMINAL = frozenset(s.value for s in JobState if s.value not in ("QUEUED", "RUNNING"))


class StateEntry(BaseModel):
    """One state change: when (worker clock, Unix seconds), which state, why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: _TIME
    state: JobStateName
    reason: _REASON | None = None


class LossPoint(BaseModel):
    """The losses at the end of one epoch of one model of a training job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: int = Field(default=1, ge=1, le=64)
    epoch: int = Field(ge=0, le=10_000_000)
    loss: _FINITE | None = None
    val_loss: _FINITE | None = None
    at: _TIME


class LogLine(BaseModel):
    """One line of a job's log; ``n`` counts lines from 1, so a gap shows as a gap."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(ge=1)
    text: Annotated[str, Field(max_length=MAX_LOG_LINE), AfterValidator(_printable)]


class IndexedJob(BaseModel):
    """A job as its worker reports it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: _JOB_ID
    kind: Literal["train", "track"]
    owner: Annotated[str, Field(max_length=64), AfterValidator(_printable)] | None = None
    state: JobStateName
    created_at: _TIME
    updated_at: _TIME
    #: What the job was asked to do (config paths, data path, ...), for listings.
    summary: Annotated[str, Field(max_length=1024), AfterValidator(_printable)] = ""
    reason: _REASON | None = None
    exit_code: int | None = Field(default=None, ge=-1024, le=1024)
    stopped_early: bool = False
    #: Seconds from the first RUNNING to the end (None while it runs or if it never ran).
    elapsed_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    history: list[StateEntry] = Field(default_factory=list, max_length=MAX_HISTORY)
    progress: TrainProgress | TrackProgress | None = None
    outputs: list[_PATH] = Field(default_factory=list, max_length=64)
    results: list[StepResult] = Field(default_factory=list, max_length=64)
    #: Whether the owner wants to hear when it ends: None follows their default.
    notify: bool | None = None
    #: The job's options as ``sleap-rtc train/track`` flags (``--max-epochs 5 ...``),
    #: so a reader can run it again (:func:`sleap_rtc.jobs.commandline.option_args`).
    args: list[Annotated[str, Field(max_length=4096), AfterValidator(_printable)]] = Field(
        default_factory=list, max_length=MAX_ARGS
    )

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    @property
    def best_val_loss(self) -> float | None:
        """The best validation loss of the models it made (None before it completed)."""
        losses = [r.best_val_loss for r in self.results if r.best_val_loss is not None]
        return min(losses) if losses else None
