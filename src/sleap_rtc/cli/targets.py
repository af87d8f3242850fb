"""Which worker a command talks to: the options that choose one and the interactive pick."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from sleap_rtc.cli.render import safe
from sleap_rtc.cli.rooms import room_option, server_option
from sleap_rtc.client import ServerClient
from sleap_rtc.client.select import Ambiguous, SharedName, choose_worker
from sleap_rtc.protocol.api import WorkerView

transport_option = click.option(
    "--transport",
    type=click.Choice(["auto", "webrtc", "relay"]),
    default="auto",
    show_default=True,
    help="auto: WebRTC, else relay through the server.",
)


def selection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--worker-id, --auto-select, --min-gpu-memory and the channel options of a submit."""
    for option in reversed(
        [
            click.option(
                "--worker-id", "-w", metavar="ID", help="Run on this worker (id or name)."
            ),
            click.option(
                "--auto-select",
                is_flag=True,
                help="Pick the idle worker with the most free GPU memory.",
            ),
            click.option(
                "--min-gpu-memory",
                type=click.IntRange(0),
                metavar="MB",
                help="Only workers with a GPU that has this much free memory.",
            ),
            click.option(
                "--non-interactive",
                is_flag=True,
                help="Never prompt (also the case without a terminal).",
            ),
            transport_option,
            click.option(
                "--timeout",
                type=click.FloatRange(10),
                default=600.0,
                show_default=True,
                metavar="S",
                help="Give up after this many seconds without any message from the worker.",
            ),
            server_option,
        ]
    ):
        func = option(func)
    return func


def worker_session_options(worker_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--worker-id, --server, --room and --transport, for commands that talk to one worker."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option("--worker-id", "-w", metavar="ID", help=worker_help)(func)
        func = server_option(func)
        func = room_option()(func)
        return transport_option(func)

    return decorate


def interactive(non_interactive: bool) -> bool:
    """Whether the command may prompt: asked to, and on a terminal."""
    return not non_interactive and sys.stdin.isatty() and sys.stdout.isatty()


def pick(candidates: list[WorkerView], console: Console) -> WorkerView:
    """Ask which of several fitting workers to use (best first, the default)."""
    table = Table("#", "name", "id", "status", "GPU memory", "jobs")
    for number, worker in enumerate(candidates, 1):
        memory = f"{worker.best_gpu_memory_mb:,} MB free" if worker.gpus else "CPU only"
        table.add_row(
            str(number),
            safe(worker.name),
            safe(worker.id),
            safe(worker.status),
            memory,
            f"{worker.running_jobs}/{worker.max_concurrent_jobs}",
        )
    console.print(table)
    choice = click.prompt(
        "Run on which worker?", type=click.IntRange(1, len(candidates)), default=1
    )
    return candidates[int(choice) - 1]


async def select(
    server: ServerClient, room: str, options: dict[str, Any], console: Console
) -> WorkerView:
    """The worker the selection options name; prompts when several fit and it may."""
    workers = await server.workers(room)
    try:
        return choose_worker(
            workers,
            room,
            worker_id=options["worker_id"],
            auto_select=options["auto_select"],
            min_gpu_memory=options["min_gpu_memory"],
        )
    except Ambiguous as exc:
        # A shared name is an error even on a terminal: only an id names one worker.
        if isinstance(exc, SharedName) or not interactive(options["non_interactive"]):
            raise
        return pick(exc.candidates, console)
