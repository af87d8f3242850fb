"""Fetching a job's outputs from its worker, with a progress bar per file."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from sleap_rtc.cli.follow import emit_dict
from sleap_rtc.cli.render import plain, safe
from sleap_rtc.client import WorkerSession


async def download_outputs(
    session: WorkerSession, outputs: list[str], dest: Path, console: Console, as_json: bool
) -> None:
    """Download each of ``outputs`` into ``dest`` (checked: sizes and SHA-256)."""
    for remote in outputs:
        with Progress(
            TextColumn("download {task.description}", markup=False),  # a worker's file name
            BarColumn(bar_width=24),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            disable=as_json,
        ) as bar:
            task = bar.add_task(plain(PurePosixPath(remote).name), total=None)

            def show(done: int, total: int, task: TaskID = task) -> None:
                bar.update(task, completed=done, total=total)

            local = await session.download(remote, dest, on_progress=show)
        if as_json:
            emit_dict({"type": "DOWNLOADED", "remote": remote, "local": str(local)})
        else:
            console.print(f"  downloaded: {safe(local)}", highlight=False)
