"""Pipeline job files: which datasets, which stages, with what resources.

A job file (JSON, or YAML) names datasets from a registry, the stages to run on
each (training model types and ``track``), a config per training stage,
overrides, SLURM resources and environment set-up lines. :func:`load_job` reads
it and resolves it into a :class:`Pipeline`, one :class:`Stage` per dataset and
stage, each with its inputs, resources and the stages it waits for. Every
problem is reported at once (:class:`~sleap_rtc.jobs.problems.JobRejected`),
each naming the field, the value and what to do.

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

import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from sleap_rtc.engine.slurm_tools import Resources, single_line
from sleap_rtc.jobs.problems import JobRejected, Problem, ProblemCode
from sleap_rtc.jobs.specs import problems_from_validation_error

TRAINING_STAGES = ("single_instance", "centroid", "centered_instance", "bottomup")
STAGES = (*TRAINING_STAGES, "track")
StageName = Literal["single_instance", "centroid", "centered_instance", "bottomup", "track"]
TrainingStage = Literal["single_instance", "centroid", "centered_instance", "bottomup"]

#: Overrides a job file may set, and the stages they apply to.
TRAIN_ARGS: dict[str, type] = {"max_epochs": int, "batch_size": int, "learning_rate": float}
TRACK_ARGS: dict[str, type] = {
    "batch_size": int,
    "peak_threshold": float,
    "frames": str,
    "only_suggested_frames": bool,
}
PLACEHOLDERS = ("dataset", "experiment_root")
MAX_JOB_FILE_BYTES = 1024 * 1024

_STRICT = ConfigDict(extra="forbid", frozen=True)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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
        if not _NAME.match(value):
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


class DatasetEntry(BaseModel):
    model_config = _STRICT

    labels: str
    val_labels: str | None = None
    #: What ``track`` runs on; the labels file if unset.
    track: str | None = None


@dataclass(frozen=True)
class Dataset:
    name: str
    labels: Path
    val_labels: Path | None
    track: Path


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


def _read_mapping(path: Path, what: str, field_name: str) -> dict[str, Any]:
    """A JSON or YAML file holding a mapping; JobRejected naming the file otherwise."""

    def problem(code: ProblemCode, message: str) -> JobRejected:
        return JobRejected([Problem(field=field_name, value=str(path), code=code, message=message)])

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise problem(ProblemCode.PATH_NOT_FOUND, f"{what} not found: {path}") from None
    except OSError as exc:
        raise problem(ProblemCode.NOT_READABLE, f"can't read {what} {path}: {exc}") from None
    if size > MAX_JOB_FILE_BYTES:
        raise problem(ProblemCode.OUT_OF_RANGE, f"{what} {path} is over 1 MiB")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise problem(ProblemCode.INVALID_VALUE, f"{what} {path} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise problem(ProblemCode.INVALID_TYPE, f"{what} {path} must hold a mapping (an object)")
    return data


def load_registry(path: Path) -> dict[str, Dataset]:
    """The datasets registry: name → labels (and optional val labels, track input)."""
    data = _read_mapping(path, "datasets registry", "datasets_registry")
    problems: list[Problem] = []
    found: dict[str, Dataset] = {}
    for name, raw in data.items():
        if not _NAME.match(str(name)):
            problems.append(
                Problem(
                    field=f"datasets_registry.{name}",
                    value=str(name),
                    code=ProblemCode.INVALID_VALUE,
                    message="dataset names are letters, digits, '_', '-' or '.' (no spaces)",
                )
            )
            continue
        try:
            entry = DatasetEntry.model_validate(raw)
        except ValidationError as exc:
            for p in problems_from_validation_error(exc):
                problems.append(
                    p.model_copy(update={"field": f"datasets_registry.{name}.{p.field}"})
                )
            continue
        base = path.parent
        labels = _local(base, entry.labels)
        val = _local(base, entry.val_labels) if entry.val_labels else None
        track = _local(base, entry.track) if entry.track else labels
        for key, value in (("labels", labels), ("val_labels", val), ("track", track)):
            if value is not None and not value.is_file():
                problems.append(
                    Problem(
                        field=f"datasets_registry.{name}.{key}",
                        value=str(value),
                        code=ProblemCode.PATH_NOT_FOUND,
                        message=f"Path not found: {value} (dataset {name!r} in {path})",
                    )
                )
        found[str(name)] = Dataset(str(name), labels, val, track)
    if problems:
        raise JobRejected(problems)
    return found


def _local(base: Path, raw: str) -> Path:
    path = Path(raw).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _check_args(
    args: Mapping[str, Any], allowed: dict[str, type], where: str, problems: list[Problem]
) -> None:
    for key, value in args.items():
        if key not in allowed:
            problems.append(
                Problem(
                    field=f"{where}.{key}",
                    value=str(value),
                    code=ProblemCode.UNKNOWN_FIELD,
                    message=f"unknown override {key!r}; valid ones: {', '.join(sorted(allowed))}",
                )
            )
            continue
        want = allowed[key]
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            problems.append(
                Problem(
                    field=f"{where}.{key}",
                    value=json.dumps(value),
                    code=ProblemCode.INVALID_TYPE,
                    message=f"{key} must be {want.__name__}, got {json.dumps(value)}",
                )
            )
        elif want in (int, float) and key != "peak_threshold" and value <= 0:
            problems.append(
                Problem(
                    field=f"{where}.{key}",
                    value=str(value),
                    code=ProblemCode.OUT_OF_RANGE,
                    message=f"{key} must be greater than 0",
                )
            )


def _check_template(template: str, where: str, problems: list[Problem]) -> None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        names = set()
        problems.append(
            Problem(
                field=where,
                value=template,
                code=ProblemCode.INVALID_VALUE,
                message=f"not a valid template: {exc}",
            )
        )
    unknown = sorted(names - set(PLACEHOLDERS))
    if unknown:
        problems.append(
            Problem(
                field=where,
                value=template,
                code=ProblemCode.INVALID_VALUE,
                message=(
                    f"unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
                    f"use {', '.join('{' + n + '}' for n in PLACEHOLDERS)}"
                ),
            )
        )


def load_job(path: str | Path) -> Pipeline:
    """Read, check and resolve a job file; JobRejected lists every problem found."""
    source = Path(path).expanduser().resolve()
    data = _read_mapping(source, "job file", "job")
    try:
        job = JobFile.model_validate(data)
    except ValidationError as exc:
        raise JobRejected(problems_from_validation_error(exc)) from None
    base = source.parent
    # Plain str keys from here on (the model checked they are stage names).
    job_configs: dict[str, str] = {str(k): v for k, v in job.configs.items()}
    job_stages: dict[str, StageSettings] = {str(k): v for k, v in job.stages.items()}
    problems: list[Problem] = []
    try:
        registry = load_registry(_local(base, job.datasets_registry))
    except JobRejected as exc:
        problems.extend(exc.problems)
        registry = {}

    names = sorted(registry) if job.datasets == "all" else list(job.datasets)
    for index, name in enumerate(names):
        if registry and name not in registry:
            problems.append(
                Problem(
                    field=f"datasets[{index}]",
                    value=name,
                    code=ProblemCode.INVALID_VALUE,
                    message=(
                        f"dataset {name!r} is not in the registry; known: "
                        f"{', '.join(sorted(registry)) or '(none)'}"
                    ),
                )
            )
    if len(set(names)) != len(names):
        problems.append(
            Problem(
                field="datasets",
                value=", ".join(names),
                code=ProblemCode.CONFLICT,
                message="a dataset is named twice",
            )
        )
    if job.datasets == "all" and not registry and not problems:
        problems.append(
            Problem(
                field="datasets",
                value="all",
                code=ProblemCode.INVALID_VALUE,
                message="the registry names no datasets",
            )
        )

    stages: list[str] = list(dict.fromkeys(job.training_types))
    if len(stages) != len(job.training_types):
        problems.append(
            Problem(
                field="training_types",
                value=", ".join(job.training_types),
                code=ProblemCode.CONFLICT,
                message="a stage is named twice",
            )
        )
    training = [s for s in stages if s != "track"]
    for key in job_stages:
        if key not in stages:
            problems.append(
                Problem(
                    field=f"stages.{key}",
                    value=key,
                    code=ProblemCode.CONFLICT,
                    message=f"settings for {key!r}, which is not in training_types",
                )
            )
    for key in job_configs:
        if key not in training:
            problems.append(
                Problem(
                    field=f"configs.{key}",
                    value=job_configs[key],
                    code=ProblemCode.CONFLICT,
                    message=f"a config for {key!r}, which is not in training_types",
                )
            )

    configs: dict[str, Path] = {}
    for stage in training:
        settings = job_stages.get(stage)
        raw = (settings.config if settings else None) or job_configs.get(stage)
        where = f"stages.{stage}.config" if settings and settings.config else f"configs.{stage}"
        if raw is None:
            problems.append(
                Problem(
                    field=f"configs.{stage}",
                    value=None,
                    code=ProblemCode.MISSING_FIELD,
                    message=f"stage {stage!r} needs a sleap-nn config: set configs.{stage}",
                )
            )
            continue
        config = _local(base, raw)
        if not config.is_file():
            problems.append(
                Problem(
                    field=where,
                    value=raw,
                    code=ProblemCode.PATH_NOT_FOUND,
                    message=f"Path not found: {config}",
                )
            )
            continue
        configs[stage] = config

    # Overrides: job-wide ones apply to the stages they make sense for.
    wide_allowed = {**TRAIN_ARGS, **TRACK_ARGS} if "track" in stages else dict(TRAIN_ARGS)
    if not training:
        wide_allowed = dict(TRACK_ARGS)
    _check_args(job.extra_args, wide_allowed, "extra_args", problems)
    for stage, settings in job_stages.items():
        allowed = TRACK_ARGS if stage == "track" else TRAIN_ARGS
        _check_args(settings.extra_args, allowed, f"stages.{stage}.extra_args", problems)

    for manifest_key, template in job.dependency_manifests.items():
        if manifest_key != "default" and manifest_key not in stages:
            problems.append(
                Problem(
                    field=f"dependency_manifests.{manifest_key}",
                    value=template,
                    code=ProblemCode.CONFLICT,
                    message=f"keys are 'default' or a stage of this job ({', '.join(stages)})",
                )
            )
        _check_template(template, f"dependency_manifests.{manifest_key}", problems)

    if "track" in stages:
        has_manifest = "track" in job.dependency_manifests or "default" in job.dependency_manifests
        if not training and not has_manifest:
            problems.append(
                Problem(
                    field="training_types",
                    value=", ".join(stages),
                    code=ProblemCode.MISSING_FIELD,
                    message=(
                        "track needs models: train them in this job (e.g. centroid and "
                        "centered_instance) or name a manifest in dependency_manifests"
                    ),
                )
            )
        if "centered_instance" in training and "centroid" not in training and not has_manifest:
            problems.append(
                Problem(
                    field="training_types",
                    value=", ".join(stages),
                    code=ProblemCode.MISSING_FIELD,
                    message=(
                        "top-down tracking needs a centroid model too: add 'centroid' or pin "
                        "one with dependency_manifests"
                    ),
                )
            )

    if problems:
        raise JobRejected(problems)

    pipeline = Pipeline(
        name=job.name, source=source, spec=job.model_dump(), datasets=[registry[n] for n in names]
    )
    for dataset in pipeline.datasets:
        for stage in stages:
            settings = job_stages.get(stage, StageSettings())
            allowed = TRACK_ARGS if stage == "track" else TRAIN_ARGS
            args = {k: v for k, v in job.extra_args.items() if k in allowed}
            args.update(settings.extra_args)
            pipeline.stages.append(
                Stage(
                    job=job.name,
                    dataset=dataset,
                    name=stage,
                    config=configs.get(stage),
                    extra_args=args,
                    resources=settings.slurm.over(job.slurm),
                    setup=list(settings.setup if settings.setup is not None else job.setup),
                    after=tuple(training) if stage == "track" else (),
                    manifest=job.dependency_manifests.get(stage)
                    or job.dependency_manifests.get("default"),
                    optimize_batch_size=job.optimize_batch_size and stage != "track",
                )
            )
    return pipeline
