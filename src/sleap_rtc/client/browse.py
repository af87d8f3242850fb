"""Browsing a worker's files, and fixing a rejected job's paths with what was found.

Pure logic, no terminal: :class:`BrowserModel` holds what a file browser shows
(a folder's entries, the highlighted row, the filter) and fetches pages from a
:class:`FileSource` as the user moves. The terminal front end lives in
:mod:`sleap_rtc.cli.browser`; the same model drives it in tests without one.

The second half maps a rejected job's problems to the spec fields they name, so
a chosen path can be put back into the spec and the job resubmitted.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sleap_rtc.jobs.problems import PATH_CODES, ProblemCode
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.protocol import jobs as p

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from sleap_rtc.client.jobs import WorkerSession

Want = Literal["file", "dir"]
_WILDCARDS = re.compile(r"[*?\[]")


class BrowseError(Exception):
    """The worker refused or failed one file request; the browser shows it and carries on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class FileSource(Protocol):
    """Where the browser's listings come from (a worker session, or local files in tests).

    Each call raises :class:`BrowseError` when the worker refuses the request.
    """

    async def mounts(self) -> list[p.FsMount]: ...

    async def list(
        self, path: str, *, offset: int, limit: int, pattern: str | None, dirs_only: bool
    ) -> p.FsListReply: ...

    async def stat(self, path: str) -> p.FsEntry: ...


class SessionSource:
    """A :class:`FileSource` over a :class:`~sleap_rtc.client.jobs.WorkerSession`."""

    def __init__(self, session: WorkerSession) -> None:
        self.session = session

    async def mounts(self) -> list[p.FsMount]:
        return await self._call(self.session.fs_mounts())

    async def list(
        self, path: str, *, offset: int, limit: int, pattern: str | None, dirs_only: bool
    ) -> p.FsListReply:
        return await self._call(
            self.session.fs_list(
                path, offset=offset, limit=limit, pattern=pattern, dirs_only=dirs_only
            )
        )

    async def stat(self, path: str) -> p.FsEntry:
        return await self._call(self.session.fs_stat(path))

    @staticmethod
    async def _call(request: Awaitable[Any]) -> Any:
        from sleap_rtc.client.jobs import WorkerError

        try:
            return await request
        except WorkerError as exc:
            raise BrowseError(exc.code, exc.message) from None


def glob_for(text: str) -> str | None:
    """The worker-side pattern for what the user typed: a glob as is, a word as ``*word*``."""
    text = text.strip()
    if not text:
        return None
    return text if _WILDCARDS.search(text) else f"*{text}*"


@dataclass(frozen=True)
class Row:
    """One line of the browser: a mount, a folder, a file, or "use this folder"."""

    kind: Literal["mount", "dir", "file", "other", "here"]
    name: str
    path: str
    size: int | None = None
    note: str = ""


class BrowserModel:
    """What the browser shows, and what each key does to it.

    ``want`` says what may be selected: a file (Enter on a file picks it) or a
    folder (the first row, "use this folder", picks the folder shown). Folders
    are opened with Enter. ``path`` is None while the mounts are shown.
    """

    def __init__(
        self,
        source: FileSource,
        *,
        want: Want = "file",
        filter_text: str = "",
        page_size: int = 200,
    ) -> None:
        self.source = source
        self.want = want
        self.filter = filter_text
        #: The starting filter is replaced by the first key typed, like selected text.
        self.filter_preset = bool(filter_text)
        self.page_size = page_size
        self.path: str | None = None
        self.rows: list[Row] = []
        self.total = 0
        self.cursor = 0
        self.top = 0
        self.message = ""
        self._mounts: list[p.FsMount] = []

    # -- loading --------------------------------------------------------------------------

    async def start(self, path: str | None = None) -> None:
        """Show ``path`` (or the mounts); a refused path falls back to the mounts."""
        self._mounts = await self.source.mounts()
        if path is not None:
            try:
                await self._load(path)
                return
            except BrowseError as exc:
                self.message = exc.message
        await self.show_mounts()

    async def show_mounts(self, highlight: str | None = None) -> None:
        if not self._mounts:
            self._mounts = await self.source.mounts()
        self.path = None
        self.rows = [Row("mount", m.path, m.path, note=_mount_note(m)) for m in self._mounts]
        self.total = len(self.rows)
        self._place(highlight)

    @property
    def _pattern(self) -> str | None:
        return None if self.want == "dir" else glob_for(self.filter)

    async def _load(self, path: str, highlight: str | None = None) -> None:
        page = await self.source.list(
            path,
            offset=0,
            limit=self.page_size,
            pattern=self._pattern,
            dirs_only=self.want == "dir",
        )
        self.path = page.path
        here = [Row("here", "[ use this folder ]", page.path)] if self.want == "dir" else []
        self.rows = here + [self._row(page.path, e) for e in page.entries]
        self.total = len(here) + page.total
        self._place(highlight)

    def _place(self, highlight: str | None) -> None:
        self.cursor = self.top = 0
        if highlight is not None:
            for index, row in enumerate(self.rows):
                if row.path == highlight:
                    self.cursor = index
                    break

    @staticmethod
    def _row(folder: str, entry: p.FsEntry) -> Row:
        path = entry.path or posixpath.join(folder, entry.name)
        return Row(entry.kind, entry.name, path, entry.size)

    async def _fill(self, upto: int) -> None:
        """Fetch more of the folder until row ``upto`` is loaded (or the folder ends)."""
        while self.path is not None and len(self.rows) <= upto and len(self.rows) < self.total:
            loaded = len(self.rows) - (1 if self.want == "dir" else 0)
            page = await self.source.list(
                self.path,
                offset=loaded,
                limit=self.page_size,
                pattern=self._pattern,
                dirs_only=self.want == "dir",
            )
            if not page.entries:
                self.total = len(self.rows)  # the folder shrank while we looked
                break
            self.rows.extend(self._row(self.path, e) for e in page.entries)

    # -- keys -----------------------------------------------------------------------------

    async def move(self, delta: int) -> None:
        if not self.total:
            return
        target = max(0, min(self.cursor + delta, self.total - 1))
        await self._run(self._fill(target))
        self.cursor = min(target, len(self.rows) - 1)

    async def home(self) -> None:
        self.cursor = 0

    async def end(self) -> None:
        await self.move(self.total)

    @property
    def current(self) -> Row | None:
        return self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None

    async def enter(self) -> str | None:
        """Open the highlighted folder, or return the path the user picked."""
        row = self.current
        self.message = ""
        if row is None:
            return None
        if row.kind in ("mount", "dir"):
            await self.open(row.path)
            return None
        if row.kind == "here":
            return row.path
        if self.want == "dir":
            self.message = "pick a folder: open it, then choose [ use this folder ]"
            return None
        if row.kind == "other":
            self.message = f"{row.name} is not a regular file"
            return None
        return row.path

    async def open(self, path: str) -> None:
        self.message = ""
        await self._run(self._load(path))

    async def back(self) -> None:
        """Go to the parent folder; from a mount's top folder, to the list of mounts."""
        self.message = ""
        if self.path is None:
            return
        here = self.path
        if any(here == m.path for m in self._mounts):
            await self.show_mounts(highlight=here)
            return
        parent = posixpath.dirname(here.rstrip("/")) or "/"
        try:
            await self._load(parent, highlight=here)
        except BrowseError:
            await self.show_mounts()

    async def type(self, text: str) -> None:
        """Typing edits the filter; the first key replaces a starting filter."""
        self.filter = text if self.filter_preset else self.filter + text
        self.filter_preset = False
        await self._refilter()

    async def erase(self) -> None:
        """Backspace: shorten the filter (or drop a starting one); with none, go up a folder."""
        if self.filter_preset:
            await self.clear_filter()
        elif self.filter:
            self.filter = self.filter[:-1]
            await self._refilter()
        else:
            await self.back()

    async def clear_filter(self) -> None:
        self.filter_preset = False
        if self.filter:
            self.filter = ""
            await self._refilter()

    async def _refilter(self) -> None:
        self.message = ""
        if self.path is not None:
            keep = self.current.path if self.current else None
            await self._run(self._load(self.path, highlight=keep))

    async def _run(self, action: Awaitable[None]) -> None:
        try:
            await action
        except BrowseError as exc:
            self.message = exc.message

    # -- view -----------------------------------------------------------------------------

    def window(self, height: int) -> tuple[list[Row], int]:
        """The rows that fit ``height`` lines, keeping the cursor in view; and its index."""
        height = max(1, height)
        if self.cursor < self.top:
            self.top = self.cursor
        elif self.cursor >= self.top + height:
            self.top = self.cursor - height + 1
        self.top = max(0, min(self.top, max(0, len(self.rows) - height)))
        return self.rows[self.top : self.top + height], self.cursor - self.top


def _mount_note(mount: p.FsMount) -> str:
    from rich.filesize import decimal

    parts = [mount.label]
    if mount.read_only:
        parts.append("read-only")
    if mount.free_bytes is not None:
        parts.append(f"{decimal(mount.free_bytes)} free")
    return ", ".join(parts)


# -- path correction ----------------------------------------------------------------------


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
