"""Read-only views of the worker's mounts: list mounts, list a folder, stat, find.

This is what a user browses when a job names a path that isn't there. Every path
a peer names is resolved (``..`` collapsed, symlinks followed) before it is
compared with the mounts, and nothing outside them is shown: an entry whose
target lies outside is left out of listings and searches. What is then listed or
stat'ed is reached through descriptors opened beneath the mount root without
following links (:mod:`sleap_rtc.worker.fsafe`), so a file or folder swapped for
a link after the check can't make the worker show what lies outside. Searches
are bounded in depth, entries scanned and time, and a pattern that would match
everything is refused instead of scanning the whole disk. Blocking calls; run
them in a thread.
"""

from __future__ import annotations

import difflib
import fnmatch
import heapq
import os
import shutil
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cachetools import TTLCache

from sleap_rtc.jobs.mounts import Mounts
from sleap_rtc.worker import fsafe
from sleap_rtc.worker.fsafe import clip, clip_problem, echo

Kind = Literal["dir", "file", "other"]
#: A folder's visible names, each with whether it is a folder and whether it is a link;
#: folders first, by name.
Names = list[tuple[str, bool, bool]]
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
        listing_cache_names: int = 2_000_000,
        listing_cache_s: float = 60.0,
    ) -> None:
        self.mounts = mounts
        self.max_page = max_page
        self.find_max_depth = find_max_depth
        self.find_max_entries = find_max_entries
        self.find_time_limit_s = find_time_limit_s
        self.find_max_results = find_max_results
        # Sorted names of recently listed folders, checked against the folder's mtime:
        # paging reads a folder once. Bounded by the number of names held.
        self._listings: TTLCache[tuple[str, str, bool], tuple[int, Names]] = TTLCache(
            maxsize=listing_cache_names, ttl=listing_cache_s, getsizeof=lambda v: len(v[1]) + 1
        )
        self._lock = threading.Lock()

    # -- paths ----------------------------------------------------------------------------

    def resolve(self, raw: str) -> Path:
        """The real path for ``raw`` inside a mount; FsError otherwise. A path may start
        with a mount's label instead of its folder (``demo/configs``)."""
        real, problem = self.mounts.resolve("path", self.mounts.by_label(raw) or raw)
        if problem is not None or real is None:
            assert problem is not None
            if problem.code == "ACCESS_DENIED":
                raise FsError("ACCESS_DENIED", f"{ACCESS_DENIED}: {clip(raw)}")
            raise FsError(str(problem.code), clip_problem(problem.message, raw))
        return real

    def _locate(self, raw: str) -> fsafe.Located:
        located = fsafe.locate(self.mounts, self.resolve(raw))
        assert located is not None  # resolve() checked it is inside a mount
        return located

    def _entry_at(self, path: Path, name: str | None = None) -> Entry | None:
        """An entry for what ``path`` leads to, if that is inside the mounts.

        The path is resolved and what it names is stat'ed beneath its mount root,
        so neither a link out nor a link swapped in after a check is followed.
        """
        found = fsafe.stat_inside(self.mounts, path)
        if found is None:
            return None
        return _make_entry(path, name or path.name, found[1])

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
        """What ``raw`` names, stat'ed beneath its mount root (links it holds followed
        only while they stay inside the mounts)."""

        def attempt() -> tuple[Path, os.stat_result]:
            located = self._locate(raw)
            with fsafe.root_fd(located.mount) as root:
                return located.real, fsafe.lstat_beneath(root, located.rel)

        try:
            real, info = fsafe.retry_on_link(attempt)
        except OSError:
            raise FsError("PATH_NOT_FOUND", f"Path not found: {clip(raw)}") from None
        return _make_entry(real, real.name, info)

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
        so a user can still move through them. The sorted names are kept for a
        short while (until the folder changes), so paging through a folder of
        100,000 entries reads it once; only the page's entries are stat'ed, through
        the folder's descriptor (a link among them is resolved and checked again).
        """

        def attempt() -> tuple[fsafe.Located, int]:
            located = self._locate(raw)
            return located, fsafe.open_dir_inside(located)

        try:
            located, fd = fsafe.retry_on_link(attempt)
        except FileNotFoundError:
            raise FsError("PATH_NOT_FOUND", f"Path not found: {clip(raw)}") from None
        except NotADirectoryError:
            raise FsError(*self._not_a_folder(raw)) from None
        except OSError as exc:
            raise FsError(
                "NOT_READABLE", f"The worker can't read {clip(raw)}: {exc.strerror}"
            ) from None
        real = located.real
        try:
            info = os.fstat(fd)
            key = (str(real), (pattern or "").lower(), dirs_only)
            with self._lock:
                cached = self._listings.get(key)
            if cached is not None and cached[0] == info.st_mtime_ns:
                names = cached[1]
            else:
                names = self._scan(fd, real, raw, pattern, dirs_only)
                with self._lock:
                    self._listings[key] = (info.st_mtime_ns, names)
            limit = max(1, min(limit, self.max_page))
            entries = []
            for name, _, _ in names[offset : offset + limit]:
                entry = self._child_entry(fd, real, name)
                if entry is not None:  # None: it went away since the folder was read
                    entries.append(entry)
        finally:
            os.close(fd)
        return Listing(path=str(real), entries=entries, total=len(names), offset=offset)

    def _not_a_folder(self, raw: str) -> tuple[str, str]:
        """Why ``raw`` can't be listed: it is a file, or a path through one."""
        found = fsafe.stat_inside(self.mounts, raw)
        if found is not None and not stat.S_ISDIR(found[1].st_mode):
            return "NOT_A_DIRECTORY", f"Not a folder: {clip(raw)}"
        return "PATH_NOT_FOUND", f"Path not found: {clip(raw)}"

    def _child_entry(self, fd: int, real: Path, name: str) -> Entry | None:
        """The entry for ``name`` in the folder open as ``fd`` (whose path is ``real``).

        A plain entry is stat'ed through the folder's descriptor without following
        links; a link (even one that was a plain file when the folder was read) is
        resolved and its target stat'ed beneath its own mount root.
        """
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode):
            return self._entry_at(real / name, name)
        return _make_entry(real / name, name, info)

    def _scan(self, fd: int, real: Path, raw: str, pattern: str | None, dirs_only: bool) -> Names:
        """The folder's visible names with is-a-folder, folders first, by name."""
        wanted = pattern.lower() if pattern else None
        found: Names = []
        try:
            with os.scandir(fd) as scan:
                for item in scan:
                    try:
                        # Only a link can lead out of a folder that is inside a mount.
                        is_link = item.is_symlink()
                        if is_link:
                            target = fsafe.stat_inside(self.mounts, real / item.name)
                            if target is None:
                                continue
                            is_dir = stat.S_ISDIR(target[1].st_mode)
                        else:
                            is_dir = item.is_dir(follow_symlinks=False)
                    except OSError:
                        continue
                    if not is_dir:
                        if dirs_only:
                            continue
                        if wanted and not fnmatch.fnmatchcase(item.name.lower(), wanted):
                            continue
                    found.append((item.name, is_dir, is_link))
        except PermissionError:
            raise FsError("NOT_READABLE", f"The worker can't read {clip(raw)}") from None
        found.sort(key=lambda e: (not e[1], e[0].lower(), e[0]))
        return found

    def find(self, query: str, *, under: str | None = None, limit: int | None = None) -> FindResult:
        """Files named like ``query`` (a name, or a glob) in the mounts, best first.

        Folders are walked by descriptors opened beneath each mount root, never by
        path: a folder swapped for a link while the search runs is not entered.
        """
        query = query.strip()
        literal = "".join(c for c in query if c not in _WILDCARDS and c != ".")
        if len(literal) < 2:
            raise FsError(
                "PATTERN_TOO_BROAD",
                f"pattern {echo(query)} would match nearly everything; give part of the name, "
                "e.g. '*.yaml', 'labels*' or 'centroid.yaml'",
            )
        if "/" in query or "\0" in query:
            raise FsError("INVALID_PATTERN", "a pattern is a file name, not a path")
        roots = (
            [self._locate(under)] if under else [fsafe.Located(m, m.path, "") for m in self.mounts]
        )
        limit = max(1, min(limit or self.find_max_results, self.find_max_results))
        ranker = _Ranker(query.lower(), keep=limit)
        result = FindResult()
        deadline = time.monotonic() + self.find_time_limit_s
        for root in roots:
            if result.truncated:
                break
            try:
                with fsafe.root_fd(root.mount) as root_fd:
                    self._search(root, root_fd, ranker, result, deadline)
            except OSError:
                continue
        matches = []
        for rank, score, path in ranker.best():
            entry = self._entry_at(Path(path))
            if entry is not None and entry.kind == "file":
                matches.append(Match(entry, rank, score))
        if ranker.overflow:
            result.truncated = result.truncated or "results"
        result.matches = matches
        return result

    def _search(
        self,
        root: fsafe.Located,
        root_fd: int,
        ranker: _Ranker,
        result: FindResult,
        deadline: float,
    ) -> None:
        """Breadth-first from ``root``, each folder opened beneath ``root_fd``."""
        base = root.mount.path
        queue: deque[tuple[str, int]] = deque([(root.rel, 0)])
        while queue and not result.truncated:
            rel, depth = queue.popleft()
            try:
                fd = fsafe.open_beneath(root_fd, rel, fsafe.DIR_FLAGS)
            except OSError:
                continue
            try:
                scan = os.scandir(fd)
            except OSError:
                os.close(fd)
                continue
            folder = base / rel if rel else base
            with scan:
                for item in scan:
                    result.scanned += 1
                    if result.scanned > self.find_max_entries:
                        result.truncated = "entries"
                        break
                    if result.scanned % 1024 == 0 and time.monotonic() > deadline:
                        result.truncated = "time"
                        break
                    path = str(folder / item.name)
                    try:
                        if item.is_dir(follow_symlinks=False):
                            if depth + 1 <= self.find_max_depth:
                                queue.append(
                                    (f"{rel}/{item.name}" if rel else item.name, depth + 1)
                                )
                            continue
                        if not ranker.consider(item.name, path):
                            continue
                        # A kept candidate: make sure it is a file inside the mounts.
                        if item.is_symlink():
                            target = fsafe.stat_inside(self.mounts, path)
                            keep = target is not None and stat.S_ISREG(target[1].st_mode)
                        else:
                            keep = item.is_file(follow_symlinks=False)
                        if not keep:
                            ranker.drop(path)
                    except OSError:
                        ranker.drop(path)
            os.close(fd)


def _make_entry(path: Path, name: str, info: os.stat_result) -> Entry:
    kind = _kind(info.st_mode)
    return Entry(
        name=name,
        path=str(path),
        kind=kind,
        size=info.st_size if kind == "file" else None,
        modified=info.st_mtime,
    )


class _Ranker:
    """Ranks file names against a query and keeps only the best ``keep``.

    Exact name first, then names with the same extension (by similarity), then
    close names (similarity of at least 0.6), or for a glob every match. The
    similarity (difflib's ratio) is only computed where its cheap upper bounds say
    the name could still make the list, which keeps a search over a million files
    close to the cost of walking them.
    """

    CLOSE = 0.6

    def __init__(self, query: str, *, keep: int) -> None:
        self.query = query
        self.keep = keep
        self.is_glob = any(c in _WILDCARDS for c in query)
        stem, self.ext = os.path.splitext(query)
        self.matcher = difflib.SequenceMatcher(None, autojunk=False)
        self.matcher.set_seq2(stem)  # difflib caches what it learns about seq2
        # The best so far, worst on top: (-rank, score, -order, path).
        self._heap: list[tuple[int, float, int, str]] = []
        self._order = 0
        #: True once a match had to be left out because ``keep`` were already better.
        self.overflow = False

    def consider(self, name: str, path: str) -> bool:
        """Rank ``name``; True if it is among the best so far (and so kept)."""
        name = name.lower()
        if self.is_glob:
            return fnmatch.fnmatchcase(name, self.query) and self._offer(3, 0.0, path)
        if name == self.query:
            return self._offer(0, 1.0, path)
        stem, ext = os.path.splitext(name)
        rank = 1 if self.ext and ext == self.ext else 2
        floor = self.CLOSE if rank == 2 else 0.0
        if len(self._heap) >= self.keep:
            worst_rank, worst_score = -self._heap[0][0], self._heap[0][1]
            if worst_rank < rank:
                floor = 2.0  # cannot make the list whatever its score
            elif worst_rank == rank:
                floor = max(floor, worst_score)
        matcher = self.matcher
        matcher.set_seq1(stem)
        if floor > 1.0 or matcher.real_quick_ratio() < floor or matcher.quick_ratio() < floor:
            if not self.overflow and (rank == 1 or self._close_enough()):
                self.overflow = True
            return False
        score = matcher.ratio()
        if rank == 2 and score < self.CLOSE:
            return False
        return self._offer(rank, score, path)

    def _close_enough(self) -> bool:
        matcher = self.matcher
        return (
            matcher.real_quick_ratio() >= self.CLOSE
            and matcher.quick_ratio() >= self.CLOSE
            and matcher.ratio() >= self.CLOSE
        )

    def _offer(self, rank: int, score: float, path: str) -> bool:
        self._order += 1
        item = (-rank, score, -self._order, path)
        if len(self._heap) < self.keep:
            heapq.heappush(self._heap, item)
            return True
        self.overflow = True
        if item > self._heap[0]:
            heapq.heapreplace(self._heap, item)
            return True
        return False

    def drop(self, path: str) -> None:
        """Forget a kept candidate that turned out not to be a file inside the mounts."""
        kept = [item for item in self._heap if item[3] != path]
        if len(kept) != len(self._heap):
            self._heap = kept
            heapq.heapify(self._heap)

    def best(self) -> list[tuple[int, float, str]]:
        """The kept matches, best first (rank, then similarity, then path)."""
        kept = [(-rank, score, path) for rank, score, _, path in self._heap]
        return sorted(kept, key=lambda m: (m[0], -m[1], m[2]))
