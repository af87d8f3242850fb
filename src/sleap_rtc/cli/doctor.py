"""``sleap-rtc doctor``: check this machine's set-up, one line per check."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from sleap_rtc.cli.exitcodes import EXIT_INTERRUPTED, EXIT_OK, EXIT_REJECTED
from sleap_rtc.cli.render import make_console, safe
from sleap_rtc.cli.rooms import server_option
from sleap_rtc.protocol.checks import Check

#: The most characters of a check's detail or fix shown on a line.
MAX_LINE_CHARS = 600


def _cut(text: str) -> str:
    return text if len(text) <= MAX_LINE_CHARS else text[: MAX_LINE_CHARS - 1] + "…"


def _print(checks: Sequence[Check]) -> None:
    console = make_console()
    width = max((len(c.name) for c in checks), default=0)
    width = min(width, 32)
    for check in checks:
        name = safe(_cut(check.name).ljust(width))  # padded before escaping
        if check.ok:
            line = f"[green]ok[/]       {name}  {safe(_cut(check.detail))}"
        else:
            line = f"[red]problem[/]  {name}  {safe(_cut(check.detail))}"
            if check.fix:
                line += f" [bold]→ fix:[/] {safe(_cut(check.fix))}"
        console.print(line, highlight=False, soft_wrap=True)
    problems = sum(not c.ok for c in checks)
    if problems:
        console.print(f"{problems} problem(s) in {len(checks)} checks", highlight=False)
    else:
        console.print(f"all {len(checks)} checks ok", highlight=False)


def _run_checks(server: str | None, room: str | None, worker_config: Path | None) -> list[Check]:
    """The client's checks, then the worker machine's when this is one."""
    from sleap_rtc.client.doctor import check_client
    from sleap_rtc.worker.doctor import check_worker_machine, worker_config_path

    path = worker_config_path(worker_config)
    machine = check_worker_machine(path) if path is not None else None
    if machine is not None and machine.config is not None:
        # As `sleap-rtc worker` picks them: the flag, then worker.toml, then the defaults.
        server = server or machine.config.server
        room = room or machine.config.room
    checks: list[Check] = []
    checks.extend(asyncio.run(check_client(server, room, login_required=machine is None)))
    if machine is not None:
        checks.extend(machine.checks)
    return checks


@click.command()
@server_option
@click.option(
    "--room",
    "-r",
    metavar="ROOM",
    help="Room to check [default: SLEAP_RTC_ROOM or room in config.toml].",
)
@click.option(
    "--worker-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Check this machine as the worker this TOML config describes "
    "[default: worker.toml in the config folder, if there is one].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as a JSON list.")
def doctor(server: str | None, room: str | None, worker_config: Path | None, as_json: bool) -> None:
    """Check this machine's set-up: one line per check, with what to do about a problem.

    Checks that the server answers, that your login works, that the room exists and
    you are a member, and which workers are online there. On a worker machine (with
    --worker-config, or a worker.toml in the config folder) it also checks
    sleap-nn, the GPU, the sandbox, free space for models and the mounts: run it
    there as the user the worker runs as. Exits 0 when every check is ok, 2 otherwise.

    \b
    Examples:
      sleap-rtc doctor
      sleap-rtc doctor --server http://gpu-server.lab:8000 --room my-room
      sleap-rtc doctor --worker-config /etc/sleap-rtc/worker.toml   # on a GPU machine
      sleap-rtc doctor --json
    """
    try:
        checks = _run_checks(server, room, worker_config)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    if as_json:
        click.echo(
            json.dumps(
                [{"name": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix} for c in checks],
                indent=2,
            )
        )
    else:
        _print(checks)
    sys.exit(EXIT_OK if all(c.ok for c in checks) else EXIT_REJECTED)
