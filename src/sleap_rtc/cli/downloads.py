"""Moving files to and from a worker on the command line: a progress bar per file."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from sleap_rtc.cli.follow import emit_dict
from sleap_rtc.cli.render import plain, safe
from sleap_rtc.client import WorkerSession


@contextlib.contextmanager
def transfer_bar(
    console: Console, verb: str, name: str, *, disable: bool = False
) -> Iterator[Callable[[int, int], None]]:
    """A bar for one transfer of ``name``; yields the ``on_progress`` that moves it.

    On a terminal the bar goes once the transfer ends: the caller prints one line saying
    what landed where (or the error says why nothing did). Elsewhere (a log) the bar's
    last state stays."""
    with Progress(
        TextColumn(f"{verb} {{task.description}}", markup=False),  # a worker's file name
        BarColumn(bar_width=24),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
        transient=console.is_terminal,
    ) as bar:
        task = bar.add_task(plain(name), total=None)

        def show(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield show


def lane_used(session: WorkerSession) -> str:
    """How the bytes went: over which lane, or the channel."""
    lane = session.lanes.live()
    return f"{lane.via} lane" if lane is not None else f"{session.transport} channel"


async def download_outputs(
    session: WorkerSession, outputs: list[str], dest: Path, console: Console, as_json: bool
) -> None:
    """Download each of ``outputs`` into ``dest`` (checked: sizes and SHA-256)."""
    for remote in outputs:
        with transfer_bar(console, "download", PurePosixPath(remote).name, disable=as_json) as show:
            local = await session.download(remote, dest, on_progress=show)
        if as_json:
            emit_dict({"type": "DOWNLOADED", "remote": remote, "local": str(local)})
        else:
            console.print(f"  downloaded: {safe(local)}", highlight=False)
