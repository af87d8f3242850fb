"""``sleap-rtc jobs``: list, inspect, follow and control jobs on a room's workers."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from sleap_rtc.cli.exitcodes import run_client
from sleap_rtc.cli.follow import follow, output_options
from sleap_rtc.cli.render import make_console, plain, safe
from sleap_rtc.cli.targets import interactive, worker_session_options
from sleap_rtc.client import ServerClient
from sleap_rtc.client.locate import find_job, online_workers, open_session
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.api import WorkerView

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


@jobs.command("list")
@_jobs_options
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs_list(room: str, limit: int, as_json: bool, **options: Any) -> None:
    """List recent jobs on the room's online workers."""

    async def go() -> int:
        rows: list[tuple[WorkerView, p.JobSummary]] = []
        async with ServerClient.from_config(options["server"]) as server:
            for worker in await online_workers(server, room, options["worker_id"]):
                async with await open_session(
                    server, room, worker.id, transport=options["transport"]
                ) as session:
                    rows.extend((worker, job) for job in await session.jobs(limit))
        rows.sort(key=lambda r: r[1].created_at, reverse=True)
        if as_json:
            click.echo(
                json.dumps(
                    [{"worker_id": w.id, **j.model_dump(mode="json")} for w, j in rows], indent=2
                )
            )
            return 0
        table = Table("job", "worker", "kind", "state", "owner", "what")
        for worker, job in rows:
            table.add_row(
                safe(job.job_id),
                safe(worker.name),
                safe(job.kind),
                safe(job.state),
                safe(job.owner or "-"),
                safe(job.summary),
            )
        make_console().print(table)
        return 0

    run_client(go)


@jobs.command("status")
@click.argument("job_id")
@_jobs_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs_status(job_id: str, room: str, as_json: bool, **options: Any) -> None:
    """Show one job's state, progress and outputs."""

    async def go() -> int:
        async with ServerClient.from_config(options["server"]) as server:
            session, job = await find_job(
                server, room, job_id, worker_id=options["worker_id"], transport=options["transport"]
            )
            await session.close()
        if as_json:
            click.echo(job.model_dump_json(indent=2))
        else:
            console = make_console()
            console.print(
                f"job {safe(job.job_id)} ({safe(job.kind)}, {safe(job.owner or '-')}): "
                f"{safe(job.state)}"
            )
            if job.reason:
                console.print(f"  reason: {safe(job.reason)}", highlight=False)
            for output in job.outputs:
                console.print(f"  output: {safe(output)}", highlight=False)
        return 0

    run_client(go)


@jobs.command("logs")
@click.argument("job_id")
@_jobs_options
@click.option("--tail", type=click.IntRange(0, 10_000), default=200, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job ends.")
def jobs_logs(job_id: str, room: str, tail: int, follow: bool, **options: Any) -> None:
    """Print a job's log (the last --tail lines)."""

    async def go() -> int:
        async with ServerClient.from_config(options["server"]) as server:
            session, _ = await find_job(
                server, room, job_id, worker_id=options["worker_id"], transport=options["transport"]
            )
            async with session:
                handle = await session.attach(job_id, log_lines=tail)
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
    """Replay a job's progress and recent log, then follow it live."""
    console = make_console(stderr=as_json)

    async def go() -> int:
        async with ServerClient.from_config(options["server"]) as server:
            session, _ = await find_job(
                server, room, job_id, worker_id=options["worker_id"], transport=options["transport"]
            )
            async with session:
                handle = await session.attach(job_id, log_lines=30)
                return await follow(
                    handle,
                    console,
                    as_json=as_json,
                    logs=logs,
                    interactive=interactive(options["non_interactive"]),
                )

    run_client(go)


@jobs.command("cancel")
@click.argument("job_id")
@_jobs_options
def jobs_cancel(job_id: str, room: str, **options: Any) -> None:
    """Cancel a queued or running job (yours)."""

    async def go() -> int:
        async with ServerClient.from_config(options["server"]) as server:
            session, _ = await find_job(
                server, room, job_id, worker_id=options["worker_id"], transport=options["transport"]
            )
            async with session:
                job = await session.cancel(job_id)
        click.echo(f"job {plain(job.job_id)}: {plain(job.state)}")
        return 0

    run_client(go)


@jobs.command("stop")
@click.argument("job_id")
@_jobs_options
def jobs_stop(job_id: str, room: str, **options: Any) -> None:
    """Stop a training job after the current batch; the model is kept."""

    async def go() -> int:
        async with ServerClient.from_config(options["server"]) as server:
            session, _ = await find_job(
                server, room, job_id, worker_id=options["worker_id"], transport=options["transport"]
            )
            async with session:
                job = await session.stop(job_id)
        click.echo(f"job {plain(job.job_id)}: stop requested ({plain(job.state)})")
        return 0

    run_client(go)
