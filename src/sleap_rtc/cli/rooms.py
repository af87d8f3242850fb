"""``login``, ``logout``, ``whoami`` and ``rooms …``: talk to the server."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, TypeVar

import click
from rich.table import Table

from sleap_rtc.cli.durations import Duration
from sleap_rtc.cli.exitcodes import EXIT_REJECTED, exit_code_for
from sleap_rtc.cli.render import make_console, plain, safe
from sleap_rtc.client import ClientError, ServerClient
from sleap_rtc.client.config import ConfigError, resolve_room
from sleap_rtc.protocol import api

T = TypeVar("T")

server_option = click.option(
    "--server",
    metavar="URL",
    help="Server URL [default: SLEAP_RTC_SERVER, config.toml, or the last login].",
)


class _Rejected(click.ClickException):
    """A client error that means the input was refused (an unknown room, an invalid code)."""

    exit_code = EXIT_REJECTED


def run_client(server: str | None, action: Callable[[ServerClient], Coroutine[Any, Any, T]]) -> T:
    """Run ``action`` with a client for ``server``; client errors become clean exits."""

    async def go() -> T:
        async with ServerClient.from_config(server) as client:
            return await action(client)

    try:
        return asyncio.run(go())
    except (ClientError, ConfigError) as exc:
        failure = _Rejected if exit_code_for(exc) == EXIT_REJECTED else click.ClickException
        raise failure(plain(exc)) from None  # relayed from the server


def room_option(required: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @click.option(
            "--room",
            "-r",
            metavar="ROOM",
            help="Room name [default: SLEAP_RTC_ROOM or room in config.toml].",
        )
        @wraps(func)
        def wrapper(*args: Any, room: str | None, **kwargs: Any) -> Any:
            resolved = resolve_room(room)
            if resolved is None and required:
                raise click.UsageError(
                    "no room given: pass --room ROOM (or set SLEAP_RTC_ROOM, "
                    'or room = "..." in config.toml)'
                )
            return func(*args, room=resolved, **kwargs)

        return wrapper

    return decorate


def when_text(value: datetime | None) -> str:
    if value is None:
        return "never"
    delta = datetime.now(UTC) - value
    seconds = int(delta.total_seconds())
    if seconds < 0:
        left = -seconds
        if left < 3600:
            return f"in {left // 60} min"
        if left < 86400 * 2:
            return f"in {left // 3600} h"
        return f"in {left // 86400} d"
    if seconds < 5:
        return "just now"
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 86400 * 2:
        return f"{seconds // 3600} h ago"
    return value.astimezone().strftime("%Y-%m-%d %H:%M")


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


# -- login ------------------------------------------------------------------------------------


@click.command()
@server_option
@click.option("--username", "-u", help="Account name [prompted when not given].")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def login(server: str | None, username: str | None, password_stdin: bool) -> None:
    """Log in to a sleap-rtc server and keep the session on this machine.

    The session (a short-lived access token and a refresh token) is saved in
    credentials.json in the config folder, readable by you only.

    \b
    Examples:
      sleap-rtc login --server http://gpu-server.lab:8000
      printf '%s\\n' "$PASSWORD" | sleap-rtc login -u alice --password-stdin
    """
    interactive = sys.stdin.isatty()
    if username is None:
        if not interactive or password_stdin:
            raise click.UsageError("--username is required without a terminal")
        username = click.prompt("Username")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.ClickException("no password on standard input")
    elif interactive:
        password = click.prompt("Password", hide_input=True)
    else:
        raise click.UsageError("no terminal to ask for a password; use --password-stdin")

    async def go(client: ServerClient) -> tuple[str, api.UserView]:
        return client.url, await client.login(str(username), password)

    url, user = run_client(server, go)
    admin = " (admin)" if user.is_admin else ""
    click.echo(f"logged in to {url} as {plain(user.username)}{admin}")


@click.command()
@server_option
def logout(server: str | None) -> None:
    """End the session: the server revokes it and this machine forgets it.

    \b
    Examples:
      sleap-rtc logout
      sleap-rtc logout --server http://gpu-server.lab:8000
    """

    async def go(client: ServerClient) -> tuple[str, bool]:
        return client.url, await client.logout()

    url, had = run_client(server, go)
    click.echo(f"logged out of {url}" if had else f"was not logged in to {url}")


@click.command()
@server_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def whoami(server: str | None, as_json: bool) -> None:
    """Show who you are logged in as.

    \b
    Examples:
      sleap-rtc whoami
      sleap-rtc whoami --server http://gpu-server.lab:8000 --json
    """

    async def go(client: ServerClient) -> tuple[str, api.UserView]:
        return client.url, await client.whoami()

    url, user = run_client(server, go)
    if as_json:
        print_json({"server": url, **user.model_dump()})
    else:
        click.echo(f"{plain(user.username)}{' (admin)' if user.is_admin else ''} on {url}")


# -- rooms ------------------------------------------------------------------------------------


@click.group()
def rooms() -> None:
    """Rooms: who may use which workers.

    \b
    Examples:
      sleap-rtc rooms create my-room
      sleap-rtc rooms list
      sleap-rtc rooms workers --room my-room
      sleap-rtc rooms invite my-room          # a code a colleague passes to `rooms join`
    """


@rooms.command("create")
@click.argument("name")
@click.option(
    "--expires",
    type=Duration(allow_never=True),
    default="never",
    show_default=True,
    help="When the room is deleted by itself: e.g. 30d, 12h, or never.",
)
@server_option
def rooms_create(name: str, expires: timedelta | None, server: str | None) -> None:
    """Create a room; you become its owner.

    \b
    Examples:
      sleap-rtc rooms create my-room
      sleap-rtc rooms create workshop-2025 --expires 30d   # deleted by itself in 30 days
    """
    room = run_client(server, lambda c: c.create_room(name, expires))
    until = f", expires {when_text(room.expires_at)}" if room.expires_at else ""
    click.echo(f"room {plain(room.name)} created{until}")
    click.echo(f"next: sleap-rtc keys create --room {plain(room.name)}   # a key for a worker")


@rooms.command("list")
@server_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rooms_list(server: str | None, as_json: bool) -> None:
    """List the rooms you belong to.

    \b
    Examples:
      sleap-rtc rooms list
      sleap-rtc rooms list --json
    """
    found = run_client(server, lambda c: c.rooms())
    if as_json:
        print_json([r.model_dump(mode="json") for r in found])
        return
    if not found:
        click.echo("you belong to no room yet: `sleap-rtc rooms create NAME` or `rooms join CODE`")
        return
    table = Table("room", "role", "members", "workers online", "expires", "created")
    for room in found:
        table.add_row(
            safe(room.name),
            safe(room.role),
            str(room.members),
            str(room.workers_online),
            when_text(room.expires_at) if room.expires_at else "never",
            when_text(room.created_at),
        )
    make_console().print(table)


@rooms.command("info")
@click.argument("name", required=False)
@room_option(required=False)
@server_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rooms_info(name: str | None, room: str | None, server: str | None, as_json: bool) -> None:
    """Show a room: members, keys, workers.

    \b
    Examples:
      sleap-rtc rooms info my-room
      sleap-rtc rooms info --room my-room --json
      sleap-rtc rooms info          # the room in SLEAP_RTC_ROOM or config.toml
    """
    target = name or room
    if not target:
        raise click.UsageError("name the room: sleap-rtc rooms info ROOM")
    info = run_client(server, lambda c: c.room(target))
    if as_json:
        print_json(info.model_dump(mode="json"))
        return
    console = make_console()
    console.print(f"[bold]{safe(info.name)}[/bold] (id {safe(info.id)}), you are {safe(info.role)}")
    console.print(
        f"owner: {safe(info.owner or '-')}; created {when_text(info.created_at)}; "
        f"expires {when_text(info.expires_at) if info.expires_at else 'never'}"
    )
    console.print(
        f"workers: {info.workers_online} online of {info.workers_known} known; "
        f"active worker keys: {info.keys_active}"
    )
    table = Table("member", "role", "joined")
    for member in info.member_list:
        table.add_row(safe(member.username), safe(member.role), when_text(member.joined_at))
    console.print(table)


@rooms.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Don't ask for confirmation.")
@server_option
def rooms_delete(name: str, yes: bool, server: str | None) -> None:
    """Delete a room (owners only): its keys stop working and its workers are disconnected.

    \b
    Examples:
      sleap-rtc rooms delete workshop-2025
      sleap-rtc rooms delete workshop-2025 --yes     # no question: for scripts
    """
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("add --yes to delete without a terminal to confirm on")
        click.confirm(f"Delete room {name} and all its worker keys?", abort=True)
    run_client(server, lambda c: c.delete_room(name))
    click.echo(f"room {name} deleted")


@rooms.command("invite")
@click.argument("name")
@click.option(
    "--expires", type=Duration(), default="7d", show_default=True, help="How long the code works."
)
@click.option(
    "--uses",
    type=click.IntRange(1, 10_000),
    default=1,
    show_default=True,
    help="How many people can join with it.",
)
@server_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rooms_invite(
    name: str, expires: timedelta, uses: int, server: str | None, as_json: bool
) -> None:
    """Make an invite code for a room (owners only).

    \b
    Examples:
      sleap-rtc rooms invite my-room                  # one person, for 7 days
      sleap-rtc rooms invite my-room --expires 2d --uses 20 --json
    """
    invite = run_client(server, lambda c: c.invite(name, expires, uses))
    if as_json:
        print_json(invite.model_dump(mode="json"))
        return
    click.echo(f"invite code for {plain(invite.room)}: {plain(invite.code)}")
    click.echo(f"works {invite.max_uses} time(s), until {invite.expires_at:%Y-%m-%d %H:%M} UTC")
    click.echo(f"they run: sleap-rtc rooms join {plain(invite.code)}")


@rooms.command("join")
@click.argument("code")
@server_option
def rooms_join(code: str, server: str | None) -> None:
    """Join a room with an invite code.

    \b
    Example:
      sleap-rtc rooms join k7m2q3xwatbn5hcz     # the code from `rooms invite`
    """
    room = run_client(server, lambda c: c.join(code))
    click.echo(
        f"joined room {plain(room.name)} ({room.members} members, "
        f"{room.workers_online} workers online)"
    )


def _gpu_text(worker: api.WorkerView) -> tuple[str, str]:
    if not worker.gpus:
        return ("CPU only" if worker.accelerator == "cpu" else worker.accelerator.upper(), "-")
    names = sorted({g.name for g in worker.gpus})
    model = names[0] if len(names) == 1 else ", ".join(names)
    if len(worker.gpus) > 1:
        model = f"{len(worker.gpus)}× {model}"
    memory = []
    for gpu in worker.gpus:
        if gpu.memory_free_mb is not None:
            memory.append(f"{gpu.memory_free_mb:,}/{gpu.memory_total_mb:,} MB free")
        else:
            memory.append(f"{gpu.memory_total_mb:,} MB")
    return model, "; ".join(memory)


@rooms.command("workers")
@room_option()
@click.option(
    "--min-gpu-memory",
    type=click.IntRange(0),
    metavar="MB",
    help="Only workers with a GPU that has at least this much free memory.",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["online", "busy", "offline"]),
    help="Only workers in this state (repeat for several).",
)
@click.option("--limit", type=click.IntRange(1), metavar="N", help="Show the first N only.")
@server_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def rooms_workers(
    room: str,
    min_gpu_memory: int | None,
    statuses: tuple[str, ...],
    limit: int | None,
    server: str | None,
    as_json: bool,
) -> None:
    """List the workers of a room: online, busy or offline (the server filters).

    \b
    Examples:
      sleap-rtc rooms workers --room my-room
      sleap-rtc rooms workers --room my-room --status online --min-gpu-memory 8000 --json
    """
    found = run_client(
        server,
        lambda c: c.workers(room, min_gpu_memory, statuses=list(statuses) or None, limit=limit),
    )
    if as_json:
        print_json([w.model_dump(mode="json") for w in found])
        return
    if not found:
        hint = " with that much GPU memory" if min_gpu_memory else ""
        if statuses:
            hint += " " + " or ".join(statuses)
        click.echo(f"no workers{hint} in room {room}. Start one on a GPU machine:")
        click.echo(f"  sleap-rtc keys create --room {room}")
        click.echo(f"  SLEAP_RTC_WORKER_KEY=srk_... sleap-rtc worker --room {room} --mount /data")
        return
    style = {"online": "green", "busy": "yellow", "offline": "dim"}
    table = Table("name", "id", "status", "GPU", "GPU memory", "jobs", "last seen")
    for worker in found:
        model, memory = _gpu_text(worker)
        table.add_row(
            safe(worker.name),
            safe(worker.id),
            f"[{style[worker.status]}]{safe(worker.status)}[/]",
            safe(model),
            safe(memory),
            f"{worker.running_jobs}/{worker.max_concurrent_jobs}",
            "now" if worker.status != "offline" else when_text(worker.last_seen),
        )
    console = make_console()
    console.print(table)
    for worker in found:
        if worker.sandbox == "off":
            console.print(
                f"[yellow]{safe(worker.name)} runs jobs without a sandbox[/] "
                '(sandbox = "off"): a job there can read what its worker user can.',
                highlight=False,
            )
