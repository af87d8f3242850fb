"""Pipeline job files: which datasets, which stages, with what resources.

A job file (JSON, or YAML) names datasets from a registry, the stages to run on
each (training model types and ``track``), a config per training stage,
overrides, SLURM resources and environment set-up lines. :func:`load_job` reads
it and resolves it into a :class:`Pipeline`, one :class:`Stage` per dataset and
stage, each with its inputs, resources and the stages it waits for. Every
problem is reported at once (:class:`~sleap_rtc.jobs.problems.JobRejected`),
each naming the field, the value and what to do: each rule is one checker in
:data:`CHECKS`, and all of them run before anything is resolved. Overrides
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

Relative paths in a job file are relative to the job file's folder; in a
datasets registry, to the registry's folder.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from sleap_rtc.engine.backends.slurm.resources import Resources, single_line
from sleap_rtc.jobs.options import JobKind, JobOption, job_file_options
from sleap_rtc.jobs.problems import JobRejected, Problem, ProblemCode
from sleap_rtc.jobs.specs import problems_from_validation_error
from sleap_rtc.pipeline.datasets import NAME, Dataset, load_registry, local_path, read_mapping
from sleap_rtc.pipeline.extra_args import check_args

TRAINING_STAGES = ("single_instance", "centroid", "centered_instance", "bottomup")
STAGES = (*TRAINING_STAGES, "track")
StageName = Literal["single_instance", "centroid", "centered_instance", "bottomup", "track"]
TrainingStage = Literal["single_instance", "centroid", "centered_instance", "bottomup"]

PLACEHOLDERS = ("dataset", "experiment_root")

_STRICT = ConfigDict(extra="forbid", frozen=True)


class StageSettings(BaseModel):
    """What one stage changes from the job-wide settings."""

    model_config = _STRICT

    config: str | None = None
    slurm: Resources = Field(default_factory=Resources)
    extra_args: dict[str, Any] = Field(default_factory=dict)
    setup: list[str] | None = None


class JobFile(BaseModel):
    """A job file as written; :func:`load_job` checks and resolves it."""

    model_config = _STRICT

    name: str
    datasets: list[str] | Literal["all"]
    datasets_registry: str = "datasets.json"
    training_types: list[StageName] = Field(min_length=1, max_length=len(STAGES))
    configs: dict[TrainingStage, str] = Field(default_factory=dict)
    extra_args: dict[str, Any] = Field(default_factory=dict)
    optimize_batch_size: bool = True
    dependency_manifests: dict[str, str] = Field(default_factory=dict)
    slurm: Resources = Field(default_factory=Resources)
    stages: dict[StageName, StageSettings] = Field(default_factory=dict)
    setup: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError(
                "name must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or "
                "digit (it names folders and scripts)"
            )
        return value

    @field_validator("setup")
    @classmethod
    def _setup(cls, value: list[str]) -> list[str]:
        for line in value:
            single_line(line, "each setup line")
        return value


@dataclass(frozen=True)
class Stage:
    """One stage of one dataset, resolved."""

    job: str
    dataset: Dataset
    name: str
    config: Path | None
    extra_args: dict[str, Any]
    resources: Resources
    setup: list[str]
    #: Stages of the same dataset this one waits for (track: the training stages).
    after: tuple[str, ...]
    #: The manifest pinning artifacts from outside this run, as a template.
    manifest: str | None
    optimize_batch_size: bool

    @property
    def key(self) -> str:
        """``{job}_{dataset}_{stage}``: script, log and meta file names."""
        return f"{self.job}_{self.dataset.name}_{self.name}"


@dataclass(frozen=True)
class Pipeline:
    """A checked job file: every stage of every dataset."""

    name: str
    source: Path
    spec: dict[str, Any]
    datasets: list[Dataset]
    stages: list[Stage] = field(default_factory=list)

    def for_dataset(self, name: str) -> list[Stage]:
        return [s for s in self.stages if s.dataset.name == name]


def stage_kind(stage: str) -> JobKind:
    """The kind of job a stage runs: ``track``, or ``train`` for every model type."""
    return "track" if stage == "track" else "train"


@dataclass(frozen=True)
class _Draft:
    """A job file that parsed, with what the checkers read; nothing checked beyond that."""

    job: JobFile
    base: Path
    registry: dict[str, Dataset]
    #: Every name the registry has (the job's datasets are among them, or unknown).
    known: list[str]
    #: Problems reading the registry (it is then empty).
    registry_problems: list[Problem]
    #: The datasets asked for, in order (maybe unknown or repeated).
    names: list[str]
    #: training_types without repeats, in order; ``training`` without track.
    stages: list[str]
    training: list[str]
    configs: dict[str, str]
    settings: dict[str, StageSettings]

    @classmethod
    def of(cls, job: JobFile, base: Path) -> _Draft:
        problems: list[Problem] = []
        try:
            used = None if job.datasets == "all" else set(job.datasets)
            loaded = load_registry(local_path(base, job.datasets_registry), only=used)
            registry, known = loaded.datasets, loaded.names
        except JobRejected as exc:
            problems.extend(exc.problems)
            registry, known = {}, []
        stages = list(dict.fromkeys(str(s) for s in job.training_types))
        return cls(
            job=job,
            base=base,
            registry=registry,
            known=known,
            registry_problems=problems,
            names=sorted(registry) if job.datasets == "all" else list(job.datasets),
            stages=stages,
            training=[s for s in stages if s != "track"],
            # Plain str keys from here on (the model checked they are stage names).
            configs={str(k): v for k, v in job.configs.items()},
            settings={str(k): v for k, v in job.stages.items()},
        )

    def config_of(self, stage: str) -> tuple[str | None, str]:
        """A training stage's config as written, and the field that names it."""
        settings = self.settings.get(stage)
        if settings is not None and settings.config:
            return settings.config, f"stages.{stage}.config"
        return self.configs.get(stage), f"configs.{stage}"

    def overrides_for(self, stage: str) -> dict[str, Any]:
        """The job-wide overrides that apply to ``stage``, then the stage's own."""
        allowed = job_file_options(stage_kind(stage))
        args = {k: v for k, v in self.job.extra_args.items() if k in allowed}
        settings = self.settings.get(stage)
        if settings is not None:
            args.update(settings.extra_args)
        return args

    def manifest_for(self, stage: str) -> str | None:
        manifests = self.job.dependency_manifests
        return manifests.get(stage) or manifests.get("default")


def _problem(field: str, value: str | None, code: ProblemCode, message: str) -> Problem:
    return Problem(field=field, value=value, code=code, message=message)


def _registry_readable(d: _Draft) -> list[Problem]:
    return d.registry_problems


def _datasets_known(d: _Draft) -> list[Problem]:
    """Each dataset named once and found in the registry; "all" needs some."""
    problems = [
        _problem(
            f"datasets[{index}]",
            name,
            ProblemCode.INVALID_VALUE,
            f"dataset {name!r} is not in the registry; known: "
            f"{', '.join(sorted(d.known)) or '(none)'}",
        )
        for index, name in enumerate(d.names)
        if not d.registry_problems and name not in d.known
    ]
    if len(set(d.names)) != len(d.names):
        problems.append(
            _problem(
                "datasets", ", ".join(d.names), ProblemCode.CONFLICT, "a dataset is named twice"
            )
        )
    if d.job.datasets == "all" and not d.known and not d.registry_problems:
        problems.append(
            _problem("datasets", "all", ProblemCode.INVALID_VALUE, "the registry names no datasets")
        )
    return problems


def _stages_named_once(d: _Draft) -> list[Problem]:
    """Each stage named once; settings and configs only for stages the job runs."""
    problems = []
    if len(d.stages) != len(d.job.training_types):
        problems.append(
            _problem(
                "training_types",
                ", ".join(d.job.training_types),
                ProblemCode.CONFLICT,
                "a stage is named twice",
            )
        )
    problems += [
        _problem(
            f"stages.{key}",
            key,
            ProblemCode.CONFLICT,
            f"settings for {key!r}, which is not in training_types",
        )
        for key in d.settings
        if key not in d.stages
    ]
    problems += [
        _problem(
            f"configs.{key}",
            raw,
            ProblemCode.CONFLICT,
            f"a config for {key!r}, which is not in training_types",
        )
        for key, raw in d.configs.items()
        if key not in d.training
    ]
    return problems


def _configs_exist(d: _Draft) -> list[Problem]:
    """Every training stage has a sleap-nn config, and the file is there."""
    problems = []
    for stage in d.training:
        raw, where = d.config_of(stage)
        if raw is None:
            problems.append(
                _problem(
                    f"configs.{stage}",
                    None,
                    ProblemCode.MISSING_FIELD,
                    f"stage {stage!r} needs a sleap-nn config: set configs.{stage}",
                )
            )
        elif not (config := local_path(d.base, raw)).is_file():
            problems.append(
                _problem(where, raw, ProblemCode.PATH_NOT_FOUND, f"Path not found: {config}")
            )
    return problems


def _overrides_valid(d: _Draft) -> list[Problem]:
    """Job-wide overrides may set any option of the kinds of stage the job runs."""
    kinds = {stage_kind(s) for s in d.stages}
    wide: dict[str, JobOption] = {}
    for kind in kinds:
        wide.update(job_file_options(kind))
    problems = check_args(d.job.extra_args, wide, "extra_args")
    for stage, settings in d.settings.items():
        allowed = job_file_options(stage_kind(stage))
        problems += check_args(settings.extra_args, allowed, f"stages.{stage}.extra_args")
    return problems


def _check_template(template: str, where: str) -> list[Problem]:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        return [
            _problem(where, template, ProblemCode.INVALID_VALUE, f"not a valid template: {exc}")
        ]
    unknown = sorted(names - set(PLACEHOLDERS))
    if not unknown:
        return []
    return [
        _problem(
            where,
            template,
            ProblemCode.INVALID_VALUE,
            f"unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
            f"use {', '.join('{' + n + '}' for n in PLACEHOLDERS)}",
        )
    ]


def _manifests_valid(d: _Draft) -> list[Problem]:
    """Manifest keys are 'default' or a stage; templates use only known placeholders."""
    problems = []
    for key, template in d.job.dependency_manifests.items():
        if key != "default" and key not in d.stages:
            problems.append(
                _problem(
                    f"dependency_manifests.{key}",
                    template,
                    ProblemCode.CONFLICT,
                    f"keys are 'default' or a stage of this job ({', '.join(d.stages)})",
                )
            )
        problems += _check_template(template, f"dependency_manifests.{key}")
    return problems


def _track_has_models(d: _Draft) -> list[Problem]:
    """Track needs its models: trained in this job (top-down: both) or pinned by a manifest."""
    manifests = d.job.dependency_manifests
    if "track" not in d.stages or "track" in manifests or "default" in manifests:
        return []
    problems = []
    if not d.training:
        problems.append(
            _problem(
                "training_types",
                ", ".join(d.stages),
                ProblemCode.MISSING_FIELD,
                "track needs models: train them in this job (e.g. centroid and "
                "centered_instance) or name a manifest in dependency_manifests",
            )
        )
    if "centered_instance" in d.training and "centroid" not in d.training:
        problems.append(
            _problem(
                "training_types",
                ", ".join(d.stages),
                ProblemCode.MISSING_FIELD,
                "top-down tracking needs a centroid model too: add 'centroid' or pin "
                "one with dependency_manifests",
            )
        )
    return problems


#: The rules of a job file beyond its fields' types, in the order their problems are listed.
CHECKS: tuple[Callable[[_Draft], list[Problem]], ...] = (
    _registry_readable,
    _datasets_known,
    _stages_named_once,
    _configs_exist,
    _overrides_valid,
    _manifests_valid,
    _track_has_models,
)


def load_job(path: str | Path) -> Pipeline:
    """Read, check and resolve a job file; JobRejected lists every problem found.

    Every rule in :data:`CHECKS` runs, so one rejection names every problem; nothing is
    resolved until all of them pass.
    """
    source = Path(path).expanduser().resolve()
    data = read_mapping(source, "job file", "job")
    try:
        job = JobFile.model_validate(data)
    except ValidationError as exc:
        raise JobRejected(problems_from_validation_error(exc)) from None
    draft = _Draft.of(job, source.parent)
    problems = [problem for check in CHECKS for problem in check(draft)]
    if problems:
        raise JobRejected(problems)
    pipeline = Pipeline(
        name=job.name,
        source=source,
        spec=job.model_dump(),
        datasets=[draft.registry[n] for n in draft.names],
    )
    for dataset in pipeline.datasets:
        for stage in draft.stages:
            settings = draft.settings.get(stage, StageSettings())
            raw, _ = draft.config_of(stage) if stage != "track" else (None, "")
            pipeline.stages.append(
                Stage(
                    job=job.name,
                    dataset=dataset,
                    name=stage,
                    config=local_path(draft.base, raw) if raw is not None else None,
                    extra_args=draft.overrides_for(stage),
                    resources=settings.slurm.over(job.slurm),
                    setup=list(settings.setup if settings.setup is not None else job.setup),
                    after=tuple(draft.training) if stage == "track" else (),
                    manifest=draft.manifest_for(stage),
                    optimize_batch_size=job.optimize_batch_size and stage != "track",
                )
            )
    return pipeline
