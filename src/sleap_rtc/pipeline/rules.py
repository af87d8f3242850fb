"""The rules of a job file beyond its fields' types, each one checker.

:data:`CHECKS` runs on a :class:`Draft` (a job file that parsed, with its registry
read); every checker returns its problems, so one rejection names all of them,
each with the field, the value and what to do.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sleap_rtc.jobs.options import JobOption, job_file_options
from sleap_rtc.jobs.problems import JobRejected, Problem, ProblemCode
from sleap_rtc.pipeline.datasets import NAME, Dataset, load_registry, local_path
from sleap_rtc.pipeline.extra_args import check_args
from sleap_rtc.pipeline.graph import check_needs
from sleap_rtc.pipeline.jobfile import (
    PLACEHOLDERS,
    STAGES,
    JobFile,
    Scope,
    StageSettings,
    stage_kind,
)


@dataclass(frozen=True)
class Draft:
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
    #: training_types without repeats, in order, then the command stages;
    #: ``training`` is the training stages alone, ``commands`` the command stages.
    stages: list[str]
    training: list[str]
    commands: list[str]
    configs: dict[str, str]
    settings: dict[str, StageSettings]

    @classmethod
    def of(cls, job: JobFile, base: Path) -> Draft:
        problems: list[Problem] = []
        try:
            used = None if job.datasets == "all" else set(job.datasets)
            loaded = load_registry(local_path(base, job.datasets_registry), only=used)
            registry, known = loaded.datasets, loaded.names
        except JobRejected as exc:
            problems.extend(exc.problems)
            registry, known = {}, []
        builtin = list(dict.fromkeys(str(s) for s in job.training_types))
        commands = [k for k, v in job.stages.items() if k not in STAGES and v.command is not None]
        return cls(
            job=job,
            base=base,
            registry=registry,
            known=known,
            registry_problems=problems,
            names=sorted(registry) if job.datasets == "all" else list(job.datasets),
            stages=[*builtin, *commands],
            training=[s for s in builtin if s != "track"],
            commands=commands,
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
        if stage not in STAGES:
            return {}
        allowed = job_file_options(stage_kind(stage))
        args = {k: v for k, v in self.job.extra_args.items() if k in allowed}
        settings = self.settings.get(stage)
        if settings is not None:
            args.update(settings.extra_args)
        return args

    def manifest_for(self, stage: str) -> str | None:
        if stage in self.commands:
            return None
        manifests = self.job.dependency_manifests
        return manifests.get(stage) or manifests.get("default")

    def settings_of(self, stage: str) -> StageSettings:
        return self.settings.get(stage) or StageSettings()

    def needs_of(self, stage: str) -> list[str]:
        """The stages ``stage`` waits for: its ``needs``, else (track) the training stages."""
        settings = self.settings.get(stage)
        if settings is not None and settings.needs is not None:
            return list(dict.fromkeys(settings.needs))
        return list(self.training) if stage == "track" else []

    def scope_of(self, stage: str) -> Scope:
        return self.settings_of(stage).scope if stage in self.commands else "dataset"


def _problem(field: str, value: str | None, code: ProblemCode, message: str) -> Problem:
    return Problem(field=field, value=value, code=code, message=message)


def _registry_readable(d: Draft) -> list[Problem]:
    return d.registry_problems


def _datasets_known(d: Draft) -> list[Problem]:
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


def _stages_named_once(d: Draft) -> list[Problem]:
    """Each stage named once; settings and configs only for stages the job runs."""
    problems = []
    if not d.stages:
        problems.append(
            _problem(
                "training_types",
                None,
                ProblemCode.MISSING_FIELD,
                "the job runs no stage: list built-in stages in training_types "
                f"({', '.join(STAGES)}) or define command stages in stages",
            )
        )
    if len(d.stages) - len(d.commands) != len(d.job.training_types):
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
        if key in STAGES and key not in d.stages
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


def _configs_exist(d: Draft) -> list[Problem]:
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


def _overrides_valid(d: Draft) -> list[Problem]:
    """Job-wide overrides may set any option of the kinds of stage the job runs."""
    kinds = {stage_kind(s) for s in d.stages if s in STAGES}
    wide: dict[str, JobOption] = {}
    for kind in kinds:
        wide.update(job_file_options(kind))
    problems = check_args(d.job.extra_args, wide, "extra_args")
    for stage, settings in d.settings.items():
        if stage not in STAGES:  # a command stage: _command_stages_valid
            continue
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


def _manifests_valid(d: Draft) -> list[Problem]:
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


def _track_has_models(d: Draft) -> list[Problem]:
    """Track needs its models: trained in this job (top-down: both) or pinned by a manifest."""
    manifests = d.job.dependency_manifests
    if "track" not in d.stages or "track" in manifests or "default" in manifests:
        return []
    problems = []
    models = [n for n in d.needs_of("track") if n in d.training]
    if not models:
        problems.append(
            _problem(
                "training_types",
                ", ".join(d.stages),
                ProblemCode.MISSING_FIELD,
                "track needs models: train them in this job (e.g. centroid and "
                "centered_instance, and track needs them) or name a manifest in "
                "dependency_manifests",
            )
        )
    if "centered_instance" in models and "centroid" not in models:
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


def _command_stages_valid(d: Draft) -> list[Problem]:
    """Other names in ``stages`` are command stages (with a ``command``); only they set
    command-stage fields, and their outputs stay in their artifacts folder."""
    problems = []
    for key, settings in d.settings.items():
        where = f"stages.{key}"
        if key in STAGES:
            wrong = [
                name
                for name, unset in (
                    ("command", settings.command is None),
                    ("scope", settings.scope == "dataset"),
                    ("outputs", not settings.outputs),
                    ("dependency", settings.dependency == "afterok"),
                )
                if not unset
            ]
            problems += [
                _problem(
                    f"{where}.{name}",
                    str(getattr(settings, name)),
                    ProblemCode.CONFLICT,
                    f"{name} is for command stages; {key!r} is a built-in stage"
                    + (
                        " (it needs its parents' outputs, so it waits with afterok)"
                        if name == "dependency"
                        else ""
                    ),
                )
                for name in wrong
            ]
            continue
        if settings.command is None:
            problems.append(
                _problem(
                    f"{where}.command",
                    None,
                    ProblemCode.MISSING_FIELD,
                    f"{key!r} is not a built-in stage ({', '.join(STAGES)}); give it a "
                    "command to make it a command stage",
                )
            )
        if not NAME.match(key) or "/" in key:
            problems.append(
                _problem(
                    where,
                    key,
                    ProblemCode.INVALID_VALUE,
                    "a stage name is 1-64 letters, digits, '_', '-' or '.', starting with "
                    "a letter or digit (it names folders and scripts)",
                )
            )
        if settings.config is not None:
            problems.append(
                _problem(
                    f"{where}.config",
                    settings.config,
                    ProblemCode.CONFLICT,
                    "a command stage runs its command, not a sleap-nn config",
                )
            )
        if settings.extra_args:
            problems.append(
                _problem(
                    f"{where}.extra_args",
                    ", ".join(settings.extra_args),
                    ProblemCode.CONFLICT,
                    "a command stage takes no sleap-nn options; put them in its command",
                )
            )
        for index, output in enumerate(settings.outputs):
            path = Path(output)
            if path.is_absolute() or ".." in path.parts or not output.strip():
                problems.append(
                    _problem(
                        f"{where}.outputs[{index}]",
                        output,
                        ProblemCode.INVALID_PATH,
                        "outputs are files the command writes in its artifacts folder "
                        "($ARTIFACTS): relative paths without '..'",
                    )
                )
    return problems


def _needs_valid(d: Draft) -> list[Problem]:
    """Needs name stages of this job, without cycles; afterany and afternotok need some."""
    needs = {key: list(settings.needs) for key, settings in d.settings.items() if settings.needs}
    if "track" in d.stages and "track" not in needs:  # its default: the training stages
        needs["track"] = d.needs_of("track")
    problems = check_needs(d.stages, needs)
    for key in d.commands:
        settings = d.settings[key]
        if settings.dependency != "afterok" and not settings.needs:
            problems.append(
                _problem(
                    f"stages.{key}.dependency",
                    settings.dependency,
                    ProblemCode.MISSING_FIELD,
                    f"{settings.dependency} waits for the stages in needs: set stages.{key}.needs",
                )
            )
        if settings.dependency == "aftercorr" and (
            settings.needs != ["track"] or settings.scope != "dataset" or settings.retries
        ):
            problems.append(
                _problem(
                    f"stages.{key}.dependency",
                    "aftercorr",
                    ProblemCode.CONFLICT,
                    "aftercorr runs a stage once per tracked file, each after its file's "
                    'track task: it needs exactly ["track"], scope dataset, and no retries',
                )
            )
        if settings.dependency == "afternotok" and settings.singleton:
            problems.append(
                _problem(
                    f"stages.{key}.singleton",
                    "true",
                    ProblemCode.CONFLICT,
                    "SLURM can't make an afternotok stage a singleton too; drop one",
                )
            )
    return problems


def _arrays_valid(d: Draft) -> list[Problem]:
    """Only track runs as an array (when its dataset lists several files), and an array
    isn't retried (an attempt can't yet tell which of its tasks failed)."""
    arrays = [n for n in d.names if n in d.registry and len(d.registry[n].track) > 1]
    track = d.settings.get("track")
    retried = (
        []
        if track is None or not track.retries or not arrays
        else [
            _problem(
                "stages.track.retries",
                str(track.retries),
                ProblemCode.CONFLICT,
                f"track over several files runs as an array job (dataset {arrays[0]!r}), which "
                "is not retried; drop retries (a rerun submits only the files that failed)",
            )
        ]
    )
    return retried + [
        _problem(
            f"stages.{key}.array_parallelism",
            str(settings.array_parallelism),
            ProblemCode.CONFLICT,
            "array_parallelism is for track, which runs as an array job when its dataset's "
            "track lists several files",
        )
        for key, settings in d.settings.items()
        if settings.array_parallelism is not None and key != "track"
    ]


#: The rules of a job file beyond its fields' types, in the order their problems are listed.
CHECKS: tuple[Callable[[Draft], list[Problem]], ...] = (
    _registry_readable,
    _datasets_known,
    _stages_named_once,
    _command_stages_valid,
    _needs_valid,
    _configs_exist,
    _overrides_valid,
    _manifests_valid,
    _track_has_models,
    _arrays_valid,
)
