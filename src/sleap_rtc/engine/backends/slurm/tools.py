"""Talking to SLURM: sbatch, one batched state query, scancel, as one client object.

Shared by the worker's SLURM backend and ``sleap-rtc pipeline``. Both take a
:class:`SlurmClient` (default: this machine's SLURM tools), so a test hands them
a recorded one instead of patching where the tools are imported.

Job ids come from ``sbatch --parsable``: the last line of its output that is a
job id (a site's sbatch may print notes first). When none is, the job is looked
for by its name in ``squeue`` before the submit counts as failed; an sbatch that
fails is an error that says what sbatch said. A job may wait for others with a
dependency type (``afterok``: all completed; ``afterany``: all ended;
``afternotok``: one of them failed) and be a ``singleton``; one that can never
start is cancelled (``--kill-on-invalid-dep``). States come from one ``sacct``
call for all jobs, or from ``squeue -t all`` where accounting is off;
:meth:`SlurmClient.job_details` adds the exit code, signal, reason and who
cancelled, and :func:`explain` says in words why a job ended so and what to
raise. A job that
neither knows any more (no accounting, and squeue forgets finished jobs after
MinJobAge) is ``LOST`` once it has been missing for :data:`LOST_AFTER_S`: its
outcome can't be known, and waiting for it would never end.
"""

from __future__ import annotations

import getpass
import pwd
import re
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

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
#: How a job waits for the jobs it depends on.
#: (``aftercorr``: each task of an array after the same task of the arrays it needs.)
Dependency = Literal["afterok", "afterany", "afternotok", "aftercorr"]
_DEPENDENCIES: tuple[str, ...] = get_args(Dependency)
#: SLURM's MaxArraySize when the cluster doesn't say.
DEFAULT_MAX_ARRAY_SIZE = 1001
#: Longest text from SLURM echoed in an explanation.
_ECHO_CHARS = 200


def dependency_option(
    after: Sequence[str], dependency: str = "afterok", singleton: bool = False
) -> str | None:
    """The ``--dependency=`` value for these jobs, or None when there is none.

    afterok and afterany wait for all of ``after``; afternotok for any one of them to
    fail (``?``: SLURM's "any of these"), the way a cleanup or report stage wants it;
    aftercorr makes each task of an array wait for the same task of ``after``.
    """
    if dependency not in _DEPENDENCIES:
        raise ValueError(f"dependency {dependency!r} is not one of {', '.join(_DEPENDENCIES)}")
    parts = []
    if after:
        if dependency == "afternotok":
            parts.append("?".join(f"afternotok:{job}" for job in after))
        else:
            parts.append(f"{dependency}:{':'.join(after)}")
    if singleton:
        parts.append("singleton")
    if not parts:
        return None
    if len(parts) == 2 and "?" in parts[0]:
        raise ValueError("SLURM can't mix singleton with afternotok on several jobs")
    return ",".join(parts)


@dataclass(frozen=True)
class JobInfo:
    """What SLURM says of one job's end (or of why it waits)."""

    job_id: str
    state: str
    exit_code: int | None = None
    signal: int | None = None
    #: SLURM's reason (e.g. DependencyNeverSatisfied); "" for none.
    reason: str = ""
    cancelled_by: str | None = None
    elapsed: str | None = None
    time_limit: str | None = None
    req_mem: str | None = None
    #: An array job's tasks and their states (``"0": "COMPLETED"``, ``"[2-4%2]": "PENDING"``
    #: for tasks not started yet); empty for a plain job.
    tasks: Mapping[str, str] = field(default_factory=dict)


#: The order an array's task states count in, most telling first: while any task may
#: still run the array is on its way; once all ended, a failure wins over completion.
_ARRAY_ORDER = ("RUNNING", "REQUEUED", "SUSPENDED", "PENDING")


def gather_tasks(rows: Mapping[str, JobInfo], wanted: Sequence[str]) -> dict[str, JobInfo]:
    """One JobInfo per job in ``wanted``: a plain job's row, or an array's tasks
    (``ID_N``, ``ID_[N-M%P]``) folded into one, whose state is the array's as a whole.

    An array is on its way while any task is (RUNNING before PENDING), COMPLETED when
    every task completed, and otherwise takes the end (and exit code) of its first
    task that did not complete."""
    found: dict[str, JobInfo] = {}
    tasks: dict[str, dict[str, JobInfo]] = {}
    for job_id, info in rows.items():
        head, sep, task = job_id.partition("_")
        if job_id in wanted:
            found[job_id] = info
        elif sep and head in wanted:
            tasks.setdefault(head, {})[task] = info
    for head, infos in tasks.items():
        ordered = sorted(infos.items(), key=lambda item: _task_order(item[0]))
        states = {task: info.state for task, info in ordered}
        live = [s for s in _ARRAY_ORDER if s in states.values()]
        if live:
            first = next(info for _, info in ordered if info.state == live[0])
        else:
            failed = [info for _, info in ordered if info.state != "COMPLETED"]
            first = failed[0] if failed else ordered[0][1]
        found[head] = replace(first, job_id=head, tasks=states)
    return found


def task_counts(tasks: Mapping[str, str]) -> dict[str, int]:
    """How many of an array's tasks are in each state; a row for tasks not started yet
    (``[2-4,7%2]``) counts each of them."""
    counts: dict[str, int] = {}
    for task, state in tasks.items():
        many = task.strip("[]").split("%")[0]
        n = 0
        for part in many.split(","):
            low, _, high = part.partition("-")
            try:
                n += int(high) - int(low) + 1 if high else 1
            except ValueError:
                n += 1
        counts[state] = counts.get(state, 0) + max(n, 1)
    return counts


def _task_order(task: str) -> tuple[int, str]:
    digits = re.match(r"\[?(\d+)", task)
    return (int(digits.group(1)) if digits else 1 << 30, task)


def _user(uid: str) -> str:
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, ValueError):
        return uid


def _exit(text: str) -> tuple[int | None, int | None]:
    code, _, sig = text.partition(":")
    try:
        return int(code), int(sig or 0)
    except ValueError:
        return None, None


def parse_sacct_details(text: str, wanted: Sequence[str]) -> dict[str, JobInfo]:
    """``sacct -P -o JobID,State,ExitCode,Reason,Elapsed,Timelimit,ReqMem`` lines, for
    the jobs in ``wanted``."""
    found = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 7 or not _ours(fields[0], wanted) or not fields[1]:
            continue
        job_id, state, exit_code, reason, elapsed, limit, mem = fields[:7]
        words = state.split()
        by = _user(words[2]) if len(words) >= 3 and words[1] == "by" else None
        code, sig = _exit(exit_code)
        found[job_id] = JobInfo(
            job_id=job_id,
            state=words[0],
            exit_code=code,
            signal=sig,
            reason="" if reason in ("None", "") else reason,
            cancelled_by=by,
            elapsed=elapsed or None,
            time_limit=limit or None,
            req_mem=mem or None,
        )
    return gather_tasks(found, wanted)


def parse_squeue_details(text: str, wanted: Sequence[str]) -> dict[str, JobInfo]:
    """``squeue -o '%i|%T|%r|%M|%l'`` lines, for the jobs in ``wanted``."""
    found = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 5 or not _ours(fields[0], wanted):
            continue
        job_id, state, reason, elapsed, limit = fields[:5]
        found[job_id] = JobInfo(
            job_id=job_id,
            state=_SQUEUE_STATES.get(state, state),
            reason="" if reason in ("None", "") else reason,
            elapsed=elapsed or None,
            time_limit=limit or None,
        )
    return gather_tasks(found, wanted)


def _ours(job_id: str, wanted: Sequence[str]) -> bool:
    """Whether a row is one of ``wanted``, or a task of an array among them."""
    return job_id in wanted or job_id.partition("_")[0] in wanted


def _echo(text: str) -> str:
    return text if len(text) <= _ECHO_CHARS else text[: _ECHO_CHARS - 1] + "…"


def explain(info: JobInfo, *, mem: str | None = None, time: str | None = None) -> str:
    """Why a job ended as it did (or can't start), and what to do, in one line; "" for
    a job that completed or is still on its way. ``mem``/``time``: what the stage asked
    for, when the caller knows it."""
    state, reason = info.state, info.reason
    if "Dependency" in reason and state in ("CANCELLED", "PENDING"):
        return "a job it depends on did not end as it needs (dependency never satisfied)"
    if state == "OUT_OF_MEMORY":
        asked = mem or info.req_mem
        return f"ran out of memory{f' (mem {asked})' if asked else ''}; raise the stage's slurm.mem"
    if state == "TIMEOUT":
        limit = time or info.time_limit
        after = f" after {info.elapsed}" if info.elapsed else ""
        return (
            f"hit its time limit{f' ({limit})' if limit else ''}{after}; raise the stage's "
            "slurm.time"
        )
    if state == "CANCELLED":
        return f"cancelled by {_echo(info.cancelled_by)}" if info.cancelled_by else "cancelled"
    if state in ("NODE_FAIL", "PREEMPTED", "BOOT_FAIL"):
        what = {"NODE_FAIL": "its node failed", "PREEMPTED": "it was preempted"}
        return f"{what.get(state, 'its node did not boot')}; running it again may succeed"
    if state == LOST:
        return "SLURM no longer knows this job, so its outcome can't be known"
    if state in ("FAILED", "DEADLINE", "REVOKED"):
        if info.signal:
            try:
                name = f" ({signal.Signals(info.signal).name})"
            except ValueError:
                name = ""
            return f"killed by signal {info.signal}{name}"
        if info.exit_code:
            return f"exit code {info.exit_code}"
        return _echo(reason)
    return ""


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
        dependency: Dependency = "afterok",
        singleton: bool = False,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        options: Sequence[str] = (),
    ) -> str:
        """Submit ``script``; the job id.

        With ``after``, the job waits for them as ``dependency`` says (default afterok:
        all complete), and is cancelled once that can't happen instead of pending
        forever (:func:`dependency_option`). ``singleton``: it waits until no other
        job of its name and user runs. ``env`` is the environment sbatch runs in,
        which the job inherits; ``options`` are more sbatch options (they win over
        the script's ``#SBATCH`` lines).
        """
        argv = ["sbatch", "--parsable", *options]
        waits = dependency_option(after, dependency, singleton)
        if waits is not None:
            argv += [f"--dependency={waits}", "--kill-on-invalid-dep=yes"]
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

    def max_array_size(self) -> int:
        """The cluster's MaxArraySize (an array's task ids stay below it), from
        ``scontrol show config``; SLURM's default where scontrol can't say."""
        try:
            return parse_max_array_size(_run(["scontrol", "show", "config"]))
        except SlurmError:
            return DEFAULT_MAX_ARRAY_SIZE

    def job_states(self, job_ids: Sequence[str], *, arrays: Collection[str] = ()) -> dict[str, str]:
        """Each job's state (PENDING, RUNNING, COMPLETED, FAILED, …) from one query
        (see :meth:`job_details` for ``arrays``).

        A job SLURM doesn't know (yet) is missing from the answer.
        """
        details = self.job_details(job_ids, arrays=arrays)
        return {job_id: info.state for job_id, info in details.items()}

    def job_details(
        self, job_ids: Sequence[str], *, arrays: Collection[str] = ()
    ) -> dict[str, JobInfo]:
        """Each job's state, exit code, signal, reason and who cancelled it, from one
        ``sacct`` call (``squeue`` for what it lacks, or where accounting is off).

        ``arrays``: those of ``job_ids`` that are array jobs. Accounting lags behind
        an array's tasks (for a moment it may call an array COMPLETED whose tasks
        still run), so ``squeue`` is asked about them too, and wins while it says a
        task is on its way or sacct lists no task yet."""
        if not job_ids:
            return {}
        fields = "JobID,State,ExitCode,Reason,Elapsed,Timelimit,ReqMem"
        try:
            out = _run(["sacct", "-n", "-X", "-P", "-o", fields, "-j", ",".join(job_ids)])
        except SlurmError:
            return self._squeue_details(job_ids)
        found = parse_sacct_details(out, job_ids)
        ours = [j for j in job_ids if j in arrays and j in found]
        missing = [j for j in job_ids if j not in found]
        if missing or ours:  # sacct lags a moment behind a fresh submission
            queued = self._squeue_details([*missing, *ours])
            for job_id, info in queued.items():
                known = found.get(job_id)
                if known is None or info.state not in FINAL_STATES or not known.tasks:
                    found[job_id] = info
        return found

    @staticmethod
    def _squeue_details(job_ids: Sequence[str]) -> dict[str, JobInfo]:
        query = ["squeue", "-h", "-t", "all", "-o", "%i|%T|%r|%M|%l"]
        try:
            out = _run([*query, "-j", ",".join(job_ids)])
        except SlurmError as exc:
            if "Invalid job id" not in str(exc):
                raise
            # squeue refuses the whole query when it has forgotten an id: ask for
            # this user's jobs instead, and those it still knows are there.
            out = _run([*query, "-u", getpass.getuser()])
        return parse_squeue_details(out, job_ids)


def parse_max_array_size(text: str) -> int:
    """``MaxArraySize = N`` from ``scontrol show config``; the default when it's not there."""
    found = re.search(r"^MaxArraySize\s*=\s*(\d+)", text, re.MULTILINE)
    return max(1, int(found.group(1))) if found else DEFAULT_MAX_ARRAY_SIZE


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
