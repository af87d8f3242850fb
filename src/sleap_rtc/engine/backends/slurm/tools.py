"""Talking to SLURM: sbatch, one batched state query, scancel, as one client object.

Shared by the worker's SLURM backend and ``sleap-rtc pipeline``. Both take a
:class:`SlurmClient` (default: this machine's SLURM tools), so a test hands them
a recorded one instead of patching where the tools are imported.

Job ids come from ``sbatch --parsable``: the last line of its output that is a
job id (a site's sbatch may print notes first). When none is, the job is looked
for by its name in ``squeue`` before the submit counts as failed; an sbatch that
fails is an error that says what sbatch said. States come from one ``sacct`` call
for all jobs, or from ``squeue -t all`` where accounting is off. A job that
neither knows any more (no accounting, and squeue forgets finished jobs after
MinJobAge) is ``LOST`` once it has been missing for :data:`LOST_AFTER_S`: its
outcome can't be known, and waiting for it would never end.
"""

from __future__ import annotations

import getpass
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from sleap_rtc.engine.backend import BackendError

_JOB_ID = re.compile(r"^\d+(_\d+)?$")
_JOB_NAME = re.compile(r"^#SBATCH\s+(?:--job-name[= ]|-J\s*)(\S+)", re.MULTILINE)
#: A job SLURM no longer knows anything about (see the module's description).
LOST = "LOST"
#: How long a job may be missing from SLURM's answers before it is LOST.
LOST_AFTER_S = 300.0
#: States after which a job never runs again.
FINAL_STATES = frozenset(
    {
        LOST,
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


class SlurmError(BackendError):
    """A SLURM tool is missing, failed, or answered something unreadable; says which."""


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


class SlurmClient:
    """The SLURM operations sleap-rtc needs, run with this machine's command-line tools.

    Subclass it (or pass any object with these methods) to record or fake a cluster.
    Every method raises :class:`SlurmError` with what the tool said when it fails.
    """

    def sbatch(
        self,
        script: Path,
        *,
        after: Sequence[str] = (),
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        options: Sequence[str] = (),
    ) -> str:
        """Submit ``script``; the job id.

        With ``after``, the job waits for them to complete (afterok), and is cancelled
        if one of them fails instead of pending forever. ``env`` is the environment
        sbatch runs in, which the job inherits; ``options`` are more sbatch options
        (they win over the script's ``#SBATCH`` lines).
        """
        argv = ["sbatch", "--parsable", *options]
        if after:
            argv += [f"--dependency=afterok:{':'.join(after)}", "--kill-on-invalid-dep=yes"]
        out = _run([*argv, str(script)], cwd=cwd, env=env).strip()
        job_id = parse_job_id(out) or self._submitted_by_name(script)
        if job_id is None:
            raise SlurmError(
                f"sbatch {script} printed no job id and squeue shows no job of its name "
                f"(it said {out[-500:]!r})"
            )
        return job_id

    @staticmethod
    def _submitted_by_name(script: Path) -> str | None:
        """The newest job of this user named as ``script``'s ``#SBATCH --job-name``."""
        try:
            found = _JOB_NAME.search(script.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return None
        if found is None:
            return None
        try:
            out = _run(["squeue", "-h", "-u", getpass.getuser(), "-n", found.group(1), "-o", "%i"])
        except SlurmError:
            return None
        ids = [line.strip() for line in out.splitlines() if _JOB_ID.match(line.strip())]
        return max(ids, key=_job_number) if ids else None

    def test_only(self, script: Path, *, cwd: Path | None = None) -> str | None:
        """What ``sbatch --test-only`` says is wrong with ``script`` (resources the
        cluster doesn't have, a partition that isn't there), or None if it would queue.
        Nothing is submitted."""
        try:
            _run(["sbatch", "--test-only", str(script)], cwd=cwd)
        except SlurmError as exc:
            return str(exc)
        return None

    def scancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            _run(["scancel", *job_ids])

    def job_states(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Each job's state (PENDING, RUNNING, COMPLETED, FAILED, …) from one query.

        A job SLURM doesn't know (yet) is missing from the answer.
        """
        if not job_ids:
            return {}
        try:
            out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)])
        except SlurmError:
            return self._squeue_states(job_ids)
        states: dict[str, str] = {}
        for line in out.splitlines():
            job_id, _, state = line.partition("|")
            if job_id in job_ids and state:
                states[job_id] = state.split()[0]  # "CANCELLED by 0" → CANCELLED
        missing = [j for j in job_ids if j not in states]
        if missing:  # sacct lags a moment behind a fresh submission
            states.update(self._squeue_states(missing))
        return states

    @staticmethod
    def _squeue_states(job_ids: Sequence[str]) -> dict[str, str]:
        query = ["squeue", "-h", "-t", "all", "-o", "%i|%T"]
        try:
            out = _run([*query, "-j", ",".join(job_ids)])
        except SlurmError as exc:
            if "Invalid job id" not in str(exc):
                raise
            # squeue refuses the whole query when it has forgotten an id: ask for
            # this user's jobs instead, and those it still knows are there.
            out = _run([*query, "-u", getpass.getuser()])
        states = {}
        for line in out.splitlines():
            job_id, _, state = line.partition("|")
            if job_id in job_ids:
                states[job_id] = _SQUEUE_STATES.get(state, state)
        return states


def parse_job_id(out: str) -> str | None:
    """The job id in ``sbatch --parsable``'s output: its last line that is one."""
    for line in reversed(out.splitlines()):
        candidate = line.strip().split(";")[0].strip()  # "123;cluster" on multi-cluster
        if _JOB_ID.match(candidate):
            return candidate
    return None


def _job_number(job_id: str) -> tuple[int, int]:
    head, _, task = job_id.partition("_")
    return int(head), int(task or 0)


def monitor_jobs(
    job_ids: Sequence[str],
    *,
    until_done: bool = False,
    interval: float = 10.0,
    timeout: float | None = None,
    on_update: Callable[[dict[str, str]], None] | None = None,
    slurm: SlurmClient | None = None,
    lost_after_s: float = LOST_AFTER_S,
) -> dict[str, str]:
    """The jobs' states, one sacct call per look; with ``until_done``, look every
    ``interval`` seconds until every job has finished (or ``timeout`` passes). A job
    missing from every answer for ``lost_after_s`` is ``LOST``, which is final."""
    client = slurm or SlurmClient()
    deadline = None if timeout is None else time.monotonic() + timeout
    missing_since: dict[str, float] = {}
    while True:
        states = client.job_states(job_ids)
        now = time.monotonic()
        for job_id in job_ids:
            if job_id in states:
                missing_since.pop(job_id, None)
            elif now - missing_since.setdefault(job_id, now) >= lost_after_s:
                states[job_id] = LOST
        if on_update is not None:
            on_update(states)
        finished = len(states) == len(job_ids) and all(s in FINAL_STATES for s in states.values())
        if not until_done or finished:
            return states
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"jobs still running after {timeout} s: {states}")
        time.sleep(interval)
