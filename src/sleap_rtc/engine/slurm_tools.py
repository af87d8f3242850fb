"""Talking to SLURM: the resources a job asks for, sbatch, one batched state query, scancel.

Shared by the worker's SLURM backend and ``sleap-rtc pipeline``.

Job ids come from ``sbatch --parsable`` only; an sbatch that fails, or prints
no job id, is an error that says what sbatch said. States come from one
``sacct`` call for all jobs, or from ``squeue -t all`` where accounting is off.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

_JOB_ID = re.compile(r"^\d+(_\d+)?$")
#: States after which a job never runs again.
FINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
    }
)
_SQUEUE_STATES = {"CD": "COMPLETED", "F": "FAILED", "CA": "CANCELLED", "TO": "TIMEOUT"}


_TIME = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$")
_MEM = re.compile(r"^\d+[KMGT]?$")
_FORMATS = {
    "time": (_TIME, "1-00:00:00, 02:00:00, 30:00 or 30"),
    "mem": (_MEM, "16G, 4000M or 4000 (MB)"),
}


def single_line(value: str, what: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"{what} must be a single line")
    return value


class Resources(BaseModel):
    """SLURM resources; unset fields are left to the cluster's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = Field(default=None, description="D-HH:MM:SS, HH:MM:SS, MM:SS or MM")
    mem: str | None = Field(default=None, description="e.g. 16G")
    cpus: int | None = Field(default=None, ge=1, le=4096)
    gpus: int | None = Field(default=None, ge=0, le=64)
    gres: str | None = None
    constraint: str | None = None
    #: More ``#SBATCH`` lines, each an option such as ``--exclusive``.
    extra: list[str] = Field(default_factory=list, max_length=64)

    def directives(self) -> list[str]:
        """The ``#SBATCH`` options these resources ask for (without ``#SBATCH``)."""
        lines = []
        for option, value in (
            ("partition", self.partition),
            ("account", self.account),
            ("qos", self.qos),
            ("time", self.time),
            ("mem", self.mem),
            ("cpus-per-task", self.cpus),
            ("constraint", self.constraint),
            ("gres", self.gres),
        ):
            if value is not None:
                lines.append(f"--{option}={value}")
        if self.gpus:
            lines.append(f"--gpus={self.gpus}")
        return [*lines, *self.extra]

    @field_validator("partition", "account", "qos", "gres", "constraint")
    @classmethod
    def _single_word(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise ValueError("must be one word without spaces")
        return value

    @field_validator("time", "mem")
    @classmethod
    def _format(cls, value: str | None, info: ValidationInfo) -> str | None:
        pattern, example = _FORMATS[str(info.field_name)]
        if value is not None and not pattern.match(value):
            raise ValueError(f"{info.field_name} must look like {example}")
        return value

    @field_validator("extra")
    @classmethod
    def _extra(cls, value: list[str]) -> list[str]:
        for item in value:
            single_line(item, "an extra SBATCH line")
            if not item.startswith("--"):
                raise ValueError(f"extra SBATCH lines are options like --exclusive, got {item!r}")
        return value

    def over(self, base: Resources) -> Resources:
        """These resources, with ``base`` filling what is unset."""
        merged = base.model_dump()
        for key, value in self.model_dump().items():
            if key == "extra":
                merged[key] = [*base.extra, *value]
            elif value is not None:
                merged[key] = value
        return Resources(**merged)


class SlurmError(Exception):
    pass


def _run(
    argv: list[str],
    *,
    cwd: Path | None = None,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> str:
    try:
        # Its own session: a Ctrl-C meant for sleap-rtc doesn't kill an sbatch mid-submit.
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=timeout,
            env=env,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise SlurmError(f"{argv[0]} is not installed here (is this a SLURM login node?)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{argv[0]} did not answer within {timeout:.0f} s") from None
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip() or "nothing"
        raise SlurmError(f"{' '.join(argv[:2])} failed (exit {result.returncode}): {said}")
    return result.stdout


def sbatch(
    script: Path,
    *,
    after: Sequence[str] = (),
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    options: Sequence[str] = (),
) -> str:
    """Submit ``script``; with ``after``, it waits for them to complete (afterok), and is
    cancelled if one of them fails instead of pending forever. ``env`` is the
    environment sbatch runs in, which the job inherits; ``options`` are more sbatch
    options (they win over the script's ``#SBATCH`` lines)."""
    argv = ["sbatch", "--parsable", *options]
    if after:
        argv += [f"--dependency=afterok:{':'.join(after)}", "--kill-on-invalid-dep=yes"]
    out = _run([*argv, str(script)], cwd=cwd, env=env).strip()
    job_id = out.split(";")[0].strip()
    if not _JOB_ID.match(job_id):
        raise SlurmError(f"sbatch {script} printed no job id (it said {out!r})")
    return job_id


def scancel(job_ids: Sequence[str]) -> None:
    if job_ids:
        _run(["scancel", *job_ids])


def job_states(job_ids: Sequence[str]) -> dict[str, str]:
    """Each job's state (PENDING, RUNNING, COMPLETED, FAILED, …) from one query."""
    if not job_ids:
        return {}
    try:
        out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)])
    except SlurmError:
        return _squeue_states(job_ids)
    states: dict[str, str] = {}
    for line in out.splitlines():
        job_id, _, state = line.partition("|")
        if job_id in job_ids and state:
            states[job_id] = state.split()[0]  # "CANCELLED by 0" → CANCELLED
    missing = [j for j in job_ids if j not in states]
    if missing:  # sacct lags a moment behind a fresh submission
        states.update(_squeue_states(missing))
    return states


def _squeue_states(job_ids: Sequence[str]) -> dict[str, str]:
    out = _run(["squeue", "-h", "-t", "all", "-o", "%i|%T", "-j", ",".join(job_ids)])
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.partition("|")
        if job_id in job_ids:
            states[job_id] = _SQUEUE_STATES.get(state, state)
    return states


def monitor_jobs(
    job_ids: Sequence[str],
    *,
    until_done: bool = False,
    interval: float = 10.0,
    timeout: float | None = None,
    on_update: Callable[[dict[str, str]], None] | None = None,
) -> dict[str, str]:
    """The jobs' states, one sacct call per look; with ``until_done``, look every
    ``interval`` seconds until every job has finished (or ``timeout`` passes)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        states = job_states(job_ids)
        if on_update is not None:
            on_update(states)
        finished = len(states) == len(job_ids) and all(s in FINAL_STATES for s in states.values())
        if not until_done or finished:
            return states
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"jobs still running after {timeout} s: {states}")
        time.sleep(interval)
