"""What a run of a pipeline would do with each stage, and why.

Every stage, parents first, gets one action:

- ``queued``: a job from an earlier submission is still pending or running, for
  the same inputs (for other inputs it is a problem: cancel it or wait);
- ``skip``: its manifest checks out and records the inputs it has now (its
  outputs are current), or (``afternotok``) no stage it needs will fail;
- ``run``: anything else, with the reason: not run yet, what changed since its
  outputs were made (``config changed (centroid.yaml)``, ``max_epochs 3 → 5``,
  ``mice/centroid has new inputs``), a stage it needs runs, or ``--force``.

A stage whose parent runs runs too, so outputs made from a stale model are never
taken as done. An array stage (track over several files) keeps a manifest per
file: it runs only the tasks holding files whose outputs aren't current (its
``tasks``), unless a stage it needs runs. ``submit``, the ``--chain=poll`` driver and ``pipeline run
--dry-run`` all act on this one plan; ``status`` uses :func:`outputs_current`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sleap_rtc.engine.backends.slurm.tools import FINAL_STATES, SlurmClient
from sleap_rtc.jobs.problems import JobRejected, Problem, ProblemCode
from sleap_rtc.pipeline.inputs import changes, file_inputs, inputs_key
from sleap_rtc.pipeline.manifest import MANIFEST_NAME, verify_manifest
from sleap_rtc.pipeline.record import array_jobs, entry_jobs
from sleap_rtc.pipeline.sbatch import Layout
from sleap_rtc.pipeline.scripts import Written
from sleap_rtc.pipeline.spec import Pipeline, Stage

Action = Literal["run", "skip", "queued"]
#: Why a stage with no outputs of its own runs.
NOT_RUN = "not run yet"


@dataclass(frozen=True)
class Step:
    """One stage's action in a plan."""

    stage: Stage
    written: Written
    action: Action
    reason: str
    #: The job still queued or running (``queued``), or the one that made the outputs.
    job_id: str | None = None
    #: An array stage that runs only some of its tasks: which (None: all of them).
    tasks: tuple[int, ...] | None = None

    def options(self) -> list[str]:
        """sbatch options this step adds to its script's: the tasks of an array to run."""
        shape = self.written.shape
        if self.tasks is None or shape is None:
            return []
        return [shape.option(self.tasks, self.stage.array_parallelism)]


def outputs_current(
    stage: Stage, inputs: Mapping[str, Any], key: str, layout: Layout
) -> tuple[bool, str, str | None]:
    """Whether a stage's outputs are current: its manifest checks out and records the
    inputs it has now (an array stage's: every file's). With the reason in words, and
    the job that made them."""
    if stage.files:
        stale = stale_files(stage, inputs, layout)
        if stale:
            return False, _stale_reason(stage, stale), None
        return True, f"its outputs are current ({len(stage.files)} files)", None
    return _manifest_current(layout.artifacts_dir(stage) / MANIFEST_NAME, inputs, key, layout)


def stale_files(stage: Stage, inputs: Mapping[str, Any], layout: Layout) -> list[tuple[int, str]]:
    """The files of an array stage whose outputs aren't current, with the reason."""
    stale = []
    for index, folder in enumerate(layout.file_dirs(stage)):
        mine = file_inputs(inputs, index)
        current, reason, _ = _manifest_current(
            folder / MANIFEST_NAME, mine, inputs_key(mine), layout
        )
        if not current:
            stale.append((index, reason))
    return stale


def _stale_reason(stage: Stage, stale: list[tuple[int, str]]) -> str:
    total = len(stage.files)
    if len(stale) == total and all(reason == NOT_RUN for _, reason in stale):
        return NOT_RUN
    index, reason = stale[0]
    return f"{len(stale)} of {total} files: {stage.files[index].name}: {reason}"


def _manifest_current(
    manifest_file: Path, inputs: Mapping[str, Any], key: str, layout: Layout
) -> tuple[bool, str, str | None]:
    if not manifest_file.is_file():
        return False, NOT_RUN, None
    manifest, problems = verify_manifest(manifest_file, experiment_root=layout.experiment_root)
    if manifest is None or problems:
        first = problems[0].message if problems else "its manifest can't be read"
        return False, f"its outputs changed since they were made: {first}", None
    job = manifest.slurm_job_id
    if manifest.inputs_key != key:
        found = changes(manifest.inputs, inputs) or ["its inputs changed"]
        return False, "; ".join(found), job
    made = f" by job {job}" if job else ""
    return True, f"its outputs are current (made{made})" if made else "its outputs are current", job


def make_plan(
    pipeline: Pipeline,
    written: Sequence[Written],
    layout: Layout,
    record: Mapping[str, Mapping[str, object]],
    slurm: SlurmClient,
    *,
    force: bool = False,
) -> list[Step]:
    """Every stage's action (see the module's description), from one state query for
    the jobs of earlier submissions. JobRejected when a job still queued or running
    was submitted for other inputs than the stage has now."""
    earlier = {k: entry_jobs(v) for k, v in record.items()}
    wanted = [job for jobs in earlier.values() for job in jobs]
    arrays = array_jobs(record, [item.stage.key for item in written if item.stage.files])
    live = {
        job_id: state
        for job_id, state in slurm.job_states(wanted, arrays=arrays).items()
        if state not in FINAL_STATES
    }
    steps: dict[str, Step] = {}
    problems: list[Problem] = []
    for item in written:
        stage = item.stage
        flying = [job for job in earlier.get(stage.key, []) if job in live]
        previous = flying[-1] if flying else None  # the gate, or the attempt in flight
        if previous is not None:
            recorded = record[stage.key].get("inputs_key")
            if recorded and recorded != item.key:
                problems.append(_stale_job(stage, previous, live[previous]))
            note = f"already {live[previous].lower()} as job {previous}"
            steps[stage.key] = Step(stage, item, "queued", note, previous)
            continue
        moving = [steps[p] for p in stage.parents if steps[p].action != "skip"]
        if force:
            steps[stage.key] = Step(stage, item, "run", "--force")
        elif moving and stage.dependency == "aftercorr" and item.shape is not None:
            # File by file: the files its parent runs, and its own that aren't current.
            parent = moving[0]
            stale = stale_files(stage, item.inputs, layout)
            files_tasks = {item.shape.task_of(index) for index, _ in stale}
            if parent.action == "run" and parent.tasks is not None:
                files_tasks |= set(parent.tasks)
                some = tuple(sorted(files_tasks)) if len(files_tasks) < item.shape.tasks else None
            else:
                some = None  # its parent runs (or is queued) whole
            reason = f"it follows {parent.stage.key} file by file, which runs"
            if parent.action != "run":
                reason = f"it follows {parent.stage.key} file by file, which is queued or running"
            steps[stage.key] = Step(stage, item, "run", reason, tasks=some)
        elif moving:
            what = "runs" if moving[0].action == "run" else "is queued or running"
            reason = f"it needs {moving[0].stage.key}, which {what}"
            if not (layout.artifacts_dir(stage) / MANIFEST_NAME).is_file():
                reason = NOT_RUN  # nothing of its own to redo
            steps[stage.key] = Step(stage, item, "run", reason)
        elif stage.dependency == "afternotok" and stage.parents:
            reason = "nothing it needs runs, so none can fail (afternotok)"
            steps[stage.key] = Step(stage, item, "skip", reason)
        elif stage.files and item.shape is not None:
            stale = stale_files(stage, item.inputs, layout)
            if not stale:
                reason = f"its outputs are current ({len(stage.files)} files)"
                steps[stage.key] = Step(stage, item, "skip", reason)
                continue
            tasks = sorted({item.shape.task_of(index) for index, _ in stale})
            some = tuple(tasks) if len(tasks) < item.shape.tasks else None
            steps[stage.key] = Step(stage, item, "run", _stale_reason(stage, stale), tasks=some)
        else:
            current, reason, job = outputs_current(stage, item.inputs, item.key, layout)
            steps[stage.key] = Step(stage, item, "skip" if current else "run", reason, job)
    if problems:
        raise JobRejected(problems)
    return [steps[item.stage.key] for item in written]


def _stale_job(stage: Stage, job_id: str, state: str) -> Problem:
    return Problem(
        field=stage.key,
        value=job_id,
        code=ProblemCode.CONFLICT,
        message=(
            f"job {job_id} of {stage.key} is still {state.lower()}, submitted for other "
            "inputs than the stage has now; cancel it (`sleap-rtc pipeline cancel`) or "
            "wait for it to end, then run again"
        ),
    )
