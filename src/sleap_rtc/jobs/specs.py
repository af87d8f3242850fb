"""Typed, versioned job specs: what a user asks a worker to run.

A spec only holds what the user said. Paths are strings as typed on the client
and mean paths on the *worker's* filesystem; they are checked and resolved there
(:mod:`sleap_rtc.jobs.validation`). Range rules (``max_epochs >= 1``…) are also
checked there, together with the paths, so one rejection lists every problem.

Specs round-trip through JSON::

    >>> spec = TrainSpec(config_paths=["/vast/project/centroid.yaml"], max_epochs=5)
    >>> parse_spec(spec.model_dump_json()) == spec
    True
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from sleap_rtc.jobs.options import options_for
from sleap_rtc.jobs.pathmaps import MAX_PATH_MAPS
from sleap_rtc.jobs.problems import JobRejected, Problem, ProblemCode

#: The spec version this code writes and reads. A worker rejects other versions
#: with UNSUPPORTED_VERSION instead of guessing.
SPEC_VERSION = 1

#: Limits on list fields, so a hostile spec can't make the worker do unbounded work.
MAX_CONFIGS = 8
MAX_MODELS = 4
#: Most ``--set KEY=VALUE`` overrides one train job may carry.
MAX_OVERRIDES = 64

#: Largest encoded spec accepted by :func:`parse_spec`.
MAX_SPEC_BYTES = 64 * 1024

_STRICT = ConfigDict(extra="forbid", frozen=True, str_max_length=8192)


class TrainSpec(BaseModel):
    """Train one or more sleap-nn models from config files on the worker.

    Several configs make a multi-model job (e.g. top-down: centroid then
    centered_instance), trained one after the other; the overrides apply to each.
    Each field but ``kind`` and ``version`` is one entry of :data:`~sleap_rtc.jobs.options.OPTIONS`.
    """

    model_config = _STRICT

    kind: Literal["train"] = "train"
    version: int = SPEC_VERSION
    config_paths: list[str] = Field(min_length=1, max_length=MAX_CONFIGS)
    labels_path: str | None = None
    val_labels_path: str | None = None
    #: ``[OLD, NEW]`` prefixes of the labels' video paths (:mod:`sleap_rtc.jobs.pathmaps`).
    path_map: list[tuple[str, str]] = Field(default_factory=list, max_length=MAX_PATH_MAPS)
    max_epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    gpus: int | None = None
    run_name: str | None = None
    resume_ckpt_path: str | None = None
    #: ``KEY=VALUE`` settings merged into every config (:mod:`sleap_rtc.jobs.overrides`).
    overrides: list[str] = Field(default_factory=list, max_length=MAX_OVERRIDES)
    wandb: bool = False
    #: Whether the server posts to webhooks when the job ends: None follows the
    #: webhooks set (:mod:`sleap_rtc.server.notify`); the worker only reports it.
    notify: bool | None = None


class TrackSpec(BaseModel):
    """Run inference with one or more trained models on a labels or video file.

    Each field but ``kind`` and ``version`` is one entry of :data:`~sleap_rtc.jobs.options.OPTIONS`.
    """

    model_config = _STRICT

    kind: Literal["track"] = "track"
    version: int = SPEC_VERSION
    data_path: str
    model_paths: list[str] = Field(min_length=1, max_length=MAX_MODELS)
    path_map: list[tuple[str, str]] = Field(default_factory=list, max_length=MAX_PATH_MAPS)
    output_path: str = "predictions.slp"
    batch_size: int | None = None
    peak_threshold: float | None = None
    only_suggested_frames: bool = False
    frames: str | None = None
    video_index: int | None = None
    only_labeled_frames: bool = False
    exclude_user_labeled: bool = False
    only_predicted_frames: bool = False
    max_instances: int | None = None
    input_scale: float | None = None
    video_dataset: str | None = None
    video_input_format: str | None = None
    #: ``slp`` or ``analysis_h5`` (:func:`sleap_rtc.jobs.paths.plan_output` names the file).
    output_format: str = "slp"
    filter_overlapping: bool = False
    filter_overlapping_method: str | None = None
    filter_overlapping_threshold: float | None = None
    filter_min_visible_nodes: int | None = None
    filter_min_visible_node_fraction: float | None = None
    filter_min_mean_node_score: float | None = None
    filter_min_instance_score: float | None = None
    filter_min_centroid_distance: float | None = None
    tracking: bool = False
    max_tracks: int | None = None
    tracking_window_size: int | None = None
    candidates_method: str | None = None
    track_matching_method: str | None = None
    use_flow: bool = False
    tracking_target_instance_count: int | None = None
    post_connect_single_breaks: bool = False
    overwrite: bool = False
    notify: bool | None = None


JobSpec = Annotated[TrainSpec | TrackSpec, Field(discriminator="kind")]

_ADAPTER: TypeAdapter[TrainSpec | TrackSpec] = TypeAdapter(JobSpec)

_PYDANTIC_CODES = {
    "missing": ProblemCode.MISSING_FIELD,
    "extra_forbidden": ProblemCode.UNKNOWN_FIELD,
    "too_short": ProblemCode.OUT_OF_RANGE,
    "too_long": ProblemCode.OUT_OF_RANGE,
    "string_too_long": ProblemCode.OUT_OF_RANGE,
}


def _field_name(loc: tuple[int | str, ...]) -> str:
    # Drop the discriminator tag pydantic puts first ("train"/"track").
    parts = list(loc[1:] if loc and loc[0] in ("train", "track") else loc)
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "spec"


def problems_from_validation_error(error: ValidationError) -> list[Problem]:
    """Turn pydantic's errors into :class:`Problem` entries (all of them)."""
    problems = []
    for item in error.errors():
        field = _field_name(tuple(item["loc"]))
        err_type = item["type"]
        code = _PYDANTIC_CODES.get(err_type, ProblemCode.INVALID_TYPE)
        value = item.get("input")
        shown = None if code is ProblemCode.MISSING_FIELD else _short(value)
        if err_type == "union_tag_invalid" or err_type == "union_tag_not_found":
            field, code = "kind", ProblemCode.INVALID_VALUE
            message = "kind must be 'train' or 'track'"
            shown = _short(value.get("kind") if isinstance(value, dict) else value)
        elif code is ProblemCode.MISSING_FIELD:
            message = f"{field} is required"
        elif code is ProblemCode.UNKNOWN_FIELD:
            message = f"unknown field {field!r}; check the spelling against the job options"
        else:
            message = f"{item['msg']} (got {shown})"
        problems.append(Problem(field=field, value=shown, code=code, message=message))
    return problems


def _short(value: Any, limit: int = 200) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def parse_spec(data: str | bytes | dict[str, Any]) -> TrainSpec | TrackSpec:
    """Decode a spec from JSON text or a dict.

    Raises :class:`JobRejected` listing every structural problem (unknown fields,
    wrong types, missing fields, oversize input).
    """
    if isinstance(data, str | bytes):
        if len(data) > MAX_SPEC_BYTES:
            raise JobRejected(
                [
                    Problem(
                        field="spec",
                        value=f"{len(data)} bytes",
                        code=ProblemCode.OUT_OF_RANGE,
                        message=f"job spec is larger than {MAX_SPEC_BYTES} bytes",
                    )
                ]
            )
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise JobRejected(
                [
                    Problem(
                        field="spec",
                        value=None,
                        code=ProblemCode.INVALID_TYPE,
                        message=f"job spec is not valid JSON: {exc}",
                    )
                ]
            ) from None
    if not isinstance(data, dict):
        raise JobRejected(
            [
                Problem(
                    field="spec",
                    value=_short(data),
                    code=ProblemCode.INVALID_TYPE,
                    message="job spec must be a JSON object",
                )
            ]
        )
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise JobRejected(problems_from_validation_error(exc)) from None


def anchored(spec: TrainSpec | TrackSpec, folder: Path) -> TrainSpec | TrackSpec:
    """``spec`` with every relative path made absolute against ``folder``.

    A spec kept in a file (``sleap-rtc local train --spec FILE``) names paths relative to
    the file's folder, as a pipeline job file does; so a stage script can keep the spec
    beside its artifacts and still point at its neighbours when the folder moves.
    Absolute paths (and ``~``) are kept as written; ``..`` is folded, links are not followed.
    """

    def absolute(raw: str) -> str:
        if raw.startswith(("/", "~")) or not raw.strip():
            return raw
        return os.path.normpath(folder.absolute() / raw)

    update: dict[str, Any] = {}
    for option in options_for(spec.kind):
        value = getattr(spec, option.field)
        if not option.path or value is None:
            continue
        update[option.field] = (
            [absolute(v) for v in value] if isinstance(value, list) else absolute(value)
        )
    return spec.model_copy(update=update)
