"""Read-only views of the worker's mounts: list mounts, list a folder, stat, find.

This is what a user browses when a job names a path that isn't there. Every path
a peer names is resolved (``..`` collapsed, symlinks followed) before it is
compared with the mounts, and nothing outside them is shown: an entry whose
target lies outside is left out of listings and searches. Searches are bounded
in depth, entries scanned and time, and a pattern that would match everything is
refused instead of scanning the whole disk. Blocking calls; run them in a thread.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import shutil
import stat
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sleap_rtc.jobs.mounts import Mounts

Kind = Literal["dir", "file", "other"]
ACCESS_DENIED = "Access denied: outside the worker's mounts"
_WILDCARDS = set("*?[]")


class FsError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class MountInfo:
    label: str
    path: str
    read_only: bool
    free_bytes: int | None
    total_bytes: int | None


@dataclass(frozen=True)
class Entry:
    name: str
    path: str
    kind: Kind
    size: int | None
    modified: float


@dataclass(frozen=True)
class Listing:
    path: str
    entries: list[Entry]
    total: int
    offset: int


@dataclass(frozen=True)
class Match:
    entry: Entry
    #: 0 exact name, 1 same extension, 2 a close name, 3 a glob match.
    rank: int
    score: float


@dataclass
class FindResult:
    matches: list[Match] = field(default_factory=list)
    scanned: int = 0
    #: Why the search stopped early, if it did ("time", "entries", "results").
    truncated: str | None = None


def _kind(mode: int) -> Kind:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


class FileService:
    def __init__(
        self,
        mounts: Mounts,
        *,
        max_page: int = 500,
        find_max_depth: int = 12,
        find_max_entries: int = 200_000,
        find_time_limit_s: float = 5.0,
        find_max_results: int = 100,
    ) -> None:
        self.mounts = mounts
        self.max_page = max_page
        self.find_max_depth = find_max_depth
        self.find_max_entries = find_max_entries
        self.find_time_limit_s = find_time_limit_s
        self.find_max_results = find_max_results

    # -- paths ----------------------------------------------------------------------------

    def resolve(self, raw: str) -> Path:
        """The real path for ``raw`` inside a mount; FsError otherwise."""
        real, problem = self.mounts.resolve("path", raw)
        if problem is not None or real is None:
            assert problem is not None
            if problem.code == "ACCESS_DENIED":
                raise FsError("ACCESS_DENIED", f"{ACCESS_DENIED}: {raw}")
            raise FsError(str(problem.code), problem.message)
        return real

    def _inside(self, path: Path) -> bool:
        try:
            real = Path(os.path.realpath(path))
        except (OSError, ValueError):
            return False
        return self.mounts.containing(real) is not None

    def _entry(self, path: Path, name: str | None = None) -> Entry | None:
        """An entry for ``path`` if what it points at is inside the mounts."""
        if not self._inside(path):
            return None
        try:
            info = path.stat()
        except OSError:
            return None
        kind = _kind(info.st_mode)
        return Entry(
            name=name or path.name,
            path=str(path),
            kind=kind,
            size=info.st_size if kind == "file" else None,
            modified=info.st_mtime,
        )

    # -- operations -----------------------------------------------------------------------

    def list_mounts(self) -> list[MountInfo]:
        result = []
        for mount in self.mounts:
            free: int | None
            total: int | None
            try:
                usage = shutil.disk_usage(mount.path)
                free, total = usage.free, usage.total
            except OSError:
                free = total = None
            result.append(MountInfo(mount.label, str(mount.path), mount.read_only, free, total))
        return result

    def stat(self, raw: str) -> Entry:
        real = self.resolve(raw)
        entry = self._entry(real)
        if entry is None:
            raise FsError("PATH_NOT_FOUND", f"Path not found: {raw}")
        return entry

    def list(
        self,
        raw: str,
        *,
        offset: int = 0,
        limit: int = 200,
        pattern: str | None = None,
        dirs_only: bool = False,
    ) -> Listing:
        """One page of a folder: folders first, then files, each by name.

        ``pattern`` (a glob such as ``*.yaml``) filters files; folders always show,
        so a user can still move through them.
        """
        real = self.resolve(raw)
        if not real.exists():
            raise FsError("PATH_NOT_FOUND", f"Path not found: {raw}")
        if not real.is_dir():
            raise FsError("NOT_A_DIRECTORY", f"Not a folder: {raw}")
        limit = max(1, min(limit, self.max_page))
        entries: list[Entry] = []
        try:
            with os.scandir(real) as scan:
                for item in scan:
                    entry = self._entry(real / item.name, item.name)
                    if entry is None:
                        continue
                    if entry.kind != "dir":
                        if dirs_only:
                            continue
                        if pattern and not fnmatch.fnmatch(entry.name.lower(), pattern.lower()):
                            continue
                    entries.append(entry)
        except PermissionError:
            raise FsError("NOT_READABLE", f"The worker can't read {raw}") from None
        entries.sort(key=lambda e: (e.kind != "dir", e.name.lower(), e.name))
        page = entries[offset : offset + limit]
        return Listing(path=str(real), entries=page, total=len(entries), offset=offset)

    def find(self, query: str, *, under: str | None = None, limit: int | None = None) -> FindResult:
        """Files named like ``query`` (a name, or a glob) in the mounts, best first."""
        query = query.strip()
        literal = "".join(c for c in query if c not in _WILDCARDS and c != ".")
        if len(literal) < 2:
            raise FsError(
                "PATTERN_TOO_BROAD",
                f"pattern {query!r} would match nearly everything; give part of the name, "
                "e.g. '*.yaml', 'labels*' or 'centroid.yaml'",
            )
        if "/" in query or "\0" in query:
            raise FsError("INVALID_PATTERN", "a pattern is a file name, not a path")
        is_glob = any(c in _WILDCARDS for c in query)
        roots = [self.resolve(under)] if under else [m.path for m in self.mounts]
        limit = max(1, min(limit or self.find_max_results, self.find_max_results))
        wanted = query.lower()
        stem, ext = os.path.splitext(wanted)
        result = FindResult()
        deadline = time.monotonic() + self.find_time_limit_s
        found: dict[str, Match] = {}
        queue: deque[tuple[Path, int]] = deque((root, 0) for root in roots)
        while queue:
            folder, depth = queue.popleft()
            try:
                scan = os.scandir(folder)
            except OSError:
                continue
            with scan:
                for item in scan:
                    result.scanned += 1
                    if result.scanned > self.find_max_entries:
                        result.truncated = "entries"
                        break
                    if result.scanned % 256 == 0 and time.monotonic() > deadline:
                        result.truncated = "time"
                        break
                    try:
                        is_dir = item.is_dir(follow_symlinks=False)
                    except OSError:
                        continue
                    if is_dir:
                        if depth + 1 <= self.find_max_depth:
                            queue.append((Path(item.path), depth + 1))
                        continue
                    name = item.name.lower()
                    rank, score = self._rank(name, wanted, stem, ext, is_glob)
                    if rank is None:
                        continue
                    entry = self._entry(Path(item.path), item.name)
                    if entry is None or entry.kind != "file":
                        continue
                    found[entry.path] = Match(entry, rank, score)
            if result.truncated:
                break
        ordered = sorted(found.values(), key=lambda m: (m.rank, -m.score, m.entry.path))
        if len(ordered) > limit:
            result.truncated = result.truncated or "results"
        result.matches = ordered[:limit]
        return result

    @staticmethod
    def _rank(
        name: str, wanted: str, stem: str, ext: str, is_glob: bool
    ) -> tuple[int | None, float]:
        if is_glob:
            return (3, 0.0) if fnmatch.fnmatch(name, wanted) else (None, 0.0)
        if name == wanted:
            return 0, 1.0
        name_stem, name_ext = os.path.splitext(name)
        score = difflib.SequenceMatcher(None, stem, name_stem).ratio()
        if ext and name_ext == ext:
            return 1, score
        if score >= 0.6:
            return 2, score
        return None, 0.0
