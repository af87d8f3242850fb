"""The interactive file browser: a worker's folders in the terminal, one key at a time.

Drawn inline below the command (not full screen) and erased when done, so the
terminal keeps its scrollback; it fits a plain 80×24 terminal. Keys:

- ↑/↓, PgUp/PgDn, Home/End: move
- Enter or →: open a folder, or select a file (or the "use this folder" row)
- ← or Backspace: up one folder (Backspace first erases the filter, if there is one)
- typing: edit the filter (``*.yaml``; a word without wildcards matches names containing it);
  picking a folder, it narrows the folders shown and highlights the first match
- Ctrl-U: clear the filter
- Esc: cancel; Ctrl-C: interrupt (KeyboardInterrupt)
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import IO, Any

from prompt_toolkit.application import Application
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import HSplit, Layout, Window
from prompt_toolkit.layout.controls import FormattedTextControl
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.output import Output
from prompt_toolkit.styles import Style
from prompt_toolkit.utils import get_cwidth
from rich.filesize import decimal

from sleap_rtc.cli.render import plain
from sleap_rtc.client.browse import BrowserModel, Row

#: Lines around the list: title, path, blank, status, keys, filter.
_CHROME = 6
_STYLE = Style.from_dict(
    {
        "title": "bold",
        "path": "bold",
        "dir": "ansiblue bold",
        "here": "ansigreen",
        "cursor": "reverse",
        "size": "ansibrightblack",
        "status": "ansibrightblack",
        "error": "ansired",
        "keys": "",
        "filter": "bold",
    }
)


def _icons() -> tuple[str, str]:
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    if encoding == "utf8" and os.environ.get("TERM") != "linux":
        return "\U0001f4c1", "\U0001f4c4"  # folder, page
    return "[d]", "   "


def _fit(text: str, width: int) -> str:
    """Shorten ``text`` to ``width`` cells, keeping its start and its end (the extension)."""
    if get_cwidth(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    keep = width - 1
    head, tail = text[: keep - keep // 3], text[len(text) - keep // 3 :] if keep // 3 else ""
    while get_cwidth(head) + get_cwidth(tail) > keep and head:
        head = head[:-1]
    return head + "…" + tail


class Browser:
    """The prompt_toolkit application around a :class:`BrowserModel`."""

    def __init__(
        self,
        model: BrowserModel,
        title: str,
        *,
        input: Input | None = None,
        output: Output | None = None,
    ) -> None:
        self.model = model
        self.title = title
        self.folder_icon, self.file_icon = _icons()
        self._lock = asyncio.Lock()
        self.app: Application[str | None] = Application(
            layout=Layout(self._layout()),
            key_bindings=self._keys(),
            style=_STYLE,
            full_screen=False,
            erase_when_done=True,
            mouse_support=False,
            input=input,
            output=output,
        )

    # -- layout ---------------------------------------------------------------------------

    def _size(self) -> tuple[int, int]:
        size = self.app.output.get_size()
        return max(20, size.columns), max(_CHROME + 3, size.rows)

    def _list_height(self) -> int:
        """As many lines as the folder has rows, up to what the terminal leaves free."""
        _, rows = self._size()
        most = max(3, min(16, rows - _CHROME - 2))
        return max(3, min(most, len(self.model.rows)))

    def _layout(self) -> HSplit:
        def line(get: Callable[[], StyleAndTextTuples]) -> Window:
            return Window(FormattedTextControl(get), height=1, dont_extend_height=True)

        return HSplit(
            [
                line(lambda: [("class:title", plain(self.title))]),
                line(self._path_line),
                line(lambda: []),
                Window(
                    FormattedTextControl(self._list),
                    height=lambda: Dimension.exact(self._list_height()),
                ),
                line(self._status),
                line(self._keys_line),
                line(self._filter_line),
            ]
        )

    def _path_line(self) -> StyleAndTextTuples:
        width, _ = self._size()
        # Names from the worker are shown with their control characters escaped, so a
        # newline or an escape sequence in one can't draw rows of its own.
        where = plain(self.model.path) if self.model.path is not None else "(the worker's mounts)"
        return [("", "Path: "), ("class:path", _fit(where, width - 7))]

    def _list(self) -> StyleAndTextTuples:
        width, _ = self._size()
        rows, cursor = self.model.window(self._list_height())
        if not rows:
            if self.model.filter:
                empty = f"  (nothing here matches {plain(self.model.filter)})"
            else:
                empty = "  (empty folder)"
            return [("class:status", empty)]
        out: StyleAndTextTuples = []
        for index, row in enumerate(rows):
            out.extend(self._row(row, width - 1, selected=index == cursor))
            out.append(("", "\n"))
        return out[:-1]

    def _row(self, row: Row, width: int, *, selected: bool) -> StyleAndTextTuples:
        if row.kind in ("mount", "dir"):
            icon, style, name = self.folder_icon, "class:dir", plain(row.name) + "/"
        elif row.kind == "here":
            icon, style, name = " ", "class:here", plain(row.name)
        else:
            icon, style, name = self.file_icon, "", plain(row.name)
        extra = ""
        if row.kind in ("file", "other") and row.size is not None:
            extra = f"  ({decimal(row.size)})"
        elif row.note:
            extra = f"  ({plain(row.note)})"
        marker = "> " if selected else "  "
        room = width - get_cwidth(marker + icon + " ") - get_cwidth(extra)
        name = _fit(name, max(8, room))
        cursor = " class:cursor" if selected else ""
        return [
            ("", marker),
            ("", icon + " "),
            (style + cursor, name),
            ("class:size", extra),
        ]

    def _status(self) -> StyleAndTextTuples:
        if self.model.message:
            width, _ = self._size()
            return [("class:error", _fit(plain(self.model.message), width - 1))]
        model = self.model
        if model.path is None:
            return [("class:status", f"{model.total} mount{'' if model.total == 1 else 's'}")]
        shown = model.total - (1 if model.want == "dir" else 0)
        if model.want == "dir" and model.filter and not shown:
            text = f"no folder here matches {plain(model.filter)}"
            return [("class:status", text)]
        if model.want == "dir":
            noun = "folder" if shown == 1 else "folders"
        else:
            noun = "entry" if shown == 1 else "entries"
        where = f"{model.cursor + 1}/{model.total}" if model.total else "0/0"
        return [("class:status", f"{shown} {noun}  ·  {where}")]

    def _filter_line(self) -> StyleAndTextTuples:
        model = self.model
        hint = "  (type to replace)" if model.filter_preset else "_"
        if model.want == "dir":
            hint += "  Folders only"
        return [("", "Filter: "), ("class:filter", plain(model.filter)), ("class:status", hint)]

    def _keys_line(self) -> StyleAndTextTuples:
        enter = "Open" if self.model.want == "dir" else "Select"
        return [
            (
                "class:keys",
                f"[↑/↓] Navigate  [Enter] {enter}  [←/Backspace] Back  [Esc] Cancel",
            )
        ]

    # -- keys -----------------------------------------------------------------------------

    def _keys(self) -> KeyBindings:
        keys = KeyBindings()
        model = self.model

        def bind(*names: str, eager: bool = False) -> Callable[[Any], Any]:
            def register(action: Callable[[KeyPressEvent], Awaitable[None]]) -> Any:
                async def handler(event: KeyPressEvent) -> object:
                    # One action at a time, in the order the keys came.
                    async with self._lock:
                        if not self.app.is_done:
                            try:
                                await action(event)
                            except Exception as exc:  # the session died: end with the error
                                if not self.app.is_done:
                                    self.app.exit(exception=exc)
                    # No redraw once the browser has ended: it would draw over the erased
                    # screen (NotImplemented tells prompt_toolkit not to invalidate).
                    return NotImplemented if self.app.is_done else None

                keys.add(*names, eager=eager)(handler)
                return action  # unwrapped, so bindings can be stacked

            return register

        @bind("up")
        async def _up(event: KeyPressEvent) -> None:
            await model.move(-1)

        @bind("down")
        async def _down(event: KeyPressEvent) -> None:
            await model.move(1)

        @bind("pageup")
        async def _page_up(event: KeyPressEvent) -> None:
            await model.move(-self._list_height())

        @bind("pagedown")
        async def _page_down(event: KeyPressEvent) -> None:
            await model.move(self._list_height())

        @bind("home")
        async def _home(event: KeyPressEvent) -> None:
            await model.home()

        @bind("end")
        async def _end(event: KeyPressEvent) -> None:
            await model.end()

        @bind("enter")
        @bind("right")
        async def _enter(event: KeyPressEvent) -> None:
            chosen = await model.enter()
            if chosen is not None:
                self.app.exit(result=chosen)

        @bind("left")
        async def _left(event: KeyPressEvent) -> None:
            await model.back()

        @bind("backspace")
        async def _backspace(event: KeyPressEvent) -> None:
            await model.erase()

        @bind("c-u")
        async def _clear(event: KeyPressEvent) -> None:
            await model.clear_filter()

        @bind("escape", eager=True)
        async def _cancel(event: KeyPressEvent) -> None:
            self.app.exit(result=None)

        @bind("c-c")
        async def _interrupt(event: KeyPressEvent) -> None:
            self.app.exit(exception=KeyboardInterrupt())

        @bind("<any>")
        async def _type(event: KeyPressEvent) -> None:
            text = "".join(k.data for k in event.key_sequence)
            if text.isprintable() and "/" not in text:
                await model.type(text)

        return keys

    async def run(self) -> str | None:
        """Show the browser until the user picks a path (returned) or cancels (None)."""
        return await self.app.run_async()


async def browse(
    model: BrowserModel,
    title: str,
    *,
    input: Input | None = None,
    output: Output | None = None,
) -> str | None:
    """Run the browser; when stdout is not a terminal (``path=$(…)``), draw on /dev/tty."""
    tty: IO[str] | None = None
    if output is None and not sys.stdout.isatty():
        try:
            tty = open("/dev/tty", "w")  # noqa: SIM115 - closed below
        except OSError:
            tty = None
        if tty is not None:
            from prompt_toolkit.output import create_output

            output = create_output(stdout=tty)
    try:
        return await Browser(model, title, input=input, output=output).run()
    finally:
        if tty is not None:
            tty.close()
