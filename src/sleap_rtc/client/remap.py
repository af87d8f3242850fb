"""Correcting a missing video: the rules behind the CLI's prompt.

A labels file made on another machine names videos where this worker has none. The
worker reports each as ``VIDEO_NOT_FOUND`` on the field ``<labels field>.videos[i]``
with the stored path. The user picks the file on the worker; the pick implies a path
map (:func:`~sleap_rtc.jobs.pathmaps.implied_map`) that is added to the job, so one
pick also finds every neighbour the labels store under the same folder.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence

from sleap_rtc.jobs.pathmaps import PathMap, implied_map, mapped, normalized
from sleap_rtc.jobs.problems import ProblemCode
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.protocol import jobs as p

_VIDEO_FIELD = re.compile(r"^(?P<labels>[a-z_]+(?:\[\d+\])?)\.videos\[\d+\]$")
#: Files the browser shows first for a missing video of this kind.
VIDEO_PATTERNS = {".mp4": "*.mp4", ".avi": "*.avi", ".mov": "*.mov", ".h5": "*.h5"}


def video_problems(errors: Sequence[p.ProblemView]) -> list[p.ProblemView]:
    """The missing videos among ``errors``."""
    return [
        e
        for e in errors
        if e.code == ProblemCode.VIDEO_NOT_FOUND and _VIDEO_FIELD.match(e.field) and e.path
    ]


def stored_path(error: p.ProblemView) -> str:
    """The video path as the labels store it (with ``/`` for ``\\``)."""
    return normalized(error.path or "")


def video_name(error: p.ProblemView) -> str:
    return posixpath.basename(stored_path(error))


def video_filter(error: p.ProblemView) -> str:
    """The browser's first filter for this video: its kind of file, if a common one."""
    return VIDEO_PATTERNS.get(posixpath.splitext(video_name(error))[1].lower(), "")


def labels_folder(spec: TrainSpec | TrackSpec) -> str | None:
    """Where the browser starts: the folder of the labels the job names, if absolute."""
    path = spec.data_path if isinstance(spec, TrackSpec) else spec.labels_path
    if path and path.startswith("/"):
        return posixpath.dirname(path)
    return None


def covered(error: p.ProblemView, pairs: Sequence[tuple[str, str]]) -> bool:
    """Whether one of the maps ``pairs`` applies to the stored path of ``error``."""
    return mapped([PathMap(old, new) for old, new in pairs], error.path or "") is not None


def with_video(
    spec: TrainSpec | TrackSpec, error: p.ProblemView, chosen: str
) -> tuple[TrainSpec | TrackSpec, tuple[str, str]]:
    """``spec`` with the path map that takes the missing video to ``chosen`` put first."""
    pair = implied_map(stored_path(error), chosen)
    kept = [m for m in spec.path_map if tuple(m) != pair]
    updated = type(spec).model_validate({**spec.model_dump(), "path_map": [pair, *kept]})
    return updated, pair
