"""Live rendering of job events in a terminal (rich progress bars), and others' text.

Names, reasons, log lines, paths and errors that come from other people (the
server, a worker, a job) go through :func:`plain` or :func:`safe` before they are
printed: Rich markup in them is shown, not interpreted, and control characters
are shown as escapes instead of reaching the terminal.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Protocol

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column
from rich.text import Text

from sleap_rtc.jobs.events import NOTE_PREFIX, TrackProgress, TrainProgress
from sleap_rtc.jobs.states import JobState
from sleap_rtc.worker import JobEvent, LogEvent, ProgressEvent, QueueEvent, StateEvent

#: Characters that move the cursor, end a line, start an escape sequence or reorder text:
#: C0 controls but tab, DEL, C1 controls, the Unicode line and paragraph separators, and
#: the bidirectional embeddings, overrides and isolates.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def plain(text: object) -> str:
    """``text`` with every control character but tab shown as an escape (``\\x1b``, ``\\n``).

    For text that comes from others (names, reasons, log lines, paths, relayed errors)
    printed without Rich markup: ``click.echo``, ``markup=False``, :class:`~rich.text.Text`.
    One line stays one line, and nothing reaches the terminal as a control sequence.
    """
    return _CONTROL.sub(_visible, str(text))


def safe(text: object) -> str:
    """:func:`plain`, with Rich markup escaped: for others' text inside a markup string.

    ``f"[red]{safe(reason)}[/red]"`` shows ``[slurm]`` as it is, and a ``[link=...]`` or
    ``[/red]`` in ``reason`` is printed, not interpreted. Print it on a console from
    :func:`make_console` (no emoji codes), so ``:cd:`` in a path stays ``:cd:`` too.
    """
    return escape(plain(text))


def make_console(*, stderr: bool = False) -> Console:
    """The CLI's console: markup for its own colours, no ``:emoji:`` codes in anyone's text."""
    return Console(stderr=stderr, emoji=False)


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "eta --"
    seconds = round(seconds)
    return f"eta {seconds // 60}:{seconds % 60:02d}"


class JobProgressView:
    """One bar per model (training) or one frames bar (tracking), plus log lines.

    Use as a context manager; feed it every event of one job.
    """

    #: Below this many columns the bar is shorter and the elapsed time is left out,
    #: so a line (model, bar, epoch x/N, loss, val loss, ETA) fits an 80-column terminal.
    WIDE = 100

    def __init__(self, console: Console, *, show_logs: bool = False) -> None:
        self.console = console
        self.show_logs = show_logs
        wide = console.width >= self.WIDE
        columns = [
            # Descriptions hold model names from the worker: text, never markup.
            TextColumn("{task.description}", style="bold", markup=False),
            # Narrow: the bar takes what the text leaves, down to nothing.
            BarColumn(bar_width=24)
            if wide
            else BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=0)),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
        ]
        if wide:
            columns.append(TimeElapsedColumn())
        self.progress = Progress(*columns, console=console, transient=False, expand=not wide)
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> JobProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stop redrawing (e.g. while a question waits on the terminal), then go on."""
        self.progress.stop()
        try:
            yield
        finally:
            self.progress.start()

    def _task(self, key: str, description: str, total: int | None) -> TaskID:
        if key not in self._tasks:
            self._tasks[key] = self.progress.add_task(plain(description), total=total, detail="")
        return self._tasks[key]

    def update(self, event: JobEvent) -> None:
        """Feed one event of a local runner."""
        if isinstance(event, ProgressEvent):
            self.show_progress(event.progress)
        elif isinstance(event, LogEvent):
            self.log_line(event.line)
        elif isinstance(event, QueueEvent):
            self.queued(event.position)
        elif isinstance(event, StateEvent):
            record = event.record
            if record.state is not JobState.QUEUED:
                self.started()
            if record.state is JobState.COMPLETE:
                self.complete(record.stopped_early)

    def queued(self, position: int) -> None:
        """Where the job waits for a slot on its worker (until its first progress)."""
        ahead = position - 1
        detail = "starts next" if ahead == 0 else f"{ahead} job{'s' if ahead != 1 else ''} ahead"
        task = self._task("queued", "queued", None)
        self.progress.update(task, detail=detail)

    def started(self) -> None:
        """The job got its slot: the queue line goes."""
        task = self._tasks.pop("queued", None)
        if task is not None:
            self.progress.remove_task(task)

    def log_line(self, line: str) -> None:
        """A log line, shown with ``show_logs``; the worker's notes are always shown."""
        if line.startswith(NOTE_PREFIX):
            note = "note: " + line.removeprefix(NOTE_PREFIX)
            self.progress.console.print(Text(plain(note), style="yellow"), highlight=False)
        elif self.show_logs:
            self.progress.console.print(Text(plain(line), style="dim"), highlight=False)

    def complete(self, stopped_early: bool) -> None:
        """Fill the bars of a job that completed (unless it stopped early)."""
        if stopped_early:
            return
        for task in self.progress.tasks:  # by id: a removed task shifts the list
            if task.total is not None:
                self.progress.update(task.id, completed=task.total)

    def show_progress(self, p: TrainProgress | TrackProgress) -> None:
        self.started()
        if isinstance(p, TrainProgress):
            label = f"train {p.model_name}" + (
                f" ({p.model_index}/{p.n_models})" if p.n_models > 1 else ""
            )
            task = self._task(f"train-{p.model_index}", label, p.total_epochs)
            parts: list[str] = []  # the epoch is the bar's x/N
            if p.loss is not None:
                parts.append(f"loss {p.loss:.4g}")
            if p.val_loss is not None:
                parts.append(f"val {p.val_loss:.4g}")
            parts.append(_fmt_eta(p.eta_s))
            done = p.epoch if p.epoch_done else p.epoch - 1
            self.progress.update(task, completed=done, detail="  ".join(parts))
        else:
            task = self._task("track", "track", p.n_total)
            rate = f"{p.rate:.1f} fps" if p.rate is not None else ""
            self.progress.update(
                task,
                completed=p.n_processed,
                total=p.n_total,
                detail=f"frames  {rate}  {_fmt_eta(p.eta_s)}",
            )


class _Problem(Protocol):
    @property
    def field(self) -> str: ...

    @property
    def message(self) -> str: ...


def print_rejection(
    console: Console, problems: Sequence[_Problem], *, header: str = "Job rejected by worker:"
) -> None:
    """The user documents' format: a header, then ``- field: message`` per problem."""
    console.print(Text(plain(header), style="red"))
    for problem in problems:
        console.print(
            Text(f"  - {plain(problem.field)}: {plain(problem.message)}"),
            highlight=False,
            soft_wrap=True,
        )
