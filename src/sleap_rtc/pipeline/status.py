"""How each stage of a submitted pipeline stands, from one state query for all its jobs.

A stage with a job shows SLURM's state and why it ended so (exit code or signal, the
resource to raise, who cancelled it, the parent whose failure cancelled it), its log,
which attempt it is, and an array's tasks; a job SLURM no longer knows is ``LOST``
after a grace period. A stage without one is ``DONE`` (its outputs are current),
``WAITING`` for a driver, or ``NOT SUBMITTED`` with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from sleap_rtc.engine.backends.slurm.tools import (
    FINAL_STATES,
    LOST,
    LOST_AFTER_S,
    JobInfo,
    SlurmClient,
    explain,
    task_counts,
)
from sleap_rtc.pipeline.attempts import NOT_RETRIED
from sleap_rtc.pipeline.plan import outputs_current
from sleap_rtc.pipeline.record import (
    NOT_SUBMITTED,
    WAITING,
    array_jobs,
    driver_alive,
    entry_jobs,
    load_record,
    record_path,
)
from sleap_rtc.pipeline.sbatch import Layout
from sleap_rtc.pipeline.scripts import current_keys
from sleap_rtc.pipeline.spec import Pipeline, Stage


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
