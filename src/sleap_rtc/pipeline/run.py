"""Submitting a pipeline, and following and cancelling what was submitted.

``submit`` writes the scripts that are missing, skips stages whose outputs are
already there (a training stage with a manifest that checks out, a track stage
with its predictions) and stages still queued or running from an earlier
submission, and submits the rest. With ``chain``, a stage waits for the stages
it needs (afterok, and is cancelled when one fails). What was submitted is
recorded in ``slurm_jobs/{job}.runs.json``, which ``status`` and ``cancel`` read.
:mod:`sleap_rtc.pipeline.driver` (``--chain=poll``) instead stays running and
submits each stage once its parents completed; it records the stages it has not
submitted yet too (``WAITING``, or ``NOT SUBMITTED`` with the reason).

The record maps each stage's key (``{job}_{dataset}_{stage}``) to an entry::

    {"job_id": "101", "submitted_at": 1700000000.0, "after": ["99", "100"]}
    {"job_id": null, "state": "WAITING", "waits_for": ["centroid", "centered_instance"],
     "driver": {"host": "login1", "pid": 4242}, "updated_at": 1700000000.0}
    {"job_id": null, "state": "NOT SUBMITTED", "reason": "parent centroid FAILED (job 99)",
     "blocked_by": {"stage": "centroid", "job_id": "99", "state": "FAILED"}, ...}
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sleap_rtc.engine.slurm_tools import FINAL_STATES, job_states, sbatch, scancel
from sleap_rtc.pipeline.manifest import MANIFEST_NAME, verify_manifest
from sleap_rtc.pipeline.sbatch import PREDICTIONS, Layout, generate
from sleap_rtc.pipeline.spec import Pipeline, Stage

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    from sleap_rtc.pipeline.driver import Event, StageResult

Action = Literal["submitted", "done", "queued"]
#: States of a stage with no job: the driver submits it when its parents complete;
#: it was not submitted (a parent did not complete, or the driver stopped first).
WAITING = "WAITING"
NOT_SUBMITTED = "NOT SUBMITTED"


@dataclass(frozen=True)
class StageRun:
    dataset: str
    stage: str
    action: Action
    job_id: str | None
    after: list[str]
    note: str = ""


def record_path(pipeline: Pipeline, layout: Layout) -> Path:
    return layout.scripts / f"{pipeline.name}.runs.json"


def load_record(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_record(path: Path, record: Mapping[str, object]) -> None:
    """Replace the record at once, so a reader never sees half of it."""
    partial = path.with_suffix(".json.part")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(path)


def update_record(path: Path, entries: Mapping[str, dict[str, object]]) -> None:
    """Set these stages' entries, keeping everything else in the record."""
    record = load_record(path)
    record.update(entries)
    _write_record(path, record)


def this_driver() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def driver_alive(entry: Mapping[str, object]) -> bool | None:
    """Whether the driver that wrote ``entry`` still runs; None when that can't be told
    from here (another host, or no driver named)."""
    driver = entry.get("driver")
    if not isinstance(driver, dict) or driver.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(driver["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return True


class AlreadyDriven(Exception):
    """A driver on this host is driving the same pipeline (``--chain=poll``)."""


def refuse_if_driven(path: Path, record: Mapping[str, object]) -> None:
    """AlreadyDriven when another live driver on this host has stages WAITING in ``record``."""
    me = this_driver()
    for key, entry in record.items():
        if not isinstance(entry, dict) or entry.get("state") != WAITING:
            continue
        if entry.get("driver") != me and driver_alive(entry):
            raise AlreadyDriven(
                f"process {entry['driver']['pid']} is already driving this pipeline ({key} "
                f"waits for it, in {path}); stop it first, or follow it with "
                "`sleap-rtc pipeline status`"
            )


def stage_done(stage: Stage, layout: Layout) -> str | None:
    """Why a stage needn't run again (its outputs are there), or None."""
    folder = layout.artifacts_dir(stage)
    if stage.name == "track":
        predictions = folder / PREDICTIONS
        return "its predictions are written" if predictions.is_file() else None
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return None
    _, problems = verify_manifest(manifest, experiment_root=layout.experiment_root)
    return None if problems else "its manifest checks out"


def submit(
    pipeline: Pipeline, layout: Layout, *, chain: bool = False, force: bool = False
) -> list[StageRun]:
    """Submit every stage that needs to run; see the module's description."""
    scripts = {w.stage.key: w.script for w in generate(pipeline, layout)}
    path = record_path(pipeline, layout)
    record = load_record(path)
    refuse_if_driven(path, record)
    earlier = {k: str(v["job_id"]) for k, v in record.items() if v.get("job_id")}
    live = {
        job_id: state
        for job_id, state in job_states(list(earlier.values())).items()
        if state not in FINAL_STATES
    }
    runs: list[StageRun] = []
    for dataset in pipeline.datasets:
        ids: dict[str, str] = {}
        for stage in pipeline.for_dataset(dataset.name):
            previous = earlier.get(stage.key)
            if previous in live:
                ids[stage.name] = previous
                runs.append(
                    StageRun(
                        dataset.name,
                        stage.name,
                        "queued",
                        previous,
                        [],
                        f"already {live[previous].lower()} as job {previous}",
                    )
                )
                continue
            done = None if force else stage_done(stage, layout)
            if done:
                runs.append(StageRun(dataset.name, stage.name, "done", None, [], done))
                continue
            after = [ids[name] for name in stage.after if name in ids] if chain else []
            job_id = sbatch(scripts[stage.key], after=after, cwd=layout.scripts.parent)
            ids[stage.name] = job_id
            record[stage.key] = {"job_id": job_id, "submitted_at": time.time(), "after": after}
            _write_record(path, record)  # as we go: nothing lost
            runs.append(StageRun(dataset.name, stage.name, "submitted", job_id, after))
    return runs


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


def status(pipeline: Pipeline, layout: Layout) -> list[StageStatus]:
    """Every stage with its SLURM state, from one query; a stage with no job is DONE,
    WAITING (for a driver) or NOT SUBMITTED, with the reason where one is recorded."""
    record = load_record(record_path(pipeline, layout))
    ids = {k: str(v["job_id"]) for k, v in record.items() if v.get("job_id")}
    states = job_states(list(ids.values()))
    found = []
    for stage in pipeline.stages:
        job_id = ids.get(stage.key)
        reason = ""
        if job_id is not None:
            state = states.get(job_id, "UNKNOWN")
        else:
            entry = record.get(stage.key)
            state, reason = _unsubmitted(stage, layout, entry if isinstance(entry, dict) else {})
        found.append(StageStatus(stage.dataset.name, stage.name, job_id, state, reason))
    return found


def cancel(pipeline: Pipeline, layout: Layout) -> list[str]:
    """Cancel every job of this pipeline that may still run; their ids."""
    current = [s for s in status(pipeline, layout) if s.job_id and s.state not in FINAL_STATES]
    ids = [s.job_id for s in current if s.job_id]
    scancel(ids)
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
    ) -> None:
        from sleap_rtc.pipeline.spec import load_job

        self.pipeline = load_job(job_file)
        root = Path(experiment_root) if experiment_root else None
        self.layout = Layout.under(Path(output_dir), root)

    def generate(self) -> list[Path]:
        """Write the missing scripts; every stage's script path."""
        return [w.script for w in generate(self.pipeline, self.layout)]

    def submit(self, *, chain: bool = False, force: bool = False) -> list[StageRun]:
        """Submit and return; with ``chain``, SLURM orders the stages (afterok)."""
        return submit(self.pipeline, self.layout, chain=chain, force=force)

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
        from sleap_rtc.pipeline.driver import Driver

        driver = Driver(
            self.pipeline, self.layout, force=force, interval=interval, on_event=on_event
        )
        try:
            results = driver.run(stop=stop)
        except BaseException:
            if cancel_on_exit:
                driver.cancel_in_flight()
            raise
        if cancel_on_exit and driver.in_flight_ids():
            driver.cancel_in_flight()
            results = driver.results()
        return results

    def status(self) -> list[StageStatus]:
        return status(self.pipeline, self.layout)

    def cancel(self) -> list[str]:
        return cancel(self.pipeline, self.layout)

    def job_ids(self) -> list[str]:
        record = load_record(record_path(self.pipeline, self.layout))
        return [str(v["job_id"]) for v in record.values() if v.get("job_id")]

    def monitor(
        self, *, until_done: bool = False, interval: float = 10.0, timeout: float | None = None
    ) -> dict[str, str]:
        """The submitted jobs' states; see :func:`~sleap_rtc.engine.slurm_tools.monitor_jobs`."""
        from sleap_rtc.engine.slurm_tools import monitor_jobs

        return monitor_jobs(
            self.job_ids(), until_done=until_done, interval=interval, timeout=timeout
        )
