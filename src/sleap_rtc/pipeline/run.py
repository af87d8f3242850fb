"""Submitting a pipeline, and following and cancelling what was submitted.

``submit`` writes the scripts that are missing, skips stages whose outputs are
already there (a training stage with a manifest that checks out, a track stage
with its predictions) and stages still queued or running from an earlier
submission, and submits the rest: all or nothing. Every script to submit first
passes ``sbatch --test-only`` (one error names each SLURM would refuse), and an
sbatch that fails midway cancels the jobs this call had submitted. With
``chain``, a stage waits for the stages it needs (afterok, and is cancelled when
one fails). What was submitted is
recorded in ``slurm_jobs/{job}.runs.json``, which ``status`` and ``cancel`` read.
:mod:`sleap_rtc.pipeline.driver` (``--chain=poll``) instead stays running and
submits each stage once its parents completed; it records the stages it has not
submitted yet too (``WAITING``, or ``NOT SUBMITTED`` with the reason). The
record's format is in :mod:`sleap_rtc.pipeline.record`.

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
from typing import Literal

from sleap_rtc.engine.backends.slurm.tools import (
    FINAL_STATES,
    LOST,
    LOST_AFTER_S,
    SlurmClient,
    SlurmError,
    monitor_jobs,
)
from sleap_rtc.pipeline.driver import Driver, Event, StageResult, drive
from sleap_rtc.pipeline.record import (
    NOT_SUBMITTED,
    WAITING,
    driver_alive,
    load_record,
    record_path,
    refuse_if_driven,
    stage_done,
    write_record,
)
from sleap_rtc.pipeline.sbatch import Layout, generate
from sleap_rtc.pipeline.spec import Pipeline, Stage, load_job

Action = Literal["submitted", "done", "queued"]


@dataclass(frozen=True)
class StageRun:
    dataset: str
    stage: str
    action: Action
    job_id: str | None
    after: list[str]
    note: str = ""


def submit(
    pipeline: Pipeline,
    layout: Layout,
    *,
    chain: bool = False,
    force: bool = False,
    slurm: SlurmClient | None = None,
) -> list[StageRun]:
    """Submit every stage that needs to run; see the module's description."""
    slurm = slurm or SlurmClient()
    scripts = {w.stage.key: w.script for w in generate(pipeline, layout)}
    path = record_path(pipeline, layout)
    record = load_record(path)
    refuse_if_driven(path, record)
    earlier = {k: str(v["job_id"]) for k, v in record.items() if v.get("job_id")}
    live = {
        job_id: state
        for job_id, state in slurm.job_states(list(earlier.values())).items()
        if state not in FINAL_STATES
    }
    plan: list[Stage] = []  # the stages to submit, in order
    runs: list[StageRun] = []
    for dataset in pipeline.datasets:
        for stage in pipeline.for_dataset(dataset.name):
            previous = earlier.get(stage.key)
            if previous in live:
                note = f"already {live[previous].lower()} as job {previous}"
                runs.append(StageRun(dataset.name, stage.name, "queued", previous, [], note))
                continue
            done = None if force else stage_done(stage, layout)
            if done:
                runs.append(StageRun(dataset.name, stage.name, "done", None, [], done))
                continue
            plan.append(stage)
    _check_scripts(slurm, [scripts[stage.key] for stage in plan], layout)
    ids = {(r.dataset, r.stage): r.job_id for r in runs if r.action == "queued" and r.job_id}
    submitted: list[str] = []
    try:
        for stage in plan:
            mine = {name: i for (d, name), i in ids.items() if d == stage.dataset.name and i}
            after = [mine[name] for name in stage.after if name in mine] if chain else []
            job_id = slurm.sbatch(scripts[stage.key], after=after, cwd=layout.scripts.parent)
            submitted.append(job_id)
            ids[(stage.dataset.name, stage.name)] = job_id
            record[stage.key] = {"job_id": job_id, "submitted_at": time.time(), "after": after}
            write_record(path, record)  # as we go: nothing lost
            runs.append(StageRun(stage.dataset.name, stage.name, "submitted", job_id, after))
    except SlurmError as exc:
        _withdraw(slurm, submitted, record, path)
        undone = f"; cancelled the {len(submitted)} job(s) it had submitted" if submitted else ""
        raise SlurmError(f"{exc}{undone} (nothing of this run is left queued)") from None
    return _in_pipeline_order(pipeline, runs)


def _check_scripts(slurm: SlurmClient, scripts: list[Path], layout: Layout) -> None:
    """``sbatch --test-only`` on every script about to be submitted; one error naming
    each that SLURM would refuse, before anything is submitted."""
    refused = []
    for script in scripts:
        said = slurm.test_only(script, cwd=layout.scripts.parent)
        if said is not None:
            refused.append(f"{script.name}: {said}")
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
    order = {(s.dataset.name, s.name): i for i, s in enumerate(pipeline.stages)}
    return sorted(runs, key=lambda r: order.get((r.dataset, r.stage), len(order)))


@dataclass(frozen=True)
class StageStatus:
    dataset: str
    stage: str
    job_id: str | None
    state: str
    #: Why a stage with no job is WAITING or NOT SUBMITTED, when the record says.
    reason: str = ""


def _unsubmitted(stage: Stage, layout: Layout, entry: Mapping[str, object]) -> tuple[str, str]:
    """State and reason of a stage that has no job in the record."""
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
    if stage_done(stage, layout):
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
    ids = {k: str(v["job_id"]) for k, v in record.items() if v.get("job_id")}
    states = (slurm or SlurmClient()).job_states(list(ids.values()))
    found = []
    for stage in pipeline.stages:
        job_id = ids.get(stage.key)
        reason = ""
        if job_id is not None:
            state = states.get(job_id, "UNKNOWN")
            submitted = record.get(stage.key, {}).get("submitted_at")
            old = isinstance(submitted, int | float) and time.time() - submitted >= LOST_AFTER_S
            if state == "UNKNOWN" and old:
                state, reason = LOST, lost_reason(job_id, layout)
        else:
            entry = record.get(stage.key)
            state, reason = _unsubmitted(stage, layout, entry if isinstance(entry, dict) else {})
        found.append(StageStatus(stage.dataset.name, stage.name, job_id, state, reason))
    return found


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
    found = status(pipeline, layout, slurm=slurm)
    ids = [s.job_id for s in found if s.job_id and s.state not in FINAL_STATES]
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
        """Write the missing scripts; every stage's script path."""
        return [w.script for w in generate(self.pipeline, self.layout)]

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
        return [str(v["job_id"]) for v in record.values() if v.get("job_id")]

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
