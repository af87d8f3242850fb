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
taken as done. ``submit``, the ``--chain=poll`` driver and ``pipeline run
--dry-run`` all act on this one plan; ``status`` uses :func:`outputs_current`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sleap_rtc.engine.backends.slurm.tools import FINAL_STATES, SlurmClient
from sleap_rtc.jobs.problems import JobRejected, Problem, ProblemCode
from sleap_rtc.pipeline.inputs import changes
from sleap_rtc.pipeline.manifest import MANIFEST_NAME, verify_manifest
from sleap_rtc.pipeline.record import entry_jobs
from sleap_rtc.pipeline.sbatch import Layout
from sleap_rtc.pipeline.scripts import Written
from sleap_rtc.pipeline.spec import Pipeline, Stage

Action = Literal["run", "skip", "queued"]


@dataclass(frozen=True)
class Step:
    """One stage's action in a plan."""

    stage: Stage
    written: Written
    action: Action
    reason: str
    #: The job still queued or running (``queued``), or the one that made the outputs.
    job_id: str | None = None


def outputs_current(
    stage: Stage, inputs: Mapping[str, Any], key: str, layout: Layout
) -> tuple[bool, str, str | None]:
    """Whether a stage's outputs are current: its manifest checks out and records the
    inputs it has now. With the reason in words, and the job that made them."""
    manifest_file = layout.artifacts_dir(stage) / MANIFEST_NAME
    if not manifest_file.is_file():
        return False, "not run yet", None
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
    live = {
        job_id: state
        for job_id, state in slurm.job_states(wanted).items()
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
        elif moving:
            what = "runs" if moving[0].action == "run" else "is queued or running"
            reason = f"it needs {moving[0].stage.key}, which {what}"
            steps[stage.key] = Step(stage, item, "run", reason)
        elif stage.dependency == "afternotok" and stage.parents:
            reason = "nothing it needs runs, so none can fail (afternotok)"
            steps[stage.key] = Step(stage, item, "skip", reason)
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
