"""Fixing a rejected job's paths: which spec field each problem names, what kind of
path fits there, where to start looking, and putting the chosen path back.

Pure logic over specs and problems; :mod:`sleap_rtc.cli.correct` asks the user and
resubmits, browsing with :mod:`sleap_rtc.client.browse`.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sleap_rtc.client.browse import BrowseError, FileSource, FindingSource, Want, folder_model_state
from sleap_rtc.jobs.paths import MODEL_WEIGHT_NAMES
from sleap_rtc.jobs.problems import PATH_CODES, ProblemCode
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.protocol import jobs as p


@dataclass(frozen=True)
class PathTarget:
    """Where a rejected path lives in a spec, and what kind of path fits there."""

    field: str
    attr: str
    index: int | None
    want: Want
    #: The browser's starting filter, e.g. ``*.yaml``.
    filter: str
    #: output_path: the user picks a folder and the file name is kept.
    keep_name: bool = False

    @property
    def model(self) -> bool:
        """Whether the path is a trained model folder (only complete ones are offered)."""
        return self.attr == "model_paths"


_FIELD = re.compile(r"^(?P<attr>[a-z_]+)(?:\[(?P<index>\d+)\])?$")

_TARGETS: dict[str, tuple[Want, str]] = {
    "config_paths": ("file", "*.yaml"),
    "labels_path": ("file", "*.slp"),
    "val_labels_path": ("file", "*.slp"),
    "resume_ckpt_path": ("file", "*.ckpt"),
    "data_path": ("file", "*.slp"),
    "model_paths": ("dir", ""),
    "output_path": ("dir", ""),
}


def target_for(field: str, spec: TrainSpec | TrackSpec) -> PathTarget | None:
    """The spec field a problem's ``field`` names (``config_path``, ``model_paths[1]``…)."""
    match = _FIELD.match(field)
    if match is None:
        return None
    attr = match["attr"]
    index = int(match["index"]) if match["index"] is not None else None
    if attr == "config_path":  # the user documents' name for a single config
        attr, index = "config_paths", 0
    if attr not in _TARGETS or attr not in type(spec).model_fields:
        return None
    current = getattr(spec, attr)
    if isinstance(current, list):
        index = index or 0
        if index >= len(current):
            return None
    elif index is not None:
        return None
    want, pattern = _TARGETS[attr]
    return PathTarget(field, attr, index, want, pattern, keep_name=attr == "output_path")


def current_value(spec: TrainSpec | TrackSpec, target: PathTarget) -> str | None:
    value = getattr(spec, target.attr)
    if target.index is not None:
        return str(value[target.index])
    return None if value is None else str(value)


def apply_path(
    spec: TrainSpec | TrackSpec, target: PathTarget, chosen: str
) -> TrainSpec | TrackSpec:
    """A copy of ``spec`` with the chosen path in the target's place."""
    if target.keep_name:
        old = current_value(spec, target) or ""
        chosen = posixpath.join(chosen, posixpath.basename(old) or "predictions.slp")
    value: object = chosen
    if target.index is not None:
        items = list(getattr(spec, target.attr))
        items[target.index] = chosen
        value = items
    return type(spec).model_validate({**spec.model_dump(), target.attr: value})


#: Problems picking another path fixes: a path that is wrong, or a file that isn't
#: what the field takes (e.g. a YAML that is not a sleap-nn config).
CORRECTABLE = PATH_CODES | {ProblemCode.CONFIG_INVALID}


def path_problems(errors: Sequence[p.ProblemView]) -> list[p.ProblemView]:
    """The problems a path correction can fix, one per field."""
    seen: set[str] = set()
    found = []
    for error in errors:
        if error.code in CORRECTABLE and error.field not in seen:
            seen.add(error.field)
            found.append(error)
    return found


def start_candidates(bad: str | None, spec: TrainSpec | TrackSpec) -> list[str]:
    """Folders to try, nearest first, for a browser opened on a bad path."""
    if not bad:
        return []
    if not bad.startswith("/"):
        # A relative path in a config is relative to that config's folder.
        base = None
        if isinstance(spec, TrainSpec) and spec.config_paths:
            base = posixpath.dirname(spec.config_paths[0])
        elif isinstance(spec, TrackSpec):
            base = posixpath.dirname(spec.data_path)
        if not base or not base.startswith("/"):
            return []
        bad = posixpath.join(base, bad)
    bad = posixpath.normpath(bad)
    found = [bad]
    while bad != "/" and len(found) < 64:
        bad = posixpath.dirname(bad)
        found.append(bad)
    return found


async def nearest_folder(source: FileSource, candidates: Sequence[str]) -> str | None:
    """The first of ``candidates`` that is an existing folder inside the worker's mounts."""
    mounts = [m.path for m in await source.mounts()]
    for candidate in candidates:
        if not any(_within(candidate, m) for m in mounts):
            below = [m for m in mounts if _within(m, candidate)]
            if len(below) == 1:
                # e.g. /vast/wrong/x.yaml on a worker that mounts /vast/project
                return below[0]
            if below:
                return None  # several mounts fit: let the user pick one
            continue
        try:
            entry = await source.stat(candidate)
        except BrowseError:
            continue
        if entry.kind == "dir":
            return entry.path or candidate
    return None


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


#: How alike a model folder's name must be to the one asked for, to be offered.
CLOSE_NAME = 0.6


async def likely_models(source: FindingSource, wanted: str, *, limit: int = 5) -> list[str]:
    """Complete model folders on the worker named like ``wanted`` (a folder name), best
    first. Folders are found by their weights file and each is checked with
    :func:`~sleap_rtc.jobs.paths.model_state`, so a run that never saved best weights
    (cancelled, failed) is not offered."""
    wanted = wanted.lower()
    if not wanted:
        return []
    found: dict[str, float] = {}
    for weights in MODEL_WEIGHT_NAMES:
        try:
            reply = await source.find(weights, limit=100)
        except BrowseError:
            continue
        for match in reply.matches:
            path = match.entry.path
            if match.rank != 0 or not path:
                continue
            folder = posixpath.dirname(path)
            name = posixpath.basename(folder).lower()
            score = 1.0 if name == wanted else difflib.SequenceMatcher(None, wanted, name).ratio()
            if score >= CLOSE_NAME or wanted in name:
                found[folder] = max(score, found.get(folder, 0.0))
    chosen: list[str] = []
    for folder in sorted(found, key=lambda f: (-found[f], f)):
        try:
            complete = await folder_model_state(source, folder) == "complete"
        except BrowseError:
            complete = False
        if complete:
            chosen.append(folder)
            if len(chosen) == limit:
                break
    return chosen
