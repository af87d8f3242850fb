"""Submitting a pipeline, and following and cancelling what was submitted.

``submit`` writes the scripts that are missing, skips stages whose outputs are
already there (a training stage with a manifest that checks out, a track stage
with its predictions) and stages still queued or running from an earlier
submission, and submits the rest. With ``chain``, a stage waits for the stages
it needs (afterok, and is cancelled when one fails). What was submitted is
recorded in ``slurm_jobs/{job}.runs.json``, which ``status`` and ``cancel`` read.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from sleap_rtc.pipeline.manifest import MANIFEST_NAME, verify_manifest
from sleap_rtc.pipeline.sbatch import PREDICTIONS, Layout, generate
from sleap_rtc.pipeline.slurm import FINAL_STATES, job_states, sbatch, scancel
from sleap_rtc.pipeline.spec import Pipeline, Stage

Action = Literal["submitted", "done", "queued"]


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


def _load_record(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def stage_done(stage: Stage, layout: Layout) -> str | None:
    """Why a stage needn't run again (its outputs are there), or None."""
    folder = layout.artifacts_dir(stage)
    if stage.name == "track":
        predictions = folder / PREDICTIONS
        return "its predictions are written" if predictions.is_file() else None
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return None
    _, problems = verify_manifest(manifest)
    return None if problems else "its manifest checks out"


def submit(
    pipeline: Pipeline, layout: Layout, *, chain: bool = False, force: bool = False
) -> list[StageRun]:
    """Submit every stage that needs to run; see the module's description."""
    scripts = {w.stage.key: w.script for w in generate(pipeline, layout)}
    path = record_path(pipeline, layout)
    record = _load_record(path)
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
            path.write_text(json.dumps(record, indent=2) + "\n")  # as we go: nothing lost
            runs.append(StageRun(dataset.name, stage.name, "submitted", job_id, after))
    return runs


@dataclass(frozen=True)
class StageStatus:
    dataset: str
    stage: str
    job_id: str | None
    state: str


def status(pipeline: Pipeline, layout: Layout) -> list[StageStatus]:
    """Every stage with its SLURM state, from one query (NOT SUBMITTED / DONE otherwise)."""
    record = _load_record(record_path(pipeline, layout))
    ids = {k: str(v["job_id"]) for k, v in record.items() if v.get("job_id")}
    states = job_states(list(ids.values()))
    found = []
    for stage in pipeline.stages:
        job_id = ids.get(stage.key)
        if job_id is not None:
            state = states.get(job_id, "UNKNOWN")
        else:
            state = "DONE" if stage_done(stage, layout) else "NOT SUBMITTED"
        found.append(StageStatus(stage.dataset.name, stage.name, job_id, state))
    return found


def cancel(pipeline: Pipeline, layout: Layout) -> list[str]:
    """Cancel every job of this pipeline that may still run; their ids."""
    current = [s for s in status(pipeline, layout) if s.job_id and s.state not in FINAL_STATES]
    ids = [s.job_id for s in current if s.job_id]
    scancel(ids)
    return ids


def as_dicts(items: list[StageRun] | list[StageStatus]) -> list[dict[str, object]]:
    return [asdict(item) for item in items]


class PipelineRun:
    """One job file's run, as an object: generate, submit, status, cancel, monitor.

    >>> run = PipelineRun("jobs/topdown.json", output_dir="runs")   # doctest: +SKIP
    >>> run.submit(chain=True)                                       # doctest: +SKIP
    >>> run.monitor(until_done=True)                                 # doctest: +SKIP
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
        return submit(self.pipeline, self.layout, chain=chain, force=force)

    def status(self) -> list[StageStatus]:
        return status(self.pipeline, self.layout)

    def cancel(self) -> list[str]:
        return cancel(self.pipeline, self.layout)

    def job_ids(self) -> list[str]:
        record = _load_record(record_path(self.pipeline, self.layout))
        return [str(v["job_id"]) for v in record.values() if v.get("job_id")]

    def monitor(
        self, *, until_done: bool = False, interval: float = 10.0, timeout: float | None = None
    ) -> dict[str, str]:
        """The submitted jobs' states; see :func:`~sleap_rtc.pipeline.slurm.monitor_jobs`."""
        from sleap_rtc.pipeline.slurm import monitor_jobs

        return monitor_jobs(
            self.job_ids(), until_done=until_done, interval=interval, timeout=timeout
        )
