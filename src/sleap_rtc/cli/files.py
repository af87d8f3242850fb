"""``sleap-rtc browse`` and ``fs``: a worker's files, inside its mounts.

``browse`` is the interactive browser; ``fs`` prints listings and searches for scripts,
and gets and puts files (``put`` only into a writable mount).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import click
from rich.filesize import decimal
from rich.table import Table

from sleap_rtc.cli.downloads import lane_used, transfer_bar
from sleap_rtc.cli.exitcodes import EXIT_INTERRUPTED, EXIT_REJECTED, run_client
from sleap_rtc.cli.render import make_console, plain, safe
from sleap_rtc.cli.targets import worker_session_options
from sleap_rtc.client import ServerClient
from sleap_rtc.client.browse import BrowserModel, SessionSource
from sleap_rtc.client.jobs import WorkerSession
from sleap_rtc.client.locate import open_session
from sleap_rtc.client.select import choose_worker


def _size(value: int | None) -> str:
    return "" if value is None else decimal(value)


def _fs_options(func: Any) -> Any:
    func = worker_session_options("The worker [default: the only one online].")(func)
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


async def _session(server: ServerClient, room: str, options: dict[str, Any]) -> WorkerSession:
    worker = choose_worker(await server.workers(room), room, worker_id=options["worker_id"])
    return await open_session(server, room, worker.id, transport=options["transport"])


@click.group()
def fs() -> None:
    """A worker's files: its mounts, folders, a search by name, and moving files.

    Only inside the worker's mounts; `put` only into a writable one.

    \b
    Examples:
      sleap-rtc fs mounts --room my-room
      sleap-rtc fs ls --room my-room /vast/project --filter '*.yaml'
      sleap-rtc fs ls --room my-room project/configs   # a path may start with a mount label
      sleap-rtc fs find --room my-room centroid.yaml
      sleap-rtc fs get --room my-room project/models/centroid_250101 ./models
      sleap-rtc fs put --room my-room labels.v003.slp project/labels
    """


@fs.command("mounts")
@_fs_options
def fs_mounts(room: str, as_json: bool, **options: Any) -> None:
    """List the worker's mounts and their free space.

    \b
    Examples:
      sleap-rtc fs mounts --room my-room
      sleap-rtc fs mounts --room my-room --worker-id worker-abc123 --json
    """

    async def go() -> int:
        async with (
            ServerClient.from_config(options["server"]) as server,
            await _session(server, room, options) as session,
        ):
            mounts = await session.fs_mounts()
        if as_json:
            click.echo(json.dumps([m.model_dump() for m in mounts], indent=2))
            return 0
        table = Table("label", "path", "access", "free", "size")
        for mount in mounts:
            access = "read-only" if mount.read_only else "read-write"
            table.add_row(
                safe(mount.label),
                safe(mount.path),
                access,
                _size(mount.free_bytes),
                _size(mount.total_bytes),
            )
        make_console().print(table)
        return 0

    run_client(go)


@fs.command("ls")
@click.argument("path")
@_fs_options
@click.option("--filter", "pattern", metavar="GLOB", help="Only files matching, e.g. '*.slp'.")
@click.option("--all", "show_all", is_flag=True, help="Every entry, not only the first page.")
def fs_ls(
    path: str, room: str, as_json: bool, pattern: str | None, show_all: bool, **options: Any
) -> None:
    """List a folder on the worker: folders first, then files, with sizes.

    PATH is absolute on the worker, or starts with a mount's label (`fs mounts` lists
    them): `demo` is that mount's folder, `demo/configs` a folder in it.

    \b
    Examples:
      sleap-rtc fs ls --room my-room /vast/project/configs --filter '*.yaml'
      sleap-rtc fs ls --room my-room demo --all
    """

    async def go() -> int:
        async with (
            ServerClient.from_config(options["server"]) as server,
            await _session(server, room, options) as session,
        ):
            page = await session.fs_list(path, pattern=pattern)
            entries = list(page.entries)
            while show_all and len(entries) < page.total and page.entries:
                page = await session.fs_list(path, offset=len(entries), pattern=pattern)
                entries.extend(page.entries)
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "path": page.path,
                        "total": page.total,
                        "entries": [e.model_dump(exclude_none=True) for e in entries],
                    },
                    indent=2,
                )
            )
            return 0
        click.echo(plain(page.path))
        for entry in entries:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.modified))
            name = plain(entry.name) + ("/" if entry.kind == "dir" else "")
            click.echo(f"  {name:<50} {_size(entry.size):>9}  {when}")
        if len(entries) < page.total:
            click.echo(f"  … {page.total - len(entries)} more (--all lists everything)")
        return 0

    run_client(go)


@fs.command("find")
@click.argument("pattern")
@_fs_options
@click.option("--under", metavar="PATH", help="Search only this folder.")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
def fs_find(
    pattern: str, room: str, as_json: bool, under: str | None, limit: int, **options: Any
) -> None:
    """Find files by name (e.g. centroid.yaml) or glob (e.g. '*.slp'), best matches first.

    \b
    Examples:
      sleap-rtc fs find --room my-room centroid.yaml
      sleap-rtc fs find --room my-room '*.slp' --under /vast/data --limit 50
    """

    async def go() -> int:
        async with (
            ServerClient.from_config(options["server"]) as server,
            await _session(server, room, options) as session,
        ):
            found = await session.fs_find(pattern, under=under, limit=limit)
        if as_json:
            click.echo(found.model_dump_json(indent=2, exclude={"request_id", "v", "type"}))
            return 0
        if not found.matches:
            click.echo(f"nothing named like {pattern!r} in the worker's mounts")
        for match in found.matches:
            click.echo(f"{plain(match.entry.path)}  {_size(match.entry.size)}")
        if found.truncated:
            click.echo(f"(search stopped early: {plain(found.truncated)}; narrow it with --under)")
        return 0

    run_client(go)


@fs.command("get")
@click.argument("remote")
@click.argument(
    "dest", required=False, default=".", type=click.Path(file_okay=False, path_type=Path)
)
@_fs_options
def fs_get(remote: str, dest: Path, room: str, as_json: bool, **options: Any) -> None:
    """Download a file or a folder from the worker into DEST (default: here).

    REMOTE is absolute on the worker or starts with a mount's label. Every file's size
    and SHA-256 is checked, and nothing is left half-written if the transfer fails;
    a name that exists in DEST already is refused. Bytes go over a direct lane to
    the worker when this machine can reach it, else through the server's relay lane.

    \b
    Examples:
      sleap-rtc fs get --room my-room project/models/centroid_250101 ./models
      sleap-rtc fs get --room my-room /vast/project/labels.v002.slp
    """

    async def go() -> int:
        console = make_console(stderr=as_json)
        async with (
            ServerClient.from_config(options["server"]) as server,
            await _session(server, room, options) as session,
        ):
            name = PurePosixPath(remote).name or remote
            with transfer_bar(console, "get", name, disable=as_json) as show:
                local = await session.download(remote, dest, on_progress=show)
            via = lane_used(session)
        size = _local_size(local)
        if as_json:
            click.echo(
                json.dumps({"remote": remote, "local": str(local), "bytes": size, "via": via})
            )
        else:
            console.print(f"got {safe(local)} ({decimal(size)}, {via})", highlight=False)
        return 0

    run_client(go)


@fs.command("put")
@click.argument("local", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dest")
@_fs_options
def fs_put(local: Path, dest: str, room: str, as_json: bool, **options: Any) -> None:
    """Upload the file LOCAL into the folder DEST of a writable mount on the worker.

    DEST is absolute on the worker or starts with a mount's label (`fs mounts` says
    which are writable). The file keeps its name and never replaces one that is there
    already: that upload is refused and nothing is written. The size and SHA-256 are
    checked before the file appears under its name.

    \b
    Examples:
      sleap-rtc fs put --room my-room labels.v003.slp project/labels
      sleap-rtc fs put --room my-room centroid.yaml /vast/project/configs
    """

    async def go() -> int:
        console = make_console(stderr=as_json)
        async with (
            ServerClient.from_config(options["server"]) as server,
            await _session(server, room, options) as session,
        ):
            with transfer_bar(console, "put", local.name, disable=as_json) as show:
                done = await session.upload(local, dest=dest, on_progress=show)
            via = lane_used(session)
        size = local.stat().st_size
        if as_json:
            click.echo(
                json.dumps({"local": str(local), "remote": done.path, "bytes": size, "via": via})
            )
        else:
            console.print(f"put {safe(done.path)} ({decimal(size)}, {via})", highlight=False)
        return 0

    run_client(go)


def _local_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@click.command()
@worker_session_options("The worker [default: the only one online].")
@click.option("--start", metavar="PATH", help="Open this folder [default: the worker's mounts].")
@click.option("--filter", "pattern", metavar="GLOB", default="", help="Start with this filter.")
@click.option("--folders", is_flag=True, help="Pick a folder (e.g. a model) instead of a file.")
def browse(room: str, start: str | None, pattern: str, folders: bool, **options: Any) -> None:
    """Browse a worker's files and print the path you pick.

    \b
    Keys:
      Up/Down, PgUp/PgDn  move           Enter or Right  open a folder / select
      Left                up a folder    Backspace       erase the filter, then up
      typing              edit the filter (*.yaml, or a word the name contains)
      Ctrl-U              clear filter   Esc or Ctrl-C   cancel (exit 130)

    The browser draws on the terminal even when the output is captured.

    \b
    Examples:
      config=$(sleap-rtc browse --room my-room --filter '*.yaml')
      sleap-rtc browse --room my-room --folders --start /vast/models   # pick a model folder
    """
    if not sys.stdin.isatty():
        click.echo(
            "Error: browse needs a terminal. In scripts use `sleap-rtc fs ls` or `sleap-rtc fs "
            "find`.",
            err=True,
        )
        sys.exit(EXIT_REJECTED)

    async def go() -> int:
        async with (
            ServerClient.from_config(options["server"]) as server,
            await _session(server, room, options) as session,
        ):
            from sleap_rtc.cli.browser import browse as run_browser

            model = BrowserModel(
                SessionSource(session), want="dir" if folders else "file", filter_text=pattern
            )
            await model.start(start)
            title = f"{session.worker_name}: select a {'folder' if folders else 'file'}"
            chosen = await run_browser(model, title)
        if chosen is None:
            click.echo("cancelled", err=True)
            return EXIT_INTERRUPTED
        click.echo(plain(chosen))  # one line, whatever the worker's names hold
        return 0

    run_client(go)
