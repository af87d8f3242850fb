"""Video path maps: where the videos of labels made on another machine are on this one.

A labels file keeps the video paths of the machine it was saved on
(``/Volumes/lab/mice/m1.mp4``, ``C:\\Users\\lab\\mice\\m1.mp4``). A map ``OLD NEW`` says
that what was under ``OLD`` there is under ``NEW`` here. Maps come from the job
(``--path-map OLD NEW``, a job file's or dataset's ``path_map``) and from the worker
(``[[path_maps]]`` in ``worker.toml``); the job's are tried first, and among them the
longest matching prefix wins. Prefixes match whole path components, Windows paths are
compared with ``/`` for ``\\`` and without regard to case::

    >>> maps = [PathMap("C:\\\\Users\\\\lab", "/data/lab"), PathMap("C:/Users/lab/mice", "/m")]
    >>> mapped(maps, "c:/users/LAB/mice/m1.mp4")
    ('/m/m1.mp4', PathMap(old='C:/Users/lab/mice', new='/m', source='job'))
    >>> mapped(maps, "C:/Users/lab2/m1.mp4") is None
    True

The user's labels file is never changed: the worker checks every mapped path inside its
mounts and gives sleap-nn a copy of the labels with the checked paths in it.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from sleap_rtc.jobs.problems import Problem, ProblemCode

#: Most maps one job may carry.
MAX_PATH_MAPS = 32
#: Longest prefix accepted on either side of a map.
MAX_PREFIX_CHARS = 4096

_DRIVE = re.compile(r"^[A-Za-z]:(/|$)")


def normalized(path: str) -> str:
    """``path`` with ``/`` for ``\\``, no repeated or trailing ``/`` (``C:/`` and ``/`` kept)."""
    text = path.replace("\\", "/")
    unc = text.startswith("//")
    text = re.sub("/+", "/", text)
    if unc:
        text = "/" + text
    if len(text) > 1 and text.endswith("/") and not re.fullmatch(r"[A-Za-z]:/", text):
        text = text.rstrip("/") or "/"
    return text


def is_windows(path: str) -> bool:
    """A path of a Windows machine (drive letter or ``\\\\server\\share``)."""
    text = path.replace("\\", "/")
    return bool(_DRIVE.match(text)) or text.startswith("//")


@dataclass(frozen=True)
class PathMap:
    """Videos stored under ``old`` are under ``new`` on this worker."""

    old: str
    new: str
    #: Who gave the map: the job, or the worker's own settings.
    source: Literal["job", "worker"] = "job"

    def __post_init__(self) -> None:
        object.__setattr__(self, "old", normalized(self.old))
        object.__setattr__(self, "new", normalized(self.new))

    def remainder(self, stored: str) -> str | None:
        """What follows ``old`` in ``stored`` (``""`` for ``old`` itself); None: no match."""
        path = normalized(stored)
        old = self.old
        if is_windows(old) or is_windows(path):
            path, old = path.lower(), old.lower()
        if path == old:
            return ""
        head = old if old.endswith("/") else old + "/"
        if path.startswith(head):
            return normalized(stored)[len(head) :]
        return None

    def __str__(self) -> str:
        return f"{self.old} → {self.new}"


def mapped(maps: Sequence[PathMap], stored: str) -> tuple[str, PathMap] | None:
    """Where ``stored`` is on this worker by ``maps`` (job maps before worker maps,
    then the longest prefix), with the map used; None when no map applies."""
    best: tuple[int, int, PathMap, str] | None = None
    for path_map in maps:
        rest = path_map.remainder(stored)
        if rest is None:
            continue
        rank = (0 if path_map.source == "job" else 1, -len(path_map.old))
        if best is None or rank < best[:2]:
            best = (*rank, path_map, rest)
    if best is None:
        return None
    _, _, path_map, rest = best
    return (posixpath.join(path_map.new, rest) if rest else path_map.new), path_map


def implied_map(stored: str, found: str) -> tuple[str, str]:
    """The map that takes ``stored`` to ``found``: their common trailing components
    dropped from both (``C:/lab/mice/m1.mp4``, ``/data/mice/m1.mp4`` → ``C:/lab``,
    ``/data``), so the same map also finds the file's neighbours."""
    old = normalized(stored).split("/")
    new = normalized(found).split("/")
    windows = is_windows(stored)
    while len(old) > 1 and len(new) > 1:
        a, b = old[-1], new[-1]
        if a != b and not (windows and a.lower() == b.lower()):
            break
        old.pop()
        new.pop()
    return "/".join(old) or "/", "/".join(new) or "/"


def as_pairs(value: object) -> list[tuple[str, str]] | None:
    """A job file's ``path_map``, a mapping ``{OLD: NEW}`` or a list of ``[OLD, NEW]``,
    as pairs; None when it is neither."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list) and all(isinstance(v, list | tuple) for v in value):
        items = [tuple(v) for v in value]
    else:
        return None
    if not all(len(i) == 2 and all(isinstance(x, str) for x in i) for i in items):
        return None
    return [(str(old), str(new)) for old, new in items]


def job_maps(pairs: Iterable[Sequence[str]]) -> list[PathMap]:
    """The job's maps as :class:`PathMap` entries (pairs already checked)."""
    return [PathMap(old, new, "job") for old, new in pairs]


def check_pairs(field: str, pairs: Sequence[Sequence[str]]) -> list[Problem]:
    """Rules for maps that need no filesystem: two non-empty parts, an absolute ``NEW``."""
    problems: list[Problem] = []

    def problem(index: int, value: str, message: str) -> None:
        problems.append(
            Problem(
                field=f"{field}[{index}]",
                value=value[:200],
                code=ProblemCode.INVALID_VALUE,
                message=message,
            )
        )

    if len(pairs) > MAX_PATH_MAPS:
        problems.append(
            Problem(
                field=field,
                value=str(len(pairs)),
                code=ProblemCode.OUT_OF_RANGE,
                message=f"{len(pairs)} path maps given; at most {MAX_PATH_MAPS} are accepted",
            )
        )
        return problems
    for index, pair in enumerate(pairs):
        if len(pair) != 2:
            problem(index, str(list(pair)), "a path map is two paths: OLD NEW")
            continue
        old, new = pair
        shown = f"{old} {new}"
        if not old.strip() or not new.strip():
            problem(index, shown, "a path map needs both OLD and NEW (neither may be empty)")
        elif any(ord(c) < 32 for c in old + new):
            problem(index, shown, "a path map may not hold control characters")
        elif max(len(old), len(new)) > MAX_PREFIX_CHARS:
            problem(index, shown[:200], f"a path map's paths are at most {MAX_PREFIX_CHARS} chars")
        elif not new.startswith("/") or is_windows(new):
            problem(
                index,
                shown,
                f"NEW must be an absolute folder on the worker (got {new!r}); "
                "e.g. --path-map /Volumes/lab /data/lab",
            )
    return problems
