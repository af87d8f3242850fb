"""Following a job live: the progress view, Ctrl-C choices, JSON events, the result, and
what a lost channel means for the job.

``--json`` prints one event per line: the job protocol's own messages
(``JOB_ACCEPTED``, ``JOB_REJECTED``, ``JOB_PROGRESS``, ``JOB_COMPLETE``,
``JOB_FAILED``), plus ``DOWNLOADED`` for each output fetched with ``--download``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

from sleap_rtc.cli.ask import choose
from sleap_rtc.cli.exitcodes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from sleap_rtc.cli.render import JobProgressView, plain, safe
from sleap_rtc.cli.summary import print_result
from sleap_rtc.client import ServerClient
from sleap_rtc.client.jobs import JobHandle, WorkerError
from sleap_rtc.client.lost import LostChannel, after_lost_channel
from sleap_rtc.protocol import jobs as p


def output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--logs/--no-logs and --json, for commands that follow a job."""
    func = click.option(
        "--logs/--no-logs",
        default=False,
        show_default=True,
        help="Stream the job's log (sleap-nn's output) above the progress bar; "
        "`sleap-rtc jobs logs ID` always has all of it.",
    )(func)
    func = click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON event per line, for scripts."
    )(func)
    return func


def emit(message: p._Msg) -> None:
    """One protocol message as a JSON line."""
    click.echo(message.model_dump_json(exclude_none=True))
    sys.stdout.flush()


def emit_dict(data: dict[str, Any]) -> None:
    """One event that adds context to a protocol message (which worker, which transport)."""
    click.echo(json.dumps(data))
    sys.stdout.flush()


def _not_yours(handle: JobHandle) -> str:
    job, owner = plain(handle.job_id), plain(handle.owner)
    return f"Job {job} belongs to {owner}; only they can stop or cancel it"


def interrupt_question(handle: JobHandle) -> tuple[str, list[str]]:
    """The Ctrl-C question and its answers: stop and cancel only for the job's owner."""
    if handle.can_control:
        return (
            "Interrupted. [s]top early and keep the model, [c]ancel, [d]etach (job keeps "
            "running), or [w]atch on",
            ["s", "c", "d", "w"],
        )
    return (
        f"Interrupted. {_not_yours(handle)}. [d]etach (job keeps running), or [w]atch on",
        ["d", "w"],
    )


async def _ask_on_interrupt(handle: JobHandle, console: Console, interactive: bool) -> str:
    """What to do after Ctrl-C: stop early, cancel, detach, or keep watching.

    Without a terminal the job's owner cancels it; anyone else detaches.
    """
    if not interactive:
        if not handle.can_control:
            return "detach"
        await handle.cancel()
        return "cancel"
    console.print()
    question, answers = interrupt_question(handle)
    try:
        answer = await choose(question, answers, default="w")
    except KeyboardInterrupt:
        answer = "d"  # Ctrl-C again: leave, and lose nothing
    if answer == "s":
        try:
            await handle.stop()
        except WorkerError as exc:
            console.print(f"[yellow]{safe(exc.message)}[/yellow]")
            return "watch"
        return "stop"
    if answer == "c":
        await handle.cancel()
        return "cancel"
    if answer == "d":
        return "detach"
    return "watch"


async def follow(
    handle: JobHandle,
    console: Console,
    *,
    as_json: bool,
    logs: bool,
    interactive: bool,
    next_steps: Callable[[p.JobComplete], list[str]] | None = None,
) -> int:
    """Show the job's events until it ends; the exit code its result means.

    Ctrl-C asks what to do (without a terminal the job's owner cancels it, anyone
    else detaches); only the owner is offered stop and cancel. Detaching leaves the
    job running and says how to attach again. ``next_steps`` gives the commands the
    summary suggests after a completed job.
    """
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    events = handle.events().__aiter__()
    try:
        with contextlib.ExitStack() as stack:
            view = (
                None if as_json else stack.enter_context(JobProgressView(console, show_logs=logs))
            )
            cancelled = False
            while True:
                next_event = asyncio.ensure_future(events.__anext__())
                waiter = asyncio.ensure_future(interrupted.wait())
                done, _ = await asyncio.wait({next_event, waiter}, return_when="FIRST_COMPLETED")
                if waiter in done:
                    interrupted.clear()
                    next_event.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await next_event
                    events = handle.events().__aiter__()
                    with view.paused() if view is not None else contextlib.nullcontext():
                        action = await _ask_on_interrupt(handle, console, interactive)
                    if action == "detach":
                        if not handle.can_control and not interactive:
                            console.print(_not_yours(handle), markup=False, highlight=False)
                        console.print(
                            f"detached; job {safe(handle.job_id)} keeps running. Follow it again "
                            f"with `sleap-rtc jobs attach {safe(handle.job_id)} --room "
                            f"{safe(handle.session.room)}`"
                        )
                        return EXIT_INTERRUPTED
                    cancelled = cancelled or action == "cancel"
                    continue
                waiter.cancel()
                try:
                    event = next_event.result()
                except StopAsyncIteration:
                    break
                if as_json:
                    emit(event)
                elif view is not None:
                    if isinstance(event, p.JobProgress):
                        if event.queue_position is not None:
                            view.queued(event.queue_position)
                        elif event.state is not None and event.state != "QUEUED":
                            view.started()
                        for line in event.lines:
                            view.log_line(line)
                        if event.progress is not None:
                            view.show_progress(event.progress)
                    elif isinstance(event, p.JobComplete):
                        view.started()
                        view.complete(event.stopped_early)
                    else:
                        view.started()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    result = handle.result
    if result is None:
        return EXIT_FAILED
    if not as_json:
        steps = next_steps(result) if next_steps and isinstance(result, p.JobComplete) else []
        print_result(console, result, steps)
    if isinstance(result, p.JobComplete):
        return EXIT_OK
    return EXIT_INTERRUPTED if cancelled and result.state == "CANCELLED" else EXIT_FAILED


async def report_lost_channel(
    console: Console,
    server: ServerClient,
    room: str,
    worker_id: str,
    worker_name: str,
    job_id: str,
    error: BaseException,
) -> int:
    """The channel to a followed job closed: say why, ask whether the worker is still
    there, say what to run; the exit code for it."""
    console.print(f"[red]{safe(error)}[/red]", highlight=False)
    print_lost_channel(
        console, await after_lost_channel(server, room, worker_id, worker_name, job_id)
    )
    return EXIT_FAILED


def print_lost_channel(console: Console, lost: LostChannel) -> None:
    """What the job's lost channel means and what to run: attach only to an online worker."""
    worker = f"{safe(lost.worker_name)} ({safe(lost.worker_id)})"
    attach = f"`{safe(lost.attach_command)}`"
    workers = f"`{safe(lost.workers_command)}`"
    if lost.can_attach:
        console.print(
            f"Worker {worker} is still online; the job may still be running: {attach}",
            highlight=False,
        )
    elif lost.worker_online is False:
        console.print(
            f"Worker {worker} went offline in room {safe(lost.room)}. Job "
            f"{safe(lost.job_id)}'s record and log are kept on the worker; run {workers} "
            f"to see when it is back, then {attach}",
            highlight=False,
        )
    else:
        console.print(
            f"Could not ask the server whether worker {worker} is online "
            f"({safe(lost.unknown_because)}). Job {safe(lost.job_id)}'s record and log are "
            f"kept on the worker; run {workers} to see whether it is online, then {attach}",
            highlight=False,
        )
