"""``sleap-rtc notify …``: where the server posts when your jobs (or a room's) end.

A webhook URL is a secret (whoever has it can post to the channel): the server
never shows it again, only its scheme and host; ``-`` reads it from standard input
so it stays out of shell history and ``ps``.
"""

from __future__ import annotations

import json
import sys

import click

from sleap_rtc.cli.render import plain
from sleap_rtc.cli.rooms import run_client, server_option
from sleap_rtc.client import ServerClient
from sleap_rtc.client.config import ConfigError, config_path, notify_settings
from sleap_rtc.protocol import api

SET_HINT = "sleap-rtc notify set https://hooks.slack.com/services/T000/B000/XXXX"

room_flag = click.option(
    "--room",
    "-r",
    metavar="ROOM",
    help="The room's webhook (every job of the room) instead of your own; "
    "setting, removing and testing it is for the room's owners.",
)


def _whose(room: str | None) -> str:
    return "your webhook" if room is None else f"room {plain(room)}'s webhook"


def _when(on_start: bool) -> str:
    return "when a job starts and when it ends" if on_start else "when a job ends"


def _describe(view: api.WebhookView, room: str | None) -> str:
    if not view.set:
        if room is None:
            return f"you have no webhook; set one with `{SET_HINT}`"
        return (
            f"room {plain(view.name)} has no webhook; an owner sets one with "
            f"`sleap-rtc notify set URL --room {plain(view.name)}`"
        )
    where = f" to {plain(view.hint)}/…" if view.hint else ""
    line = f"{_whose(room)} posts{where} {_when(view.on_start)}"
    if view.created_at is not None:
        line += f" (set {view.created_at.astimezone():%Y-%m-%d %H:%M})"
    if view.hint is None:
        line += "; only the room's owners see where it goes"
    return line


def _read_url(url: str | None) -> tuple[str, bool | None]:
    """The URL to set and, when it comes from config.toml, the on_start given there."""
    if url == "-":
        text = sys.stdin.readline().strip()
        if not text:
            raise click.UsageError("no webhook URL on standard input")
        return text, None
    if url is not None:
        return url, None
    try:
        settings = notify_settings()
    except ConfigError as exc:
        raise click.ClickException(plain(exc)) from None
    if settings.webhook is None:
        raise click.UsageError(
            "no URL given and no webhook in config.toml: pass the URL (or - to read it "
            f"from standard input), or add to {config_path()}:\n"
            '  [notify]\n  webhook = "https://hooks.slack.com/services/..."'
        )
    return settings.webhook, settings.on_start


def _checked(url: str) -> str:
    try:
        return api.check_webhook_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from None


def _set(server: str | None, url: str, on_start: bool, room: str | None) -> None:
    url = _checked(url)

    async def go(client: ServerClient) -> api.WebhookView:
        return await client.set_webhook(url, on_start=on_start, room=room)

    view = run_client(server, go)
    click.echo(f"webhook set: {_describe(view, room)}")
    test = "sleap-rtc notify test" + (f" --room {plain(room)}" if room else "")
    click.echo(f"next: {test}")


@click.group()
def notify() -> None:
    """Notifications: the server posts to a webhook (Slack and the like) when jobs end.

    Your webhook hears of your jobs in every room you belong to; a room's webhook
    (set by its owners) hears of every job in the room. `--no-notify` on `train` or
    `track` keeps one job quiet.
    """


@notify.command("set")
@click.argument("url", required=False)
@click.option("--on-start", is_flag=True, help="Also post when a job starts running.")
@room_flag
@server_option
def set_hook(url: str | None, on_start: bool, room: str | None, server: str | None) -> None:
    """Set the webhook your job notifications are posted to (replacing the one before).

    URL is an incoming-webhook URL (Slack, Mattermost, a Teams workflow, or any
    https endpoint that takes JSON); give - to read it from standard input. Without
    URL, [notify] webhook of config.toml is set (as `notify sync` does).

    \b
    Examples:
      sleap-rtc notify set https://hooks.slack.com/services/T000/B000/XXXX
      printf '%s\\n' "$SLACK_HOOK" | sleap-rtc notify set - --on-start
      sleap-rtc notify set https://hooks.slack.com/services/T000/B000/YYYY --room lab
      sleap-rtc notify set                # the [notify] webhook of config.toml
    """
    text, from_config = _read_url(url)
    _set(server, text, on_start or bool(from_config), room)


@notify.command("sync")
@server_option
def sync(server: str | None) -> None:
    """Set your webhook to the [notify] table of config.toml (webhook, on_start).

    \b
    Example config.toml:
      [notify]
      webhook = "https://hooks.slack.com/services/T000/B000/XXXX"
      on_start = false

    \b
    Examples:
      sleap-rtc notify sync
      sleap-rtc notify sync --server https://sleap-rtc.lab.example.org
    """
    text, from_config = _read_url(None)
    _set(server, text, bool(from_config), None)


@notify.command("show")
@room_flag
@server_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(room: str | None, server: str | None, as_json: bool) -> None:
    """Show whether a webhook is set, and where it posts (never its full URL).

    \b
    Examples:
      sleap-rtc notify show
      sleap-rtc notify show --room lab
      sleap-rtc notify show --json
    """

    async def go(client: ServerClient) -> api.WebhookView:
        return await client.webhook(room)

    view = run_client(server, go)
    if as_json:
        click.echo(json.dumps(view.model_dump(mode="json"), indent=2))
        return
    click.echo(_describe(view, room))


@notify.command("off")
@room_flag
@server_option
def off(room: str | None, server: str | None) -> None:
    """Remove the webhook: nothing is posted any more.

    \b
    Examples:
      sleap-rtc notify off
      sleap-rtc notify off --room lab
    """

    async def go(client: ServerClient) -> bool:
        return await client.delete_webhook(room)

    if run_client(server, go):
        click.echo(f"{_whose(room)} is removed; nothing will be posted")
    else:
        click.echo(f"{_whose(room)} was not set; nothing to remove")


@notify.command("test")
@room_flag
@server_option
def test(room: str | None, server: str | None) -> None:
    """Have the server post a test message to the webhook now, and say what it answered.

    Exits 1 when the message could not be delivered, with the reason.

    \b
    Examples:
      sleap-rtc notify test
      sleap-rtc notify test --room lab
    """

    async def go(client: ServerClient) -> api.WebhookTest:
        return await client.test_webhook(room)

    result = run_client(server, go)
    if not result.delivered:
        raise click.ClickException(f"test message not delivered: {plain(result.message)}")
    click.echo(f"test message delivered: {plain(result.message)}")
