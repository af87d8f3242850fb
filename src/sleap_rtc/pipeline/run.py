"""Submitting a pipeline, and following and cancelling what was submitted.

``submit`` brings the scripts up to date (:mod:`sleap_rtc.pipeline.scripts`),
plans every stage (:mod:`sleap_rtc.pipeline.plan`: stages whose outputs are
current are skipped, and so are stages still queued or running from an earlier
submission; a stage whose inputs changed reruns, and so does everything that
needs it) and submits the rest: all or nothing. Every script to submit first
passes ``sbatch --test-only`` (one error names each SLURM would refuse), and an
sbatch that fails midway cancels the jobs this call had submitted. With
``chain``, a stage waits for the stages it needs with its dependency type
(``afterok``: cancelled when one fails; ``afterany``; ``afternotok``; ``aftercorr``). What was
submitted is recorded in ``slurm_jobs/{job}/runs.json``, which ``status``
(:mod:`sleap_rtc.pipeline.status`) and ``cancel`` read. :mod:`sleap_rtc.pipeline.driver`
(``--chain=poll``) instead stays running and submits each stage once its parents
ended as it needs; it records the stages it has not submitted yet too
(``WAITING``, or ``NOT SUBMITTED`` with the reason). The record's format is in
:mod:`sleap_rtc.pipeline.record`.

Every function takes the SLURM client to use (``slurm``; default: this machine's
SLURM tools), so a test passes a recorded one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from sleap_rtc.engine.backends.slurm.tools import (
    FINAL_STATES,
    Dependency,
    SlurmClient,
    SlurmError,
    monitor_jobs,
)
from sleap_rtc.pipeline.driver import Driver, Event, StageResult, drive
from sleap_rtc.pipeline.plan import Step, make_plan
from sleap_rtc.pipeline.record import (
    array_jobs,
    entry_jobs,
    load_record,
    record_path,
    refuse_if_driven,
    write_record,
)
from sleap_rtc.pipeline.sbatch import Layout
from sleap_rtc.pipeline.scripts import generate
from sleap_rtc.pipeline.spec import Pipeline, load_job
from sleap_rtc.pipeline.status import StageStatus, status
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
