"""Browsing a worker's files, and fixing a rejected job's paths with what was found.

Pure logic, no terminal: :class:`BrowserModel` holds what a file browser shows
(a folder's entries, the highlighted row, the filter) and fetches pages from a
:class:`FileSource` as the user moves. The terminal front end lives in
:mod:`sleap_rtc.cli.browser`; the same model drives it in tests without one.

Which spec field a rejected path belongs to, and putting a chosen path back, is
:mod:`sleap_rtc.client.pathfix`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sleap_rtc.jobs.paths import MODEL_CONFIG_NAMES, MODEL_WEIGHT_NAMES, ModelState, model_state
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


class FindingSource(FileSource, Protocol):
    """A :class:`FileSource` that also searches the mounts for files by name."""

    async def find(self, query: str, *, limit: int) -> p.FsFindReply: ...


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

    async def find(self, query: str, *, limit: int) -> p.FsFindReply:
        return await self._call(self.session.fs_find(query, limit=limit))

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


def name_matches(name: str, text: str) -> bool:
    """Whether ``name`` matches what the user typed, as the worker matches file names
    (:func:`glob_for`, case-insensitive)."""
    pattern = glob_for(text)
    return pattern is None or fnmatch.fnmatchcase(name.lower(), pattern.lower())


#: Folders checked at once for being models (one listing each) while a folder loads.
MODEL_CHECKS_AT_ONCE = 8
#: How a folder's row is marked while picking a model.
MODEL_NOTES: dict[ModelState, str] = {"complete": "model", "incomplete": "incomplete"}


async def folder_model_state(source: FileSource, path: str) -> ModelState | None:
    """:func:`~sleap_rtc.jobs.paths.model_state` of the folder ``path``, from one listing
    of it; raises :class:`BrowseError` when it can't be listed."""
    page = await source.list(path, offset=0, limit=500, pattern=None, dirs_only=False)
    return model_state({e.name for e in page.entries if e.kind == "file"})


def incomplete_model_message(path: str) -> str:
    return (
        f"{path} is an incomplete model: its training ended (cancelled or failed) before "
        "best.ckpt was saved; pick a model marked (model)"
    )


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
    are opened with Enter. ``path`` is None while the mounts are shown. Typing
    filters: files by the worker's pattern (folders always show), or in folder
    mode the subfolders by name, the cursor on the first match. ``models`` (folder
    mode) marks model folders and lets only a complete model be picked.
    """

    def __init__(
        self,
        source: FileSource,
        *,
        want: Want = "file",
        filter_text: str = "",
        page_size: int = 200,
        models: bool = False,
    ) -> None:
        self.source = source
        self.want = want
        #: Picking a model folder: folders are marked (model) or (incomplete), and
        #: only a complete model may be picked.
        self.models = models and want == "dir"
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
        #: Folder mode: the shown folder's subfolders loaded so far (before the filter),
        #: and how many it has.
        self._folders: list[Row] = []
        self._folders_total = 0
        self._model_states: dict[str, ModelState | None] = {}
        self._unlisted: set[str] = set()  # folders that could not be checked

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
        if self.want == "dir":
            self._folders = [self._row(page.path, e) for e in page.entries]
            self._folders_total = page.total
            self.path = page.path
            if self.filter:
                await self._fill_folders(page.total)
            await self._mark_models([page.path])
            self._show_folders(highlight)
            return
        self.path = page.path
        self.rows = [self._row(page.path, e) for e in page.entries]
        self.total = page.total
        self._place(highlight)

    # Folder mode filters the folder's subfolders here (the worker filters files only);
    # with a filter, every subfolder is loaded first so none is missed.

    def _show_folders(self, highlight: str | None) -> None:
        assert self.path is not None
        here = Row("here", "[ use this folder ]", self.path, note=self._model_note(self.path))
        shown = [r for r in self._folders if name_matches(r.name, self.filter)]
        self.rows = [here, *(self._with_model_note(r) for r in shown)]
        self.total = len(self.rows) if self.filter else 1 + self._folders_total
        self._place(highlight)

    async def _fill_folders(self, upto: int) -> None:
        """Load the shown folder's subfolders up to the ``upto``-th (or all there are)."""
        while self.path is not None and len(self._folders) < min(upto, self._folders_total):
            page = await self.source.list(
                self.path,
                offset=len(self._folders),
                limit=self.page_size,
                pattern=None,
                dirs_only=True,
            )
            if not page.entries:
                self._folders_total = len(self._folders)  # the folder shrank while we looked
                break
            self._folders.extend(self._row(self.path, e) for e in page.entries)

    async def _mark_models(self, extra: Sequence[str] = ()) -> None:
        """Picking a model: find out which loaded folders (and ``extra``) are models."""
        if not self.models:
            return
        wanted = dict.fromkeys([*extra, *(r.path for r in self._folders)])
        todo = [p for p in wanted if p not in self._model_states and p not in self._unlisted]
        limit = asyncio.Semaphore(MODEL_CHECKS_AT_ONCE)

        async def check(path: str) -> None:
            async with limit:
                try:
                    self._model_states[path] = await folder_model_state(self.source, path)
                except BrowseError:
                    self._unlisted.add(path)  # not marked; the worker checks it if picked

        await asyncio.gather(*(check(path) for path in todo))

    def _model_note(self, path: str) -> str:
        state = self._model_states.get(path)
        return MODEL_NOTES[state] if self.models and state is not None else ""

    def _with_model_note(self, row: Row) -> Row:
        note = self._model_note(row.path)
        return dataclasses.replace(row, note=note) if note else row

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
        if self.want == "dir":
            # With a filter every subfolder is loaded already.
            if not self.filter and len(self.rows) <= upto < self.total:
                loaded = len(self._folders)
                await self._fill_folders(upto)  # row i is subfolder i - 1
                await self._mark_models()
                self.rows.extend(self._with_model_note(r) for r in self._folders[loaded:])
                self.total = 1 + self._folders_total
            return
        while self.path is not None and len(self.rows) <= upto and len(self.rows) < self.total:
            page = await self.source.list(
                self.path,
                offset=len(self.rows),
                limit=self.page_size,
                pattern=self._pattern,
                dirs_only=False,
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
            # A folder that couldn't be checked is left to the worker's own check.
            checked = row.path in self._model_states
            if self.models and checked and self._model_states[row.path] != "complete":
                self.message = self._not_a_model(row.path)
                return None
            return row.path
        if self.want == "dir":
            self.message = "pick a folder: open it, then choose [ use this folder ]"
            return None
        if row.kind == "other":
            self.message = f"{row.name} is not a regular file"
            return None
        return row.path

    def _not_a_model(self, path: str) -> str:
        if self._model_states.get(path) == "incomplete":
            return incomplete_model_message(path)
        return (
            f"{path} is not a model folder (no {' / '.join(MODEL_CONFIG_NAMES)} with "
            f"{' / '.join(MODEL_WEIGHT_NAMES)}); open a folder marked (model)"
        )

    async def open(self, path: str) -> None:
        self.message = ""
        await self._run(self._open(path))

    async def _open(self, path: str, highlight: str | None = None) -> None:
        """Show another folder; in folder mode the filter (of subfolder names) starts anew."""
        if self.want != "dir" or path == self.path:
            await self._load(path, highlight)
            return
        kept = self.filter, self.filter_preset
        self.filter, self.filter_preset = "", False
        try:
            await self._load(path, highlight)
        except BrowseError:
            self.filter, self.filter_preset = kept
            raise

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
            await self._open(parent, highlight=here)
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
        if self.path is None:
            return
        keep = self.current.path if self.current else None
        if self.want == "dir":
            await self._run(self._refilter_folders(keep))
        else:
            await self._run(self._load(self.path, highlight=keep))

    async def _refilter_folders(self, keep: str | None) -> None:
        if self.filter:
            await self._fill_folders(self._folders_total)
            await self._mark_models()
        self._show_folders(keep)
        if self.filter and self.current is not None and self.current.kind == "here":
            # Typing jumps to the first folder that matches, if there is one.
            self.cursor = 1 if len(self.rows) > 1 else 0

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
