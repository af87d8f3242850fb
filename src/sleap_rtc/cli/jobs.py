"""``sleap-rtc jobs``: list, inspect, follow and control jobs on a room's workers."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from sleap_rtc.cli.downloads import download_outputs
from sleap_rtc.cli.durations import Duration
from sleap_rtc.cli.exitcodes import EXIT_REJECTED, run_client
from sleap_rtc.cli.follow import follow, output_options, report_lost_channel
from sleap_rtc.cli.jobview import jobs_table, print_job, print_show
from sleap_rtc.cli.render import make_console, plain, safe
from sleap_rtc.cli.rooms import room_option, server_option
from sleap_rtc.cli.targets import interactive, worker_session_options
from sleap_rtc.client import ServerClient
from sleap_rtc.client.jobs import SessionClosed
from sleap_rtc.client.locate import find_job, indexed_job
from sleap_rtc.protocol import jobs as p

_jobs_options = worker_session_options("The worker [default: every online worker].")


@click.group()
def jobs() -> None:
    """Jobs on a room's workers: list, status, logs, attach, cancel, stop.

    \b
    Examples:
      sleap-rtc jobs list --room my-room
      sleap-rtc jobs attach 7c79a1 --room my-room     # replay the log, then follow
      sleap-rtc jobs stop 7c79a1 --room my-room       # stop training early, keep the model
    """


_STATES = ["QUEUED", "RUNNING", "COMPLETE", "FAILED", "CANCELLED", "REJECTED"]


@jobs.command("list")
@server_option
@room_option()
@click.option(
    "--worker", "-w", metavar="ID_OR_NAME", help="Only jobs of this worker (online or not)."
)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(_STATES, case_sensitive=False),
    help="Only jobs in this state (repeatable).",
)
@click.option("--user", metavar="NAME", help="Only jobs this user submitted.")
@click.option("--kind", type=click.Choice(["train", "track"]), help="Only this kind of job.")
@click.option(
    "--since",
    type=Duration(),
    metavar="DURATION",
    help="Only jobs submitted in the last 2h, 3d, ...",
)
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs_list(
    server: str | None,
    room: str,
    worker: str | None,
    states: tuple[str, ...],
    user: str | None,
    kind: str | None,
    since: timedelta | None,
    limit: int,
    as_json: bool,
) -> None:
    """List the room's jobs, newest first: every worker's, online or not.

    Reads the server's job index, so jobs of an offline worker show too (a
    queued or running one is marked "worker offline": it may have moved on).

    \b
    Examples:
      sleap-rtc jobs list --room my-room
      sleap-rtc jobs list --room my-room --state running --state queued
      sleap-rtc jobs list --room my-room --user ana --since 3d --json
    """

    async def go() -> int:
        async with ServerClient.from_config(server) as client:
            page = await client.room_jobs(
                room,
                states=[s.upper() for s in states] or None,
                owner=user,
                worker=worker,
                kind=kind,
                since=time.time() - since.total_seconds() if since is not None else None,
                limit=limit,
            )
        if as_json:
            click.echo(json.dumps([j.model_dump(mode="json") for j in page.jobs], indent=2))
            return 0
        console = make_console()
        if not page.jobs:
            console.print(f"no jobs in room {safe(room)} match", highlight=False)
            return 0
        if not console.is_terminal:
            console.width = max(console.width, 140)  # piped: whole rows, for grep and files
        console.print(jobs_table(page.jobs))
        if page.total > len(page.jobs):
            console.print(
                f"{len(page.jobs)} of {page.total} jobs; see more with --limit", highlight=False
            )
        return 0

    run_client(go)


@jobs.command("status")
@click.argument("job_id")
@_jobs_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs_status(job_id: str, room: str, as_json: bool, **options: Any) -> None:
    """Show one job's state, progress and outputs (JOB_ID: its id or a unique prefix).

    \b
    Example:
      sleap-rtc jobs status 7c79 --room my-room
    """

    async def go() -> int:
        async with ServerClient.from_config(options["server"]) as server:
            indexed = await indexed_job(server, room, job_id)
            if indexed is None:  # too new for the index: ask the workers
                session, summary = await find_job(
                    server,
                    room,
                    job_id,
                    worker_id=options["worker_id"],
                    transport=options["transport"],
                )
                await session.close()
        if indexed is not None:
            if as_json:
                click.echo(indexed.model_dump_json(indent=2, exclude={"points"}))
            else:
                print_job(make_console(), indexed)
            return 0
        if as_json:
            click.echo(summary.model_dump_json(indent=2))
        else:
            console = make_console()
            console.print(
                f"job {safe(summary.job_id)} ({safe(summary.kind)}, {safe(summary.owner or '-')}): "
                f"{safe(summary.state)}",
                highlight=False,
            )
            if summary.reason:
                console.print(f"  reason: {safe(summary.reason)}", highlight=False)
            for output in summary.outputs:
                console.print(f"  output: {safe(output)}", highlight=False)
        return 0

    run_client(go)


@jobs.command("show")
@click.argument("job_id")
@server_option
@room_option()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the record and its points).")
def jobs_show(job_id: str, server: str | None, room: str, as_json: bool) -> None:
    """Show a job's record and its loss / val-loss curves (JOB_ID: id or unique prefix).

    \b
    Example:
      sleap-rtc jobs show 7c79 --room my-room
    """

    async def go() -> int:
        async with ServerClient.from_config(server) as client:
            found = await client.room_job(room, job_id)
        if as_json:
            click.echo(found.model_dump_json(indent=2))
        else:
            print_show(make_console(), found)
        return 0

    run_client(go)


@jobs.command("download")
@click.argument("job_id")
@click.argument(
    "dest", type=click.Path(file_okay=False, path_type=Path), metavar="DIR", default="."
)
@_jobs_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line per file.")
def jobs_download(job_id: str, dest: Path, room: str, as_json: bool, **options: Any) -> None:
    """Download a completed job's outputs (model folders or predictions) into DIR.

    Every file's size and SHA-256 is checked; nothing half-written is left if a
    transfer fails. The job's worker must be online.

    \b
    Examples:
      sleap-rtc jobs download 7c79 ./models --room my-room
      sleap-rtc jobs download 7c79a1b2c3d4 . --room my-room --json
    """
    console = make_console(stderr=as_json)

    async def go() -> int:
        async with ServerClient.from_config(options["server"]) as server:
            session, job = await find_job(
                server, room, job_id, worker_id=options["worker_id"], transport=options["transport"]
            )
            async with session:
                if job.state != "COMPLETE":
                    console.print(
                        f"[red]job {safe(job.job_id)} is {safe(job.state)}[/red]: only a "
                        "completed job has outputs to download; "
                        f"see `sleap-rtc jobs status {safe(job.job_id)} --room {safe(room)}`",
                        highlight=False,
                    )
                    return EXIT_REJECTED
                if not job.outputs:
                    console.print(f"job {safe(job.job_id)} has no outputs", highlight=False)
                    return EXIT_REJECTED
                dest.mkdir(parents=True, exist_ok=True)
                await download_outputs(session, job.outputs, dest, console, as_json)
        return 0

    run_client(go)


@jobs.command("logs")
@click.argument("job_id")
@_jobs_options
@click.option("--tail", type=click.IntRange(0, 10_000), default=200, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job ends.")
def jobs_logs(job_id: str, room: str, tail: int, follow: bool, **options: Any) -> None:
    """Print a job's log (the last --tail lines); the worker keeps the whole log.

    \b
    Examples:
      sleap-rtc jobs logs 7c79 --room my-room
      sleap-rtc jobs logs 7c79 --room my-room --tail 0 --follow   # only new lines
    """

    async def go() -> int:
        async with ServerClient.from_config(options["server"]) as server:
            session, found = await find_job(
                server, room, job_id, worker_id=options["worker_id"], transport=options["transport"]
            )
            async with session:
                handle = await session.attach(found.job_id, log_lines=tail)
                async for event in handle.events():
                    if isinstance(event, p.JobProgress):
                        for line in event.lines:
                            click.echo(plain(line))
                        if event.replay and not follow:
                            return 0
                    elif isinstance(event, p.JobFailed) and not event.log_tail:
                        break
        return 0

    run_client(go)


@jobs.command("attach")
@click.argument("job_id")
@_jobs_options
@output_options
@click.option("--non-interactive", is_flag=True, help="Never prompt.")
def jobs_attach(job_id: str, room: str, as_json: bool, logs: bool, **options: Any) -> None:
    """Replay a job's progress and recent log, then follow it live.

    \b
    Examples:
      sleap-rtc jobs attach 7c79 --room my-room
      sleap-rtc jobs attach 7c79 --room my-room --logs   # with the log lines
    """
    console = make_console(stderr=as_json)

    async def go() -> int:
        async with ServerClient.from_config(options["server"]) as server:
            session, found = await find_job(
                server, room, job_id, worker_id=options["worker_id"], transport=options["transport"]
            )
            async with session:
                handle = await session.attach(found.job_id, log_lines=30)
                try:
                    return await follow(
                        handle,
                        console,
                        as_json=as_json,
                        logs=logs,
                        interactive=interactive(options["non_interactive"]),
                    )
                except SessionClosed as exc:
                    return await report_lost_channel(
                        console,
                        server,
                        room,
                        session.worker_id,
                        session.worker_name,
                        found.job_id,
                        exc,
                    )

    run_client(go)


@jobs.command("cancel")
@click.argument("job_id")
@_jobs_options
def jobs_cancel(job_id: str, room: str, **options: Any) -> None:
    """Cancel a queued or running job (yours); `jobs stop` ends training and keeps the model.

    \b
    Example:
      sleap-rtc jobs cancel 7c79 --room my-room
    """

    async def go() -> int:
        async with ServerClient.from_config(options["server"]) as server:
            session, found = await find_job(
                server, room, job_id, worker_id=options["worker_id"], transport=options["transport"]
            )
            async with session:
                job = await session.cancel(found.job_id)
        click.echo(f"job {plain(job.job_id)}: {plain(job.state)}")
        return 0

    run_client(go)


@jobs.command("stop")
@click.argument("job_id")
@_jobs_options
def jobs_stop(job_id: str, room: str, **options: Any) -> None:
    """Stop a training job after the current batch; the model is kept.

    \b
    Example:
      sleap-rtc jobs stop 7c79 --room my-room
    """

    async def go() -> int:
        async with ServerClient.from_config(options["server"]) as server:
            session, found = await find_job(
                server, room, job_id, worker_id=options["worker_id"], transport=options["transport"]
            )
            async with session:
                job = await session.stop(found.job_id)
        click.echo(f"job {plain(job.job_id)}: stop requested ({plain(job.state)})")
        return 0

    run_client(go)
