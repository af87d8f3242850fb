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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sleap_rtc.jobs.configs import config_labels, config_paths, load_config, schema_problems
from sleap_rtc.jobs.devices import Devices, check_gpus
from sleap_rtc.jobs.frames import FrameRange, FramesError, parse_frames
from sleap_rtc.jobs.labels import LabelsInfo, LabelsReader, check_track_data
from sleap_rtc.jobs.mounts import Mounts
from sleap_rtc.jobs.options import options_for
from sleap_rtc.jobs.overrides import apply_overrides, check_overrides
from sleap_rtc.jobs.pathmaps import PathMap, check_pairs, job_maps
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

RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


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
    #: Labels files whose videos are not all read as stored: stored name → checked path.
    #: sleap-nn reads a copy of each with these paths (the user's file is not changed).
    video_maps: dict[Path, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class TrackPlan:
    spec: TrackSpec
    data_path: Path
    model_paths: list[Path]
    output_path: Path
    frames: list[FrameRange] | None
    #: The data's videos that are not read as stored (see :attr:`TrainPlan.video_maps`).
    video_map: dict[str, str] = field(default_factory=dict)


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
        if option.choices is not None and value is not None and value not in option.choices:
            problems.append(
                Problem(
                    field=option.field,
                    value=str(value),
                    code=ProblemCode.INVALID_VALUE,
                    message=(
                        f"{option.field} is {value!r}; it must be one of "
                        f"{', '.join(option.choices)} ({option.flag})"
                    ),
                )
            )
    problems += check_pairs("path_map", spec.path_map)
    if isinstance(spec, TrainSpec):
        problems += check_overrides(spec.overrides)
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
        problems += _track_conflicts(spec)
    return problems


#: Options of sleap-nn's tracker: they do something only with ``tracking``.
TRACKER_FIELDS = (
    "max_tracks",
    "tracking_window_size",
    "candidates_method",
    "track_matching_method",
    "use_flow",
    "tracking_target_instance_count",
    "post_connect_single_breaks",
)
#: Frame filters of a .slp, in the order sleap-nn applies them (the first set one wins).
FRAME_FILTERS = (
    "only_labeled_frames",
    "only_suggested_frames",
    "exclude_user_labeled",
    "only_predicted_frames",
)


def _set(value: object) -> bool:
    return value is not None and value is not False


def _track_conflicts(spec: TrackSpec) -> list[Problem]:
    """Track options that sleap-nn refuses together, or that do nothing without another."""
    problems: list[Problem] = []

    def conflict(field: str, value: object, message: str) -> None:
        problems.append(
            Problem(field=field, value=str(value), code=ProblemCode.CONFLICT, message=message)
        )

    if not spec.tracking:
        for name in TRACKER_FIELDS:
            value = getattr(spec, name)
            if _set(value):
                conflict(
                    name,
                    value,
                    f"{name} is a tracker option and tracking is off; add --tracking, "
                    f"or leave {name} out",
                )
    elif spec.max_tracks is not None and spec.candidates_method == "fixed_window":
        conflict(
            "candidates_method",
            spec.candidates_method,
            "max_tracks works only with candidates_method local_queues (fixed_window "
            "ignores it); use --candidates-method local_queues, or leave it out",
        )
    if (
        spec.tracking
        and spec.post_connect_single_breaks
        and spec.tracking_target_instance_count is None
        and spec.max_instances is None
    ):
        conflict(
            "post_connect_single_breaks",
            True,
            "post_connect_single_breaks needs the number of animals per frame; add "
            "--tracking-target-instance-count N (or --max-instances N)",
        )
    if not spec.filter_overlapping:
        for name in ("filter_overlapping_method", "filter_overlapping_threshold"):
            value = getattr(spec, name)
            if value is not None:
                conflict(
                    name,
                    value,
                    f"{name} applies to filter_overlapping, which is off; add "
                    f"--filter-overlapping, or leave {name} out",
                )
    chosen = [name for name in FRAME_FILTERS if getattr(spec, name)]
    if spec.only_labeled_frames and spec.exclude_user_labeled:
        conflict(
            "exclude_user_labeled",
            True,
            "only_labeled_frames and exclude_user_labeled leave no frames to predict "
            "(sleap-nn refuses the pair); choose one",
        )
    elif len(chosen) > 1:
        conflict(
            chosen[1],
            True,
            f"{' and '.join(chosen)} are frame filters, and sleap-nn applies only one "
            f"({chosen[0]}, the first set of {', '.join(FRAME_FILTERS)}); choose one",
        )
    return problems


# --------------------------------------------------------------------------- paths


def _config_field(spec: TrainSpec, index: int) -> str:
    # The user documents call a single config "config_path".
    return "config_path" if len(spec.config_paths) == 1 else f"config_paths[{index}]"


def _maps(
    spec: TrainSpec | TrackSpec, problems: list[Problem], worker: Sequence[PathMap]
) -> list[PathMap]:
    """The job's path maps (when they are well formed), then the worker's."""
    ok = not any(p.field.startswith("path_map") for p in problems)
    return [*(job_maps(spec.path_map) if ok else []), *worker]


#: Heads that learn animal identities from tracks (sleap-nn's multi-class models).
ID_HEADS = ("multi_class_bottomup", "multi_class_topdown")


def _id_needs_tracks(
    name: str,
    raw: str,
    data: dict[str, Any],
    infos: list[LabelsInfo | None],
    problems: list[Problem],
) -> None:
    """An ID (multi-class) model learns from tracks: its labels must have some."""
    heads = data["model_config"].get("head_configs")
    wanted = [h for h in ID_HEADS if isinstance(heads, dict) and heads.get(h) is not None]
    untracked = [i for i in infos if i is not None and i.tracks == 0]
    if wanted and untracked:
        problems.append(
            Problem(
                field=name,
                value=raw,
                code=ProblemCode.CONFLICT,
                message=(
                    f"{raw} trains an ID model ({wanted[0]}), which learns identities from "
                    "tracks, and its labels have none; assign tracks in SLEAP, or train a "
                    "model without identities (e.g. centered_instance)"
                ),
            )
        )


def plan_train(
    spec: TrainSpec,
    mounts: Mounts,
    worker_maps: Sequence[PathMap] = (),
    devices: Devices | None = None,
) -> TrainPlan:
    """Check a train spec on the worker; raise :class:`JobRejected` with every problem.

    ``worker_maps`` are the worker's own video path maps, tried after the job's;
    ``devices`` what it offers a job (``gpus`` is checked against it).
    """
    problems = check_fields(spec)
    problems += check_gpus(spec.gpus, devices or Devices())
    labels = val_labels = resume = None
    read = LabelsReader(mounts, problems, _maps(spec, problems, worker_maps))
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
        data = load_config(index, name, raw, real, problems)
        if data is None:
            continue
        bad = {p.field for p in problems if p.field.startswith("overrides[")}
        apply_overrides(
            data, [o for i, o in enumerate(spec.overrides) if f"overrides[{i}]" not in bad]
        )
        schema_problems(index, name, raw, data, problems)
        train = config_labels(
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
        val = config_labels(
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
        paths = config_paths(index, raw, real, data, mounts, problems)
        _id_needs_tracks(name, raw, data, [read.seen.get(f) for f, _ in train], problems)
        if labels is not None:
            _id_needs_tracks(name, raw, data, [read.seen.get(labels)], problems)
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
        video_maps=read.remaps(),
    )


def plan_track(spec: TrackSpec, mounts: Mounts, worker_maps: Sequence[PathMap] = ()) -> TrackPlan:
    """Check a track spec on the worker; raise :class:`JobRejected` with every problem.

    ``worker_maps`` are the worker's own video path maps, tried after the job's.
    """
    problems = check_fields(spec)
    maps = _maps(spec, problems, worker_maps)
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
    video_map: dict[str, str] = {}
    if data is not None:
        video_map = check_track_data(spec, data, frames, mounts, problems, maps)
    if problems:
        raise JobRejected(problems)
    assert data is not None and output is not None
    return TrackPlan(
        spec=spec,
        data_path=data,
        model_paths=models,
        output_path=output,
        frames=frames,
        video_map=video_map,
    )
