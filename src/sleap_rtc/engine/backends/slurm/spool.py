"""The spool folder a SLURM-backed job shares between the worker and its compute node.

The worker (on a login node) and the batch job (on a compute node) see the same
filesystem, and that is their only channel: nothing on the compute node needs to
reach the worker over the network.

``<spool>/<job id>/``
    ``job.json``      the :class:`~sleap_rtc.engine.backend.EngineJob`, written by the worker
    ``job.sbatch``    the batch script the worker submitted
    ``slurm.out``     the batch job's own stdout and stderr (setup lines, crashes)
    ``events.jsonl``  events from the compute node, one JSON object per line, appended
    ``stop``          created by the worker to ask training to stop early
    ``read.json``     how far the worker has read, so a restarted worker goes on from there

Events are read back as untrusted input: each line is size-limited and validated
into a typed :data:`SpoolEvent` before it becomes a backend event. They are named
``Spool*`` because they are this file format's records, not the worker's job events.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from sleap_rtc.engine.backend import EngineJob
from sleap_rtc.jobs.events import TrackProgress, TrainProgress

JOB_FILE = "job.json"
SCRIPT_FILE = "job.sbatch"
OUTPUT_FILE = "slurm.out"
EVENTS_FILE = "events.jsonl"
STOP_FILE = "stop"
READ_FILE = "read.json"

#: Longest event line accepted; a longer one is skipped (log lines are cut at 16 KiB).
MAX_EVENT_BYTES = 256 * 1024

_STRICT = ConfigDict(extra="forbid", frozen=True)


class SpoolStep(BaseModel):
    model_config = _STRICT
    type: Literal["step"] = "step"
    index: int = Field(ge=1)
    pid: int = Field(ge=0)


class SpoolLine(BaseModel):
    model_config = _STRICT
    type: Literal["log"] = "log"
    text: str = Field(max_length=MAX_EVENT_BYTES)


class SpoolProgress(BaseModel):
    model_config = _STRICT
    type: Literal["progress"] = "progress"
    progress: Annotated[TrainProgress | TrackProgress, Field(discriminator="kind")]


class SpoolFinished(BaseModel):
    model_config = _STRICT
    type: Literal["finished"] = "finished"
    state: Literal["COMPLETE", "FAILED", "CANCELLED"]
    exit_code: int | None = None
    reason: str | None = Field(default=None, max_length=8192)
    outputs: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=256
    )
    stopped_early: bool = False


SpoolEvent = Annotated[
    SpoolStep | SpoolLine | SpoolProgress | SpoolFinished, Field(discriminator="type")
]
EVENT = TypeAdapter(SpoolEvent)
ENGINE_JOB = TypeAdapter(EngineJob)


def encode(event: SpoolStep | SpoolLine | SpoolProgress | SpoolFinished) -> bytes:
    return event.model_dump_json().encode() + b"\n"


def decode(line: bytes) -> SpoolStep | SpoolLine | SpoolProgress | SpoolFinished | None:
    """A line's event, or None when it is too long or not a valid event."""
    if len(line) > MAX_EVENT_BYTES:
        return None
    try:
        return EVENT.validate_json(line)
    except ValueError:
        return None


def write_job(folder: Path, job: EngineJob) -> None:
    (folder / JOB_FILE).write_bytes(ENGINE_JOB.dump_json(job))


def read_job(folder: Path) -> EngineJob:
    return ENGINE_JOB.validate_json((folder / JOB_FILE).read_bytes())


class Tail:
    """Reads the complete lines appended to a file since the last read.

    A line still being written (no newline yet) waits for the next read; a line
    longer than ``max_line`` is skipped whole instead of growing the buffer.
    """

    def __init__(self, path: Path, *, max_line: int = MAX_EVENT_BYTES, offset: int = 0) -> None:
        self.path = path
        self.max_line = max_line
        self._offset = offset
        self._partial = b""
        self._skipping = False

    @property
    def consumed(self) -> int:
        """Bytes up to the end of the last complete line returned (or skipped)."""
        return self._offset - len(self._partial)

    def read(self) -> list[bytes]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read(4 * 1024 * 1024)
        except FileNotFoundError:
            return []
        self._offset += len(data)
        lines = []
        for piece in data.splitlines(keepends=True):
            if not piece.endswith(b"\n"):
                if self._skipping:
                    continue
                self._partial += piece
                if len(self._partial) > self.max_line:
                    self._partial, self._skipping = b"", True
                continue
            line, self._partial = self._partial + piece.rstrip(b"\r\n"), b""
            if self._skipping:
                self._skipping = False  # the end of an over-long line
                continue
            if len(line) <= self.max_line:
                lines.append(line)
        return lines
