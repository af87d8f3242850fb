"""Every stage checked the way its node will check it, before anything is written or
submitted.

A stage script runs its job with ``sleap-rtc local``, which checks the job again
on the node; by then other stages may be queued and GPU hours spent. So each
stage's spec (:func:`~sleap_rtc.pipeline.sbatch.stage_spec`) goes through the
worker's own planner here first, with the folders the script will mount:

- a training stage through :func:`~sleap_rtc.jobs.validation.plan_train`: its
  config against sleap-nn's schema, every value's range and format, the labels'
  contents and where their videos are (path maps applied);
- a track stage through the checks that need no model (the models it uses are
  trained by this run): ranges, ``frames`` and the other formats, the data file.

Every problem of every stage comes at once, each named by dataset and stage.
"""

from __future__ import annotations

from pathlib import Path

from sleap_rtc.jobs.mounts import Mount, Mounts
from sleap_rtc.jobs.problems import JobRejected, Problem
from sleap_rtc.jobs.specs import TrainSpec
from sleap_rtc.jobs.validation import check_fields, plan_train
from sleap_rtc.pipeline.manifest import Manifest
from sleap_rtc.pipeline.sbatch import stage_spec
from sleap_rtc.pipeline.spec import Pipeline, Stage


def _mounts(folders: list[Path]) -> Mounts:
    kept: list[Path] = []
    for folder in folders:
        if folder.is_dir() and not any(folder.is_relative_to(k) for k in kept):
            kept = [k for k in kept if not k.is_relative_to(folder)] + [folder]
    return Mounts([Mount.create(folder, f"m{i}") for i, folder in enumerate(kept)])


def _stage_problems(stage: Stage, pinned: Manifest | None) -> list[Problem]:
    if stage.kind == "command":  # the user's own lines: nothing of ours to check
        return []
    spec = stage_spec(stage, pinned)
    if not isinstance(spec, TrainSpec):
        return check_fields(spec)
    assert stage.config is not None
    folders = [stage.config.parent, stage.data.labels.parent]
    if stage.data.val_labels is not None:
        folders.append(stage.data.val_labels.parent)
    try:
        plan_train(spec, _mounts(folders))
    except JobRejected as exc:
        return list(exc.problems)
    return []


def check_stages(pipeline: Pipeline, pinned: dict[str, Manifest]) -> None:
    """Raise :class:`JobRejected` with every stage's problems, fields named
    ``{dataset}/{stage}: field``."""
    problems: list[Problem] = []
    for stage in pipeline.stages:
        for problem in _stage_problems(stage, pinned.get(stage.key)):
            problems.append(problem.model_copy(update={"field": f"{stage.key}: {problem.field}"}))
    if problems:
        raise JobRejected(problems)
