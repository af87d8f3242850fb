"""Submitting a pipeline, and following and cancelling what was submitted.

``submit`` brings the scripts up to date (:mod:`sleap_rtc.pipeline.scripts`),
plans every stage (:mod:`sleap_rtc.pipeline.plan`: stages whose outputs are
current are skipped, and so are stages still queued or running from an earlier
submission; a stage whose inputs changed reruns, and so does everything that
needs it) and submits the rest: all or nothing. Every script to submit first
passes ``sbatch --test-only`` (one error names each SLURM would refuse), and an
sbatch that fails midway cancels the jobs this call had submitted. With
``chain``, a stage waits for the stages it needs with its dependency type
(``afterok``: cancelled when one fails; ``afterany``; ``afternotok``). What was
submitted is recorded in ``slurm_jobs/{job}/runs.json``, which ``status`` and
``cancel`` read. :mod:`sleap_rtc.pipeline.driver` (``--chain=poll``) instead
stays running and submits each stage once its parents ended as it needs; it
records the stages it has not submitted yet too (``WAITING``, or ``NOT
SUBMITTED`` with the reason). The record's format is in
:mod:`sleap_rtc.pipeline.record`.

Every function takes the SLURM client to use (``slurm``; default: this machine's
SLURM tools), so a test passes a recorded one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from sleap_rtc.engine.backends.slurm.tools import (
    FINAL_STATES,
    LOST,
    LOST_AFTER_S,
    Dependency,
    JobInfo,
    SlurmClient,
    SlurmError,
    explain,
    monitor_jobs,
    task_counts,
)
from sleap_rtc.pipeline.attempts import NOT_RETRIED
from sleap_rtc.pipeline.driver import Driver, Event, StageResult, drive
from sleap_rtc.pipeline.plan import Step, make_plan, outputs_current
from sleap_rtc.pipeline.record import (
    NOT_SUBMITTED,
    WAITING,
    array_jobs,
    driver_alive,
    entry_jobs,
    load_record,
    record_path,
    refuse_if_driven,
    write_record,
)
from sleap_rtc.pipeline.sbatch import Layout
from sleap_rtc.pipeline.scripts import current_keys, generate
from sleap_rtc.pipeline.spec import Pipeline, Stage, load_job
from sleap_rtc.pipeline.throttle import Backoff, Throttle

Action = Literal["submitted", "done", "queued"]


@dataclass(frozen=True)
class StageRun:
    #: The dataset's name (``_pipeline`` for a stage of the whole job).
    dataset: str
    stage: str
    action: Action
    job_id: str | None
    after: list[str]
    #: Why it was submitted, skipped or left queued.
    note: str = ""


def submit(
    pipeline: Pipeline,
    layout: Layout,
    *,
    chain: bool = False,
    force: bool = False,
    slurm: SlurmClient | None = None,
    poll_interval: float = 5.0,
) -> list[StageRun]:
    """Submit every stage that needs to run; see the module's description.

    With a ``throttle`` in the job file, sbatch calls are spaced, and while
    ``max_queued`` of this pipeline's jobs are pending or running it waits (looking
    every ``poll_interval`` seconds, backing off while nothing changes) before it
    submits more: parents always go in before the stages that wait for them."""
    slurm = slurm or SlurmClient()
    written = generate(pipeline, layout, slurm=slurm)
    path = record_path(pipeline, layout)
    record = load_record(path)
    refuse_if_driven(path, record)
    steps = make_plan(pipeline, written, layout, record, slurm, force=force)
    todo = [step for step in steps if step.action == "run"]
    planned = {step.stage.key: step for step in steps}
    _check_scripts(slurm, [step.written.script for step in todo], layout)
    ids = {step.stage.key: step.job_id for step in steps if step.action == "queued"}
    runs = [
        StageRun(
            step.stage.group,
            step.stage.name,
            "queued" if step.action == "queued" else "done",
            step.job_id if step.action == "queued" else None,
            [],
            step.reason,
        )
        for step in steps
        if step.action != "run"
    ]
    submitted: list[str] = []
    throttle = Throttle(pipeline.throttle)
    queued = [str(job) for job in ids.values() if job]
    try:
        for step in todo:
            stage = step.stage
            if throttle.room(len(queued)) == 0:
                queued = _wait_for_room(slurm, queued, throttle, poll_interval)
            throttle.wait_turn()
            after = [str(ids[p]) for p in stage.parents if ids.get(p)] if chain else []
            dependency = _dependency(step, planned)
            attempts, gate = _submit_attempts(slurm, step, after, layout, submitted, dependency)
            queued += [*attempts, *([gate] if gate else [])]
            job_id = attempts[0]
            ids[stage.key] = gate or job_id  # what the stages that need this one wait for
            record[stage.key] = {
                "job_id": job_id,
                "submitted_at": time.time(),
                "after": after,
                "dependency": dependency,
                "inputs_key": step.written.key,
            }
            if gate:
                record[stage.key]["attempts"] = [{"job_id": a} for a in attempts]
                record[stage.key]["gate"] = gate
            write_record(path, record)  # as we go: nothing lost
            runs.append(StageRun(stage.group, stage.name, "submitted", job_id, after, step.reason))
    except SlurmError as exc:
        _withdraw(slurm, submitted, record, path)
        undone = f"; cancelled the {len(submitted)} job(s) it had submitted" if submitted else ""
        raise SlurmError(f"{exc}{undone} (nothing of this run is left queued)") from None
    return _in_pipeline_order(pipeline, runs)


def _dependency(step: Step, planned: Mapping[str, Step]) -> Dependency:
    """How a stage waits for its parents: as its job file says, except that aftercorr
    (task N after task N) holds only while the parent's new job has every task this
    one runs; otherwise it waits for the whole parent (afterok)."""
    stage = step.stage
    if stage.dependency != "aftercorr":
        return stage.dependency
    for parent in (planned[p] for p in stage.parents if p in planned):
        if parent.action == "skip":
            continue
        if parent.action == "queued":  # a job from before: its tasks aren't known here
            return "afterok"
        if parent.tasks is not None and (
            step.tasks is None or not set(step.tasks) <= set(parent.tasks)
        ):
            return "afterok"
    return "aftercorr"


def _submit_attempts(
    slurm: SlurmClient,
    step: Step,
    after: list[str],
    layout: Layout,
    submitted: list[str],
    dependency: Dependency,
) -> tuple[list[str], str | None]:
    """Submit a stage: its job, or with ``retries`` every attempt at once, each after the
    one before it fails (afternotok, with that attempt's resources), and the job that
    stands for all of them (:func:`~sleap_rtc.pipeline.attempts.gate_script`). The ids
    of the attempts and of that job; each id goes into ``submitted`` as it is made."""
    written, stage, tasks = step.written, step.stage, step.options()

    def sbatch(script: Path, **kw: Any) -> str:
        job_id = slurm.sbatch(script, cwd=layout.scripts.parent, **kw)
        submitted.append(job_id)
        return job_id

    if not stage.retries:
        first = sbatch(
            written.script,
            after=after,
            dependency=dependency,
            singleton=stage.singleton,
            options=tasks,
        )
        return [first], None
    attempts = [
        sbatch(
            written.script,
            after=after,
            dependency=dependency,
            singleton=stage.singleton,
            options=[*tasks, "--export=ALL,SLEAP_RTC_ATTEMPT=1"],
        )
    ]
    for attempt in range(2, stage.attempts + 1):
        previous = attempts[-1]
        env = f"--export=ALL,SLEAP_RTC_ATTEMPT={attempt},SLEAP_RTC_PREVIOUS_JOB={previous}"
        options = [*tasks, *stage.attempt_options(attempt), env]
        attempts.append(
            sbatch(written.script, after=[previous], dependency="afternotok", options=options)
        )
    everyone = f"--export=ALL,SLEAP_RTC_ATTEMPTS={':'.join(attempts)}"
    gate = sbatch(written.gate, after=attempts, dependency="afterany", options=[everyone])
    return attempts, gate


def _wait_for_room(
    slurm: SlurmClient, queued: list[str], throttle: Throttle, interval: float
) -> list[str]:
    """Wait until fewer than ``max_queued`` of ``queued`` are pending or running; those
    that still are (one state query per look)."""
    backoff = Backoff(interval)
    wait = interval
    while True:
        throttle.sleep(wait)
        states = slurm.job_states(queued)
        left = [job for job in queued if states.get(job) not in FINAL_STATES]
        if throttle.room(len(left)) != 0:
            return left
        wait = backoff.next(changed=len(left) != len(queued))
        queued = left


def plan(
    pipeline: Pipeline, layout: Layout, *, force: bool = False, slurm: SlurmClient | None = None
) -> list[Step]:
    """What :func:`submit` would do with each stage, and why; nothing is written or
    submitted (``pipeline run --dry-run``)."""
    slurm = slurm or SlurmClient()
    written = generate(pipeline, layout, dry_run=True, slurm=slurm)
    record = load_record(record_path(pipeline, layout))
    return make_plan(pipeline, written, layout, record, slurm, force=force)


def _check_scripts(slurm: SlurmClient, scripts: list[Path], layout: Layout) -> None:
    """``sbatch --test-only`` on every script about to be submitted; one error naming
    each that SLURM would refuse, before anything is submitted."""
    refused = []
    for script in scripts:
        said = slurm.test_only(script, cwd=layout.scripts.parent)
        if said is not None:
            refused.append(f"{script.relative_to(layout.scripts)}: {said}")
    if refused:
        raise SlurmError(
            "SLURM would refuse these scripts, so nothing was submitted:\n  " + "\n  ".join(refused)
        )


def _withdraw(
    slurm: SlurmClient, job_ids: list[str], record: dict[str, dict[str, object]], path: Path
) -> None:
    """Cancel the jobs a failed submission made, and forget them."""
    if not job_ids:
        return
    with contextlib.suppress(SlurmError):
        slurm.scancel(job_ids)
    for key in [k for k, v in record.items() if v.get("job_id") in job_ids]:
        del record[key]
    write_record(path, record)


def _in_pipeline_order(pipeline: Pipeline, runs: list[StageRun]) -> list[StageRun]:
    order = {(s.group, s.name): i for i, s in enumerate(pipeline.stages)}
    return sorted(runs, key=lambda r: order.get((r.dataset, r.stage), len(order)))


@dataclass(frozen=True)
class StageStatus:
    dataset: str
    stage: str
    job_id: str | None
    state: str
    #: Why it ended as it did (FAILED: exit code or signal; OUT_OF_MEMORY, TIMEOUT: what
    #: to raise; CANCELLED: by whom, or a dependency never satisfied; LOST), or why a
    #: stage with no job is WAITING or NOT SUBMITTED.
    reason: str = ""
    #: Its job's log (an array's: of its first task that did not complete).
    log: str | None = None
    #: An array stage's tasks and their states (``"0": "COMPLETED"``).
    tasks: dict[str, str] = field(default_factory=dict)


def _unsubmitted(
    stage: Stage, layout: Layout, entry: Mapping[str, object], current: bool
) -> tuple[str, str]:
    """State and reason of a stage that has no job in the record (``current``: its
    outputs are)."""
    recorded = entry.get("state")
    alive = driver_alive(entry)
    if recorded == WAITING and alive is not False:
        waits = entry.get("waits_for")
        parents = ", ".join(str(w) for w in waits) if isinstance(waits, list) else "its parents"
        driver = entry.get("driver")
        who = ""
        if isinstance(driver, dict):
            where = "" if alive else f" on {driver.get('host')}"
            who = f" (driver pid {driver.get('pid')}{where})"
        return WAITING, f"submitted when {parents} complete{who}"
    if current:
        return "DONE", ""
    if recorded == WAITING:
        return NOT_SUBMITTED, "its driver is gone; rerun to resume"
    if recorded == NOT_SUBMITTED:
        return NOT_SUBMITTED, str(entry.get("reason") or "")
    return NOT_SUBMITTED, ""


def status(
    pipeline: Pipeline, layout: Layout, *, slurm: SlurmClient | None = None
) -> list[StageStatus]:
    """Every stage with its SLURM state, from one query; a stage with no job is DONE,
    WAITING (for a driver) or NOT SUBMITTED, with the reason where one is recorded."""
    record = load_record(record_path(pipeline, layout))
    wanted = [job for entry in record.values() for job in entry_jobs(entry)]
    arrays = array_jobs(record, [s.key for s in pipeline.stages if s.files])
    details = (slurm or SlurmClient()).job_details(wanted, arrays=arrays)
    keyed = current_keys(pipeline, layout)
    found = []
    ended: dict[str, tuple[str, str | None]] = {}
    for stage in pipeline.stages:
        entry = record.get(stage.key, {})
        attempts = [job for job in entry_jobs(entry) if job != entry.get("gate")]
        number, job_id = _current_attempt(attempts, details)
        reason, log, tasks = "", None, {}
        if job_id is not None:
            log = str(layout.log(stage, job_id))
            info = details.get(job_id)
            state = info.state if info is not None else "UNKNOWN"
            if info is not None:
                asked = {"mem": stage.resources.mem, "time": stage.resources.time}
                asked.update(stage.retry_resources.for_attempt(number))
                reason = explain(info, mem=asked["mem"], time=asked["time"])
            if stage.retries:
                said = f"attempt {number} of {stage.attempts}"
                reason = f"{said}: {reason}" if reason else said
            submitted = record.get(stage.key, {}).get("submitted_at")
            old = isinstance(submitted, int | float) and time.time() - submitted >= LOST_AFTER_S
            if state == "UNKNOWN" and old:
                state, reason = LOST, lost_reason(job_id, layout)
            if state == "CANCELLED" and info is not None and info.cancelled_by is None:
                # SLURM may cancel a job whose dependency failed before it notes why.
                reason = _unmet_dependency(stage, ended) or reason
            if info is not None and info.tasks:
                tasks = dict(info.tasks)
                counts = ", ".join(f"{n} {s}" for s, n in task_counts(tasks).items())
                reason = f"tasks: {counts}" + (f"; {reason}" if reason else "")
                odd = [t for t, s in tasks.items() if s != "COMPLETED" and t.isdigit()]
                log = str(layout.log(stage, job_id, odd[0] if odd else "*"))
        else:
            current, _, _ = outputs_current(stage, *keyed[stage.key], layout)
            state, reason = _unsubmitted(stage, layout, entry, current)
        ended[stage.key] = (state, job_id)
        found.append(StageStatus(stage.group, stage.name, job_id, state, reason, log, tasks))
    return found


def _unmet_dependency(stage: Stage, ended: Mapping[str, tuple[str, str | None]]) -> str:
    """The parents whose end kept ``stage``'s dependency from ever being met, in words;
    "" when none did (or SLURM never waited on them)."""
    parents = [(p, *ended[p]) for p in stage.parents if p in ended and ended[p][1] is not None]
    if not parents or any(state not in FINAL_STATES for _, state, _ in parents):
        return ""
    if stage.dependency == "afterok":
        unmet = [(p, state, job) for p, state, job in parents if state != "COMPLETED"][:1]
    elif stage.dependency == "afternotok":  # waits for any of them to fail
        unmet = parents if all(state == "COMPLETED" for _, state, _ in parents) else []
    else:
        unmet = []
    if not unmet:
        return ""
    said = ", ".join(f"{p} {state} (job {job})" for p, state, job in unmet)
    return f"a job it depends on did not end as it needs: {said} (dependency never satisfied)"


def _current_attempt(attempts: list[str], details: Mapping[str, JobInfo]) -> tuple[int, str | None]:
    """The attempt that tells how a stage stands (1 for the first) and its job: the one
    that completed, else one still on its way, else the last that ran."""
    if not attempts:
        return 1, None
    states = [details[job].state if job in details else "UNKNOWN" for job in attempts]
    for wanted in ("COMPLETED", None):
        for number, (job, state) in enumerate(zip(attempts, states, strict=True), start=1):
            if state == wanted or (wanted is None and state not in FINAL_STATES):
                return number, job
    ran = [
        (number, job)
        for number, job in enumerate(attempts, start=1)
        if job in details
        and details[job].exit_code != NOT_RETRIED
        and "Dependency" not in details[job].reason
    ]
    return ran[-1] if ran else (len(attempts), attempts[-1])


def lost_reason(job_id: str, layout: Layout) -> str:
    """Why a stage's job is LOST, and where to look."""
    return (
        f"SLURM no longer knows job {job_id} (no accounting, and squeue forgets finished "
        f"jobs after MinJobAge), so its outcome is unknown; see its log under "
        f"{layout.logs} or rerun the pipeline"
    )


def cancel(pipeline: Pipeline, layout: Layout, *, slurm: SlurmClient | None = None) -> list[str]:
    """Cancel every job of this pipeline that may still run; their ids."""
    slurm = slurm or SlurmClient()
    record = load_record(record_path(pipeline, layout))
    jobs = [job for entry in record.values() for job in entry_jobs(entry)]
    arrays = array_jobs(record, [s.key for s in pipeline.stages if s.files])
    states = slurm.job_states(jobs, arrays=arrays)
    ids = [job for job in jobs if job in states and states[job] not in FINAL_STATES]
    slurm.scancel(ids)
    return ids


def as_dicts(
    items: list[StageRun] | list[StageStatus] | list[StageResult],
) -> list[dict[str, object]]:
    return [asdict(item) for item in items]


class PipelineRun:
    """One job file's run, as an object: generate, submit, status, cancel, monitor.

    >>> run = PipelineRun("jobs/topdown.json", output_dir="runs")   # doctest: +SKIP
    >>> run.submit(chain=True)                                       # doctest: +SKIP
    >>> run.monitor(until_done=True)                                 # doctest: +SKIP

    Or stay and submit each stage when its parents completed (no SLURM dependencies):

    >>> results = run.drive(interval=30)                             # doctest: +SKIP
    """

    def __init__(
        self,
        job_file: str | Path,
        *,
        output_dir: str | Path = ".",
        experiment_root: str | Path | None = None,
        slurm: SlurmClient | None = None,
    ) -> None:
        self.pipeline = load_job(job_file)
        root = Path(experiment_root) if experiment_root else None
        self.layout = Layout.under(Path(output_dir), root)
        #: The SLURM tools every call submits, queries and cancels with.
        self.slurm = slurm or SlurmClient()

    def generate(self) -> list[Path]:
        """Bring every stage's script up to date; their paths."""
        return [w.script for w in generate(self.pipeline, self.layout, slurm=self.slurm)]

    def plan(self, *, force: bool = False) -> list[Step]:
        """What :meth:`submit` would do with each stage, and why; changes nothing."""
        return plan(self.pipeline, self.layout, force=force, slurm=self.slurm)

    def submit(self, *, chain: bool = False, force: bool = False) -> list[StageRun]:
        """Submit and return; with ``chain``, SLURM orders the stages (afterok)."""
        return submit(self.pipeline, self.layout, chain=chain, force=force, slurm=self.slurm)

    def drive(
        self,
        *,
        force: bool = False,
        interval: float = 10.0,
        on_event: Callable[[Event], None] | None = None,
        stop: threading.Event | None = None,
        cancel_on_exit: bool = False,
    ) -> list[StageResult]:
        """Submit each stage once its parents completed, following the jobs until none is
        left to submit or follow (``--chain=poll``); each stage's outcome.

        It returns early when ``stop`` is set, leaving the submitted jobs running (a
        second ``drive`` takes them up again). With ``cancel_on_exit``, the jobs still
        queued or running are cancelled when it stops early or raises (Ctrl-C included).
        See :mod:`sleap_rtc.pipeline.driver`.
        """
        driver = Driver(
            self.pipeline,
            self.layout,
            force=force,
            interval=interval,
            on_event=on_event,
            slurm=self.slurm,
        )
        drive(driver, stop=stop, cancel_on_exit=cancel_on_exit)
        return driver.results()

    def status(self) -> list[StageStatus]:
        return status(self.pipeline, self.layout, slurm=self.slurm)

    def cancel(self) -> list[str]:
        return cancel(self.pipeline, self.layout, slurm=self.slurm)

    def job_ids(self) -> list[str]:
        record = load_record(record_path(self.pipeline, self.layout))
        return [job for entry in record.values() for job in entry_jobs(entry)]

    def monitor(
        self, *, until_done: bool = False, interval: float = 10.0, timeout: float | None = None
    ) -> dict[str, str]:
        """The submitted jobs' states; see
        :func:`~sleap_rtc.engine.backends.slurm.tools.monitor_jobs`."""
        return monitor_jobs(
            self.job_ids(),
            until_done=until_done,
            interval=interval,
            timeout=timeout,
            slurm=self.slurm,
        )
