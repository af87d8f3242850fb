"""``keys …``: the worker keys of a room (a key lets one machine join as a worker)."""

from __future__ import annotations

import click
from rich.table import Table

from sleap_rtc.cli.render import make_console, plain, safe
from sleap_rtc.cli.rooms import print_json, room_option, run_client, server_option, when_text


@click.group()
def keys() -> None:
    """Worker keys: how a worker proves it may join a room.

    \b
    Examples:
      sleap-rtc keys create --room my-room --name lab-gpu-1
      sleap-rtc keys list --room my-room
      sleap-rtc keys revoke --room my-room lab-gpu-1
    """


@keys.command("create")
@room_option()
@click.option("--name", help="A name to recognise the key by [default: key-N].")
@server_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (includes the secret).")
def keys_create(room: str, name: str | None, server: str | None, as_json: bool) -> None:
    """Create a worker key. The secret is shown once; the server keeps only a digest.

    \b
    Examples:
      sleap-rtc keys create --room my-room --name lab-gpu-1
      sleap-rtc keys create --room my-room --name cluster --json   # the secret is in it
    """
    key = run_client(server, lambda c: c.create_key(room, name))
    if as_json:
        print_json(key.model_dump(mode="json"))
        return
    click.echo(f"worker key {plain(key.name)} ({plain(key.id)}) for room {plain(key.room)}:")
    click.echo(f"  {plain(key.secret)}")
    click.echo("It is shown only now. Start a worker with it:")
    click.echo(
        f"  SLEAP_RTC_WORKER_KEY={plain(key.secret)} sleap-rtc worker --room {plain(key.room)} "
        "--mount /path/to/data"
    )


@keys.command("list")
@room_option()
@server_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_list(room: str, server: str | None, as_json: bool) -> None:
    """List a room's worker keys (never their secrets).

    \b
    Examples:
      sleap-rtc keys list --room my-room
      sleap-rtc keys list --room my-room --json
    """
    found = run_client(server, lambda c: c.keys(room))
    if as_json:
        print_json([k.model_dump(mode="json") for k in found])
        return
    table = Table("name", "id", "created by", "created", "last used", "state")
    for key in found:
        table.add_row(
            safe(key.name),
            safe(key.id),
            safe(key.created_by or "-"),
            when_text(key.created_at),
            when_text(key.last_used_at) if key.last_used_at else "never",
            "revoked" if key.revoked_at else "active",
        )
    make_console().print(table)


@keys.command("revoke")
@click.argument("key")
@room_option()
@server_option
def keys_revoke(key: str, room: str, server: str | None) -> None:
    """Revoke a key (by name or id); workers using it are disconnected at once.

    \b
    Examples:
      sleap-rtc keys revoke --room my-room lab-gpu-1
      sleap-rtc keys revoke --room my-room key_3f9a1c0d5e7b2a64   # by id (`keys list`)
    """
    revoked = run_client(server, lambda c: c.revoke_key(room, key))
    click.echo(f"worker key {plain(revoked.name)} ({plain(revoked.id)}) revoked")
