"""Pipeline job files: which datasets, which stages, with what resources.

A job file (JSON, or YAML) names datasets from a registry, the stages to run on
each (training model types and ``track``), a config per training stage,
overrides, SLURM resources and environment set-up lines. :func:`load_job` reads
it and resolves it into a :class:`Pipeline`, one :class:`Stage` per dataset and
stage, each with its inputs, resources and the stages it waits for. Every
problem is reported at once (:class:`~sleap_rtc.jobs.problems.JobRejected`),
each naming the field, the value and what to do: the fields' schema is in
:mod:`~sleap_rtc.pipeline.jobfile`, each rule across them one checker in
:data:`~sleap_rtc.pipeline.rules.CHECKS`, and all of them run before anything is
resolved. Overrides
(``extra_args``) are the job options the option table lets a job file set
(:mod:`sleap_rtc.jobs.options`); a stage runs them as fields of its spec.

Example (``examples/jobs/``)::

    {
      "name": "topdown",
      "datasets": "all",
      "training_types": ["centroid", "centered_instance", "track"],
      "configs": {"centroid": "configs/centroid.yaml",
                  "centered_instance": "configs/centered_instance.yaml"},
      "extra_args": {"max_epochs": 5},
      "slurm": {"time": "00:30:00", "mem": "4G", "cpus": 1}
    }

A stage may name the stages it ``needs`` (default: track needs the job's
training stages), with a ``dependency`` type for command stages (``afterok``,
``afterany``, ``afternotok``; ``aftercorr`` file by file after track), and
``singleton`` (one at a time). A *command
stage* is any other name in ``stages`` with a ``command``: shell lines run with
the same resources, set-up and manifest as the others, once per dataset or once
for the job (``scope: pipeline``); see :mod:`sleap_rtc.pipeline.graph`. Track over
several files (the registry's ``track`` as a list or glob) is one array job, at most
``array_parallelism`` tasks at once (:mod:`sleap_rtc.pipeline.arrays`).

Relative paths in a job file are relative to the job file's folder; in a
datasets registry, to the registry's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sleap_rtc.engine.backends.slurm.resources import Resources
from sleap_rtc.jobs.problems import JobRejected, Problem
from sleap_rtc.jobs.specs import problems_from_validation_error
from sleap_rtc.pipeline.datasets import Dataset, local_path, read_mapping
from sleap_rtc.pipeline.graph import stable_order
from sleap_rtc.pipeline.jobfile import (
    PIPELINE_GROUP,
    STAGES,
    TRAINING_STAGES,
    Dependency,
    JobFile,
    RetryResources,
    StageKind,
    stage_kind,
)
from sleap_rtc.pipeline.rules import CHECKS, Draft
from sleap_rtc.pipeline.throttle import ThrottleSettings

__all__ = [
    "PIPELINE_GROUP",
    "STAGES",
    "TRAINING_STAGES",
    "Pipeline",
    "Resources",
    "Stage",
    "load_job",
]


@dataclass(frozen=True)
class Stage:
    """One stage of one dataset (or of the whole job), resolved."""

    job: str
    #: None for a stage that runs once for the whole job (``scope: pipeline``).
    dataset: Dataset | None
    name: str
    kind: StageKind
    config: Path | None
    extra_args: dict[str, Any]
    resources: Resources
    setup: list[str]
    #: The stages this one waits for, by name (track: the training stages).
    after: tuple[str, ...]
    #: Their keys (one per dataset where a pipeline stage needs a dataset stage).
    parents: tuple[str, ...]
    #: The manifest pinning artifacts from outside this run, as a template.
    manifest: str | None
    optimize_batch_size: bool
    dependency: Dependency = "afterok"
    singleton: bool = False
    command: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    #: Attempts after the first, the ends that call for one, and resources per attempt.
    retries: int = 0
    retry_on: tuple[str, ...] = ()
    retry_resources: RetryResources = field(default_factory=RetryResources)
    #: An array track stage's most tasks at once (``%P``); None: no limit of ours.
    array_parallelism: int | None = None

    @property
    def files(self) -> tuple[Path, ...]:
        """The files an array stage runs on, spread over its tasks: track over several
        files, and a command stage that follows it file by file (``aftercorr``);
        empty for every other stage."""
        if self.dataset is None or len(self.dataset.track) < 2:
            return ()
        if self.kind == "track" or self.dependency == "aftercorr":
            return self.dataset.track
        return ()

    @property
    def attempts(self) -> int:
        return 1 + self.retries

    def attempt_options(self, attempt: int) -> list[str]:
        """sbatch options for attempt ``attempt`` (1 for the first, which its script's
        ``#SBATCH`` lines already ask for)."""
        if attempt <= 1:
            return []
        return [f"--{k}={v}" for k, v in self.retry_resources.for_attempt(attempt).items()]

    @property
    def group(self) -> str:
        """The dataset's name, or :data:`PIPELINE_GROUP` for a stage of the whole job."""
        return self.dataset.name if self.dataset is not None else PIPELINE_GROUP

    @property
    def key(self) -> str:
        """``{group}/{stage}``: unique in its job, and names its script, log and artifacts
        folders (no name holds a ``/``, so no two stages share one)."""
        return f"{self.group}/{self.name}"

    @property
    def data(self) -> Dataset:
        """The dataset of a training or track stage (they always have one)."""
        if self.dataset is None:
            raise ValueError(f"stage {self.name!r} runs for the whole job, not per dataset")
        return self.dataset

    @property
    def slurm_name(self) -> str:
        """The SLURM job name: ``{job}/{group}/{stage}``; ``{job}/{stage}`` for a singleton
        stage, so its datasets' jobs share a name and run one at a time."""
        return f"{self.job}/{self.name}" if self.singleton else f"{self.job}/{self.key}"


@dataclass(frozen=True)
class Pipeline:
    """A checked job file: every stage of every dataset."""

    name: str
    source: Path
    spec: dict[str, Any]
    datasets: list[Dataset]
    stages: list[Stage] = field(default_factory=list)
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)

    def for_dataset(self, name: str) -> list[Stage]:
        return [s for s in self.stages if s.dataset is not None and s.dataset.name == name]

    def by_key(self) -> dict[str, Stage]:
        return {s.key: s for s in self.stages}


def load_job(path: str | Path) -> Pipeline:
    """Read, check and resolve a job file; JobRejected lists every problem found.

    Every rule in :data:`CHECKS` runs, so one rejection names every problem; nothing is
    resolved until all of them pass.
    """
    source = Path(path).expanduser().resolve()
    data = read_mapping(source, "job file", "job")
    job, problems = _validated(data)
    if job is None:
        raise JobRejected(problems)
    draft = Draft.of(job, source.parent)
    # A field with a schema problem was left out: the rules say nothing more about it.
    named = {p.field.split("[")[0] for p in problems}
    problems += [
        problem
        for check in CHECKS
        for problem in check(draft)
        if not any(problem.field == n or problem.field.startswith(f"{n}.") for n in named)
    ]
    if problems:
        raise JobRejected(problems)
    return _resolve(draft, source)


def _validated(data: dict[str, Any]) -> tuple[JobFile | None, list[Problem]]:
    """The job file's schema problems; and, so the rules can run on the rest in the same
    round, the job file without the fields that have them (None when even that fails).

    A field with a problem is left out (its default stands in): a top-level field, or
    one setting of one stage."""
    problems: list[Problem] = []
    trimmed = dict(data)
    for _ in range(8):  # each round drops what failed; a few rounds settle it
        try:
            return JobFile.model_validate(trimmed), problems
        except ValidationError as exc:
            problems += problems_from_validation_error(exc)
            dropped = False
            for item in exc.errors():
                dropped |= _drop(trimmed, tuple(item["loc"]))
            if not dropped:
                return None, problems
    return None, problems


def _drop(data: dict[str, Any], loc: tuple[Any, ...]) -> bool:
    """Leave out the field at ``loc`` (a stage's setting, else the top-level field);
    whether anything went. A required field can't go."""
    if not loc or loc[0] in ("name", "datasets"):
        return False
    if len(loc) >= 3 and loc[0] == "stages" and isinstance(data.get("stages"), dict):
        stage = data["stages"].get(loc[1])
        if isinstance(stage, dict) and loc[2] in stage:
            data["stages"] = {
                **data["stages"],
                loc[1]: {k: v for k, v in stage.items() if k != loc[2]},
            }
            return True
    return data.pop(loc[0], None) is not None


def _resolve(d: Draft, source: Path) -> Pipeline:
    """Every stage of every dataset (and each pipeline stage once), parents first."""
    job = d.job
    datasets = [d.registry[n] for n in d.names]
    needs = {name: d.needs_of(name) for name in d.stages}
    names = stable_order(d.stages, needs)
    per_dataset = [n for n in names if d.scope_of(n) == "dataset"]

    def keys_of(parent: str, dataset: Dataset | None) -> list[str]:
        if d.scope_of(parent) == "pipeline":
            return [f"{PIPELINE_GROUP}/{parent}"]
        if dataset is not None:
            return [f"{dataset.name}/{parent}"]
        return [f"{other.name}/{parent}" for other in datasets]  # fan-in

    def stage(name: str, dataset: Dataset | None) -> Stage:
        settings = d.settings_of(name)
        raw, _ = d.config_of(name) if name in d.training else (None, "")
        kind: StageKind = "command" if name in d.commands else stage_kind(name)
        return Stage(
            job=job.name,
            dataset=dataset,
            name=name,
            kind=kind,
            config=local_path(d.base, raw) if raw is not None else None,
            extra_args=d.overrides_for(name),
            resources=Resources(
                **{
                    **settings.slurm.over(job.slurm).model_dump(),
                    **settings.retry_resources.for_attempt(1),
                }
            ),
            setup=list(settings.setup if settings.setup is not None else job.setup),
            after=tuple(needs[name]),
            parents=tuple(k for parent in needs[name] for k in keys_of(parent, dataset)),
            manifest=d.manifest_for(name),
            optimize_batch_size=job.optimize_batch_size and name in d.training,
            # aftercorr follows an array task by task; a dataset tracking one file has none.
            dependency=(
                "afterok"
                if settings.dependency == "aftercorr"
                and (dataset is None or len(dataset.track) < 2)
                else settings.dependency
            ),
            singleton=settings.singleton,
            command=settings.command_lines(),
            outputs=tuple(settings.outputs),
            retries=settings.retries,
            retry_on=tuple(settings.retry_on),
            retry_resources=settings.retry_resources,
            array_parallelism=(
                settings.array_parallelism
                if settings.array_parallelism is not None
                else job.array_parallelism
            ),
        )

    def upstream(name: str) -> set[str]:
        found: set[str] = set()
        todo = list(needs[name])
        while todo:
            parent = todo.pop()
            if parent not in found:
                found.add(parent)
                todo += needs[parent]
        return found

    # Pipeline stages that need no dataset's stage come first (datasets may need them),
    # then dataset by dataset, then the pipeline stages that gather from the datasets;
    # each stage after the ones it needs.
    pipeline_wide = [n for n in names if d.scope_of(n) == "pipeline"]
    gathering = {n for n in pipeline_wide if any(d.scope_of(u) == "dataset" for u in upstream(n))}
    instances = [stage(n, None) for n in pipeline_wide if n not in gathering]
    instances += [stage(n, dataset) for dataset in datasets for n in per_dataset]
    instances += [stage(n, None) for n in pipeline_wide if n in gathering]
    ordered = stable_order([s.key for s in instances], {s.key: s.parents for s in instances})
    by_key = {s.key: s for s in instances}
    return Pipeline(
        name=job.name,
        source=source,
        spec=job.model_dump(),
        datasets=datasets,
        stages=[by_key[key] for key in ordered],
        throttle=job.throttle,
    )
