"""Validation before execution: turn a spec into a plan the engine can run.

:func:`check_fields` holds the rules that need no filesystem (ranges, frames,
names) and may run anywhere, the client included. :func:`plan_train` and
:func:`plan_track` run on the worker: they add the path rules (inside a mount,
exists, right kind of file, config parses, labels named in configs exist) and
return a plan whose paths are all resolved, so what runs is exactly what was
checked. Both collect every problem before raising :class:`JobRejected`. The
rules for one path are in :mod:`sleap_rtc.jobs.paths`; the ranges of options come
from the option table (:mod:`sleap_rtc.jobs.options`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sleap_rtc.jobs import config_keys
from sleap_rtc.jobs.frames import FrameRange, FramesError, parse_frames
from sleap_rtc.jobs.labels import LabelsReader, check_track_data
from sleap_rtc.jobs.mounts import Mounts
from sleap_rtc.jobs.options import options_for
from sleap_rtc.jobs.paths import (
    DATA_SUFFIXES,
    MODEL_LAYOUTS,
    checkpoint,
    existing,
    model_folder,
    model_problem,
    plan_output,
    trusted,
)
from sleap_rtc.jobs.problems import JobRejected, Problem, ProblemCode
from sleap_rtc.jobs.specs import SPEC_VERSION, TrackSpec, TrainSpec

#: Largest config YAML the worker will parse.
MAX_CONFIG_BYTES = 1024 * 1024

RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
CONFIG_SECTIONS = ("data_config", "model_config", "trainer_config")


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without aliases: a few hundred bytes of nested ``*refs`` can expand to
    gigabytes once walked or written out (the "billion laughs"), and configs never
    need them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a config", event.start_mark
            )
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """Parse YAML the way the worker parses everything a peer wrote: safe, no aliases."""
    return yaml.load(text, Loader=_NoAliasLoader)


@dataclass(frozen=True)
class ConfigPlan:
    """One model to train: its config and the label files it will read."""

    config_path: Path
    stem: str
    #: Resolved label paths named inside the config (used when not overridden).
    train_labels: list[Path] = field(default_factory=list)
    val_labels: list[Path] = field(default_factory=list)
    #: Epochs the config asks for (sleap-nn's default when it names none).
    max_epochs: int = 100
    #: The config as parsed; the worker writes its effective version for sleap-nn.
    data: dict[str, Any] = field(default_factory=dict)
    #: Other path keys of the config, resolved and checked (dotted key -> value with
    #: every path replaced by its resolved form).
    paths: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainPlan:
    spec: TrainSpec
    configs: list[ConfigPlan]
    labels_path: Path | None
    val_labels_path: Path | None
    resume_ckpt_path: Path | None


@dataclass(frozen=True)
class TrackPlan:
    spec: TrackSpec
    data_path: Path
    model_paths: list[Path]
    output_path: Path
    frames: list[FrameRange] | None


def _out_of_range(name: str, value: object, rule: str) -> Problem:
    return Problem(
        field=name,
        value=str(value),
        code=ProblemCode.OUT_OF_RANGE,
        message=f"{name} is {value}; it must be {rule}",
    )


def check_fields(spec: TrainSpec | TrackSpec) -> list[Problem]:
    """Rules that need no filesystem. Returns every problem found (maybe none)."""
    problems: list[Problem] = []
    if spec.version != SPEC_VERSION:
        problems.append(
            Problem(
                field="version",
                value=str(spec.version),
                code=ProblemCode.UNSUPPORTED_VERSION,
                message=(
                    f"spec version {spec.version} is not supported by this worker "
                    f"(it speaks version {SPEC_VERSION}); update sleap-rtc on one side"
                ),
            )
        )
    for option in options_for(spec.kind):
        value = getattr(spec, option.field)
        if option.range is not None and value is not None and not option.range.admits(value):
            problems.append(_out_of_range(option.field, value, option.range.rule))
    if isinstance(spec, TrainSpec):
        if spec.run_name is not None and not RUN_NAME_PATTERN.match(spec.run_name):
            problems.append(
                Problem(
                    field="run_name",
                    value=spec.run_name,
                    code=ProblemCode.INVALID_VALUE,
                    message=(
                        "run_name must be 1-100 letters, digits, '.', '_' or '-' and start "
                        "with a letter or digit (it names a folder on the worker)"
                    ),
                )
            )
    else:
        if spec.frames is not None:
            try:
                parse_frames(spec.frames)
            except FramesError as exc:
                problems.append(
                    Problem(
                        field="frames",
                        value=spec.frames,
                        code=ProblemCode.FRAMES_INVALID,
                        message=str(exc),
                    )
                )
            if spec.only_suggested_frames:
                problems.append(
                    Problem(
                        field="frames",
                        value=spec.frames,
                        code=ProblemCode.CONFLICT,
                        message="use either frames or only_suggested_frames, not both",
                    )
                )
    return problems


# --------------------------------------------------------------------------- paths


def _config_field(spec: TrainSpec, index: int) -> str:
    # The user documents call a single config "config_path".
    return "config_path" if len(spec.config_paths) == 1 else f"config_paths[{index}]"


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _load_config(name: str, raw: str, real: Path, problems: list[Problem]) -> dict[str, Any] | None:
    def invalid(message: str) -> None:
        problems.append(
            Problem(field=name, value=raw, code=ProblemCode.CONFIG_INVALID, message=message)
        )

    size = real.stat().st_size
    if size > MAX_CONFIG_BYTES:
        invalid(f"{raw} is {size} bytes; a sleap-nn config is expected to be under 1 MiB")
        return None
    try:
        data = load_yaml(real.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or "not valid YAML"
        if "aliases" not in str(what):
            what = "not valid YAML"
        invalid(f"{raw} is {what}{where}; fix the file or choose another config")
        return None
    except UnicodeDecodeError:
        invalid(f"{raw} is not a text file; choose a sleap-nn config YAML")
        return None
    if not isinstance(data, dict):
        invalid(
            f"{raw} does not hold a sleap-nn config (expected a mapping with "
            f"{', '.join(CONFIG_SECTIONS)})"
        )
        return None
    missing = [s for s in CONFIG_SECTIONS if not isinstance(data.get(s), dict)]
    if missing:
        invalid(f"{raw} is missing the section(s) {', '.join(missing)} of a sleap-nn config")
        return None
    return data


def _config_labels(
    spec: TrainSpec,
    mounts: Mounts,
    config_raw: str,
    config_real: Path,
    data: dict[str, Any],
    key: str,
    override: str | None,
    field_name: str,
    option: str,
    problems: list[Problem],
) -> list[tuple[Path, str]]:
    """Check the label files a config names under ``data_config.<key>``: each found
    file with the path the config gave it."""
    if override is not None:
        return []
    entries = _as_list(data["data_config"].get(key))
    if not entries and key == "train_labels_path":
        problems.append(
            Problem(
                field=field_name,
                value=None,
                code=ProblemCode.MISSING_FIELD,
                message=(
                    f"{config_raw} names no data_config.{key} and no {option} was given; "
                    f"pass {option} PATH"
                ),
            )
        )
    found: list[tuple[Path, str]] = []
    for entry in entries:
        if not isinstance(entry, str):
            problems.append(
                Problem(
                    field=field_name,
                    value=str(entry),
                    code=ProblemCode.CONFIG_INVALID,
                    message=f"data_config.{key} in {config_raw} must hold paths, got {entry!r}",
                )
            )
            continue
        before = len(problems)
        real = existing(mounts, field_name, entry, problems, want="file", base=config_real.parent)
        if len(problems) > before:
            # Say where the path came from and how to override it.
            last = problems[-1]
            problems[-1] = last.model_copy(
                update={
                    "message": f"{last.message} (named in {config_raw} as data_config.{key}; "
                    f"pass {option} to override)"
                }
            )
        if real is not None:
            found.append((real, entry))
    return found


def _config_paths(
    index: int,
    config_raw: str,
    config_real: Path,
    data: dict[str, Any],
    mounts: Mounts,
    problems: list[Problem],
) -> dict[str, Any]:
    """Check every key of a config that can make sleap-nn touch a path.

    Labels are checked by :func:`_config_labels` (they may be overridden); keys the
    worker sets are ignored here; the rest are resolved against the config's folder
    and checked inside the mounts. Returns the resolved values by dotted key.
    """
    base = config_real.parent
    resolved: dict[str, Any] = {}

    def problem(key: str, value: Any, code: ProblemCode, message: str) -> None:
        problems.append(
            Problem(
                field=f"config[{index}].{key}",
                value=None if value is None else str(value)[:500],
                code=code,
                message=f"{message} (in {config_raw})",
            )
        )

    for key, value in config_keys.leaves(data):
        if config_keys.has_interpolation(value):
            problem(
                key,
                value,
                ProblemCode.CONFIG_INVALID,
                f"{key} uses an interpolation (${{...}}), which a worker does not resolve; "
                "write the value out",
            )
            continue
        rule = config_keys.rule_for(key)
        if rule in ("labels", "worker") or value is None:
            continue
        if rule is None:
            if config_keys.looks_like_path_key(key) and not isinstance(value, bool | int | float):
                problem(
                    key,
                    value,
                    ProblemCode.UNKNOWN_FIELD,
                    f"{key} is not a sleap-nn setting sleap-rtc knows, and its name says it "
                    "takes a path; remove it (a worker runs only paths it checked)",
                )
            continue
        entries = value if isinstance(value, list) else [value]
        if not all(isinstance(e, str) for e in entries) or (
            rule == "checkpoint" and isinstance(value, list)
        ):
            problem(key, value, ProblemCode.CONFIG_INVALID, f"{key} must be a path")
            continue
        field_name = f"config[{index}].{key}"
        found: list[Path] = []
        for entry in entries:
            before = len(problems)
            if rule == "checkpoint":
                real = checkpoint(mounts, field_name, entry, problems, base=base)
            else:
                real = existing(mounts, field_name, entry, problems, want="file", base=base)
                if real is not None and real.suffix.lower() not in DATA_SUFFIXES:
                    problems.append(
                        Problem(
                            field=field_name,
                            value=entry,
                            code=ProblemCode.WRONG_FILE_TYPE,
                            message=f"{entry} is not a labels (.slp) or video file",
                        )
                    )
                    real = None
            for i in range(before, len(problems)):
                last = problems[i]
                problems[i] = last.model_copy(
                    update={"message": f"{last.message} (named in {config_raw} as {key})"}
                )
            if real is not None:
                found.append(real)
        if len(found) == len(entries):
            resolved[key] = [str(p) for p in found] if isinstance(value, list) else str(found[0])
    return resolved


def plan_train(spec: TrainSpec, mounts: Mounts) -> TrainPlan:
    """Check a train spec on the worker; raise :class:`JobRejected` with every problem."""
    problems = check_fields(spec)
    labels = val_labels = resume = None
    read = LabelsReader(mounts, problems)
    if spec.labels_path is not None:
        labels = existing(mounts, "labels_path", spec.labels_path, problems, want="file")
        read(labels, "labels_path", spec.labels_path)
    if spec.val_labels_path is not None:
        val_labels = existing(
            mounts, "val_labels_path", spec.val_labels_path, problems, want="file"
        )
        read(val_labels, "val_labels_path", spec.val_labels_path)
    if spec.resume_ckpt_path is not None:
        resume = checkpoint(
            mounts, "resume_ckpt_path", spec.resume_ckpt_path, problems, suffixes=(".ckpt",)
        )
    configs: list[ConfigPlan] = []
    for index, raw in enumerate(spec.config_paths):
        name = _config_field(spec, index)
        real = existing(mounts, name, raw, problems, want="file")
        if real is None:
            continue
        data = _load_config(name, raw, real, problems)
        if data is None:
            continue
        train = _config_labels(
            spec,
            mounts,
            raw,
            real,
            data,
            "train_labels_path",
            spec.labels_path,
            "labels_path",
            "--labels",
            problems,
        )
        val = _config_labels(
            spec,
            mounts,
            raw,
            real,
            data,
            "val_labels_path",
            spec.val_labels_path,
            "val_labels_path",
            "--val-labels",
            problems,
        )
        for found, entry in [*train, *val]:
            read(found, "labels_path" if (found, entry) in train else "val_labels_path", entry)
        paths = _config_paths(index, raw, real, data, mounts, problems)
        epochs = data["trainer_config"].get("max_epochs", 100)
        configs.append(
            ConfigPlan(
                config_path=real,
                stem=real.stem,
                train_labels=[found for found, _ in train],
                val_labels=[found for found, _ in val],
                max_epochs=epochs if isinstance(epochs, int) else 100,
                data=data,
                paths=paths,
            )
        )
    if problems:
        raise JobRejected(problems)
    return TrainPlan(
        spec=spec,
        configs=configs,
        labels_path=labels,
        val_labels_path=val_labels,
        resume_ckpt_path=resume,
    )


def plan_track(spec: TrackSpec, mounts: Mounts) -> TrackPlan:
    """Check a track spec on the worker; raise :class:`JobRejected` with every problem."""
    problems = check_fields(spec)
    data = existing(mounts, "data_path", spec.data_path, problems, want="file")
    if data is not None and data.suffix.lower() not in DATA_SUFFIXES:
        problems.append(
            Problem(
                field="data_path",
                value=spec.data_path,
                code=ProblemCode.WRONG_FILE_TYPE,
                message=(
                    f"{spec.data_path} is not a labels (.slp) or video file "
                    f"({', '.join(DATA_SUFFIXES)})"
                ),
            )
        )
        data = None
    models: list[Path] = []
    for index, raw in enumerate(spec.model_paths):
        name = "model_paths" if len(spec.model_paths) == 1 else f"model_paths[{index}]"
        real = existing(mounts, name, raw, problems, want="any")
        if real is None:
            continue
        real = model_folder(real)
        if real.is_file():
            problems.append(
                Problem(
                    field=name,
                    value=raw,
                    code=ProblemCode.NOT_A_DIRECTORY,
                    message=f"{raw} is a file; name the model folder (it holds {MODEL_LAYOUTS})",
                )
            )
            continue
        why = model_problem(real)
        if why is not None:
            problems.append(
                Problem(
                    field=name, value=raw, code=ProblemCode.NOT_A_MODEL, message=f"{raw}: {why}"
                )
            )
            continue
        if not trusted(mounts, name, raw, real, problems):
            continue
        models.append(real)
    output = plan_output(spec, mounts, data, problems)
    frames = None
    if spec.frames is not None and not any(p.field == "frames" for p in problems):
        frames = parse_frames(spec.frames)
    if data is not None:
        check_track_data(spec, data, frames, mounts, problems)
    if problems:
        raise JobRejected(problems)
    assert data is not None and output is not None
    return TrackPlan(
        spec=spec, data_path=data, model_paths=models, output_path=output, frames=frames
    )
