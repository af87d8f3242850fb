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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sleap_rtc.jobs.pathmaps import check_pairs
from sleap_rtc.jobs.problems import JobRejected, Problem, ProblemCode
from sleap_rtc.jobs.specs import problems_from_validation_error

#: Largest job file or registry read (they are hand-written, so far smaller).
MAX_JOB_FILE_BYTES = 1024 * 1024
#: Most entries (files or globs) a dataset's ``track`` may list, and files they may match.
MAX_TRACK_ENTRIES = 1000
MAX_TRACK_FILES = 100_000
#: Characters that make a ``track`` entry a glob.
_GLOB = re.compile(r"[*?\[]")
#: Job and dataset names: they name folders and scripts.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class DatasetEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: str
    val_labels: str | None = None
    #: What ``track`` runs on: a file, a glob, or a list of them (one array task per
    #: file when there are several); the labels file if unset.
    track: str | list[str] | None = None
    #: Where this dataset's videos are, when its labels were made on another machine:
    #: ``{OLD: NEW}`` folders (:mod:`sleap_rtc.jobs.pathmaps`).
    path_map: dict[str, str] = Field(default_factory=dict)

    @field_validator("track")
    @classmethod
    def _track(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not 1 <= len(value) <= MAX_TRACK_ENTRIES:
            raise ValueError(f"track lists 1 to {MAX_TRACK_ENTRIES} files or globs")
        return value


@dataclass(frozen=True)
class Dataset:
    name: str
    labels: Path
    val_labels: Path | None
    #: The files track runs on, in order (several: an array job, one task per file).
    track: tuple[Path, ...]
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
        for key, value in (("labels", labels), ("val_labels", val)):
            if value is not None and not value.is_file():
                problems.append(_not_found(f"datasets_registry.{name}.{key}", value, name, path))
        track, found_problems = _track_files(base, entry.track, f"datasets_registry.{name}.track")
        problems += [
            p.model_copy(update={"message": f"{p.message} (dataset {name!r} in {path})"})
            for p in found_problems
        ]
        pairs = list(entry.path_map.items())
        for p in check_pairs("path_map", pairs):
            problems.append(p.model_copy(update={"field": f"datasets_registry.{name}.{p.field}"}))
        found[str(name)] = Dataset(str(name), labels, val, track or (labels,), tuple(pairs))
    if problems:
        raise JobRejected(problems)
    return Registry(found, [str(name) for name in data])


def _missing(field: str, value: str, message: str) -> Problem:
    return Problem(field=field, value=value, code=ProblemCode.PATH_NOT_FOUND, message=message)


def _not_found(field: str, value: Path, name: str, registry: Path) -> Problem:
    return _missing(field, str(value), f"Path not found: {value} (dataset {name!r} in {registry})")


def _track_files(
    base: Path, raw: str | list[str] | None, field: str
) -> tuple[tuple[Path, ...], list[Problem]]:
    """The files a ``track`` entry names, in its order (a glob's matches sorted), each
    once; the entries that name none, as problems."""
    entries = [raw] if isinstance(raw, str) else list(raw or [])
    files: list[Path] = []
    problems: list[Problem] = []
    for i, entry in enumerate(entries):
        where = field if isinstance(raw, str) else f"{field}[{i}]"
        if _GLOB.search(entry):
            pattern = Path(entry).expanduser()
            if not pattern.is_absolute():
                pattern = base / pattern
            anchor = Path(pattern.anchor)
            matches = sorted(
                p.resolve() for p in anchor.glob(str(pattern.relative_to(anchor))) if p.is_file()
            )
            if not matches:
                problems.append(
                    _missing(where, entry, f"the glob {entry!r} matches no file under {base}")
                )
            files += matches
        else:
            file = local_path(base, entry)
            if file.is_file():
                files.append(file)
            else:
                problems.append(_missing(where, str(file), f"Path not found: {file}"))
    unique = tuple(dict.fromkeys(files))
    if len(unique) > MAX_TRACK_FILES:
        problems.append(
            Problem(
                field=field,
                value=f"{len(unique)} files",
                code=ProblemCode.OUT_OF_RANGE,
                message=f"track names {len(unique)} files; at most {MAX_TRACK_FILES} per dataset "
                "(split it into several datasets)",
            )
        )
    return unique, problems


def local_path(base: Path, raw: str) -> Path:
    path = Path(raw).expanduser()
    return (path if path.is_absolute() else base / path).resolve()
