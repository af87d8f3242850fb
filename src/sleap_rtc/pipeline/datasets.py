"""The datasets registry of pipeline job files, and reading job files themselves.

A registry (``datasets.json`` beside the job file unless it names another) maps dataset
names to their labels, optional validation labels and what ``track`` runs on. Relative
paths in a registry are relative to the registry's folder. Every problem is reported at
once (:class:`~sleap_rtc.jobs.problems.JobRejected`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sleap_rtc.jobs.pathmaps import check_pairs
from sleap_rtc.jobs.problems import JobRejected, Problem, ProblemCode
from sleap_rtc.jobs.specs import problems_from_validation_error

#: Largest job file or registry read (they are hand-written, so far smaller).
MAX_JOB_FILE_BYTES = 1024 * 1024
#: Job and dataset names: they name folders and scripts.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class DatasetEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: str
    val_labels: str | None = None
    #: What ``track`` runs on; the labels file if unset.
    track: str | None = None
    #: Where this dataset's videos are, when its labels were made on another machine:
    #: ``{OLD: NEW}`` folders (:mod:`sleap_rtc.jobs.pathmaps`).
    path_map: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True)
class Dataset:
    name: str
    labels: Path
    val_labels: Path | None
    track: Path
    path_map: tuple[tuple[str, str], ...] = ()


def read_mapping(path: Path, what: str, field_name: str) -> dict[str, Any]:
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


@dataclass(frozen=True)
class Registry:
    #: The entries read and checked, by name.
    datasets: dict[str, Dataset]
    #: Every name the registry has (checked or not).
    names: list[str]


def load_registry(path: Path, only: Collection[str] | None = None) -> Registry:
    """The datasets registry: name → labels (and optional val labels, track input).

    With ``only``, just those entries are read and checked: a broken entry of a
    dataset a job doesn't use is no reason to refuse the job."""
    data = read_mapping(path, "datasets registry", "datasets_registry")
    problems: list[Problem] = []
    found: dict[str, Dataset] = {}
    for name, raw in data.items():
        if only is not None and str(name) not in only:
            continue
        if not NAME.match(str(name)):
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
        labels = local_path(base, entry.labels)
        val = local_path(base, entry.val_labels) if entry.val_labels else None
        track = local_path(base, entry.track) if entry.track else labels
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
        pairs = list(entry.path_map.items())
        for p in check_pairs("path_map", pairs):
            problems.append(p.model_copy(update={"field": f"datasets_registry.{name}.{p.field}"}))
        found[str(name)] = Dataset(str(name), labels, val, track, tuple(pairs))
    if problems:
        raise JobRejected(problems)
    return Registry(found, [str(name) for name in data])


def local_path(base: Path, raw: str) -> Path:
    path = Path(raw).expanduser()
    return (path if path.is_absolute() else base / path).resolve()
