"""``sleap-rtc train``, ``track`` and ``jobs``: run and follow jobs on a room's workers.

Size: train, track and the jobs group share worker selection, channel set-up and result
rendering here; those move to ``client`` (selection) and per-command modules next.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from sleap_rtc.cli.ask import choose
from sleap_rtc.cli.correct import correct_paths
from sleap_rtc.cli.exitcodes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_REJECTED
from sleap_rtc.cli.options import (
    make_train_options,
    track_options,
    track_spec_from,
    train_spec_from,
)
from sleap_rtc.cli.render import JobProgressView, make_console, plain, print_rejection, safe
from sleap_rtc.cli.rooms import room_option, server_option
from sleap_rtc.client import ClientError, ServerClient
from sleap_rtc.client.config import ConfigError
from sleap_rtc.client.jobs import (
    JobHandle,
    JobRejectedError,
    SessionClosed,
    WorkerError,
    WorkerSession,
)
from sleap_rtc.client.select import Ambiguous, choose_worker
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.api import WorkerView

#: Rounds of interactive path correction before a rejection is final.
MAX_CORRECTIONS = 5
T = TypeVar("T")


def selection_options(func: Callable[..., Any]) -> Callable[..., Any]:
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
            click.option(
                "--transport",
                type=click.Choice(["auto", "webrtc", "relay"]),
                default="auto",
                show_default=True,
                help="auto: WebRTC, else relay through the server.",
            ),
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


def output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--logs/--no-logs", default=True, show_default=True, help="Show the worker's log lines."
    )(func)
    func = click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON event per line, for scripts."
    )(func)
    return func


def _interactive(non_interactive: bool) -> bool:
    return not non_interactive and sys.stdin.isatty() and sys.stdout.isatty()


def _emit(message: p._Msg) -> None:
    click.echo(message.model_dump_json(exclude_none=True))
    sys.stdout.flush()


def _emit_dict(data: dict[str, Any]) -> None:
    click.echo(json.dumps(data))
    sys.stdout.flush()


def _pick(candidates: list[WorkerView], console: Console) -> WorkerView:
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


async def _select(
    server: ServerClient, room: str, options: dict[str, Any], console: Console
) -> WorkerView:
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
        if not _interactive(options["non_interactive"]):
            raise
        return _pick(exc.candidates, console)


async def _open(
    server: ServerClient, room: str, worker: WorkerView, options: dict[str, Any]
) -> WorkerSession:
    return await WorkerSession.open(
        server,
        room,
        worker.id,
        transport=options["transport"],
        idle_timeout=options["timeout"],
        ice_servers=ice_servers(),
    )


def ice_servers() -> list[dict[str, Any]]:
    """STUN/TURN servers from config.toml: ``ice_servers = [{urls = "stun:..."}]``."""
    from sleap_rtc.client.config import load_config
    from sleap_rtc.transport.webrtc import host_addresses_from_env, pin_host_addresses

    config = load_config()
    hosts = config.get("ice_host_addresses") or host_addresses_from_env()
    if hosts:
        pin_host_addresses([str(h) for h in hosts])
    servers = config.get("ice_servers") or []
    if not isinstance(servers, list) or not all(
        isinstance(s, dict) and "urls" in s for s in servers
    ):
        raise ConfigError(
            "ice_servers in config.toml must be a list of tables with urls, e.g. "
            'ice_servers = [{urls = "stun:stun.example.org:3478"}]'
        )
    return servers


async def _ask_on_interrupt(handle: JobHandle, console: Console, interactive: bool) -> str:
    """What to do after Ctrl-C: stop early, cancel, detach, or keep watching."""
    if not interactive:
        await handle.cancel()
        return "cancel"
    console.print()
    try:
        answer = await choose(
            "Interrupted. [s]top early and keep the model, [c]ancel, [d]etach (job keeps "
            "running), or [w]atch on",
            ["s", "c", "d", "w"],
            default="w",
        )
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


async def _follow(
    handle: JobHandle, console: Console, *, as_json: bool, logs: bool, interactive: bool
) -> int:
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
                    _emit(event)
                elif view is not None:
                    if isinstance(event, p.JobProgress):
                        for line in event.lines:
                            view.log_line(line)
                        if event.progress is not None:
                            view.show_progress(event.progress)
                    elif isinstance(event, p.JobComplete):
                        view.complete(event.stopped_early)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    result = handle.result
    if result is None:
        return EXIT_FAILED
    if not as_json:
        _print_result(console, result)
    if isinstance(result, p.JobComplete):
        return 0
    return EXIT_INTERRUPTED if cancelled and result.state == "CANCELLED" else EXIT_FAILED


def _print_result(console: Console, result: p.JobComplete | p.JobFailed) -> None:
    if isinstance(result, p.JobComplete):
        note = " (stopped early)" if result.stopped_early else ""
        console.print(f"[green]job {safe(result.job_id)} complete{note}[/green]")
        for output in result.outputs:
            console.print(f"  output: {safe(output)}", highlight=False)
        return
    console.print(
        f"[red]job {safe(result.job_id)} {safe(result.state.lower())}[/red]: {safe(result.reason)}",
        highlight=False,
    )
    if result.state == "FAILED" and result.log_tail:
        console.print("last log lines:")
        for line in result.log_tail[-15:]:
            console.print(f"  {plain(line)}", highlight=False, markup=False)


def _run_async(action: Callable[[], Coroutine[Any, Any, int]]) -> None:
    code: int
    try:
        code = asyncio.run(action())
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except JobRejectedError:
        code = EXIT_REJECTED
    except (ClientError, ConfigError) as exc:
        make_console(stderr=True).print(
            f"[red]Error:[/red] {safe(exc)}", highlight=False, soft_wrap=True
        )
        code = EXIT_REJECTED if isinstance(exc, ClientError) and _is_selection(exc) else 1
    sys.exit(code)


def _is_selection(exc: Exception) -> bool:
    from sleap_rtc.client.select import NoWorker

    return isinstance(exc, NoWorker | Ambiguous)


SpecFactory = Callable[[WorkerSession, Console], Coroutine[Any, Any, TrainSpec | TrackSpec]]


def _submit_command(make_spec: SpecFactory, room: str, options: dict[str, Any]) -> None:
    as_json = options["as_json"]
    console = make_console(stderr=as_json)
    interactive = _interactive(options["non_interactive"])
    download: Path | None = options.get("download")

    async def go() -> int:
        async with ServerClient.from_config(options["server"]) as server:
            worker = await _select(server, room, options, console)
            async with await _open(server, room, worker, options) as session:
                spec = await make_spec(session, console)
                for attempt in range(1, MAX_CORRECTIONS + 2):
                    try:
                        handle = await session.submit(spec)
                        break
                    except JobRejectedError as exc:
                        if as_json:
                            _emit_dict(
                                {
                                    "type": "JOB_REJECTED",
                                    "job_id": exc.job_id,
                                    "worker_id": worker.id,
                                    "errors": [e.model_dump() for e in exc.errors],
                                }
                            )
                            return EXIT_REJECTED
                        print_rejection(console, exc.errors)
                        if not interactive or attempt > MAX_CORRECTIONS:
                            return EXIT_REJECTED
                        corrected = await correct_paths(session, spec, exc.errors, console)
                        if corrected is None:
                            return EXIT_REJECTED
                        spec = corrected
                        console.print("Resubmitting the job with the corrected path(s)…")
                if as_json:
                    _emit_dict(
                        {
                            "type": "JOB_ACCEPTED",
                            "job_id": handle.job_id,
                            "worker_id": worker.id,
                            "worker_name": worker.name,
                            "transport": session.transport,
                        }
                    )
                else:
                    console.print(
                        f"job {safe(handle.job_id)} accepted by {safe(worker.name)} "
                        f"({safe(worker.id)}) over {session.transport}",
                        highlight=False,
                    )
                try:
                    code = await _follow(
                        handle,
                        console,
                        as_json=as_json,
                        logs=options["logs"],
                        interactive=interactive,
                    )
                    if code == 0 and download is not None:
                        assert isinstance(handle.result, p.JobComplete)
                        await _download_outputs(
                            session, handle.result.outputs, download, console, as_json
                        )
                    return code
                except SessionClosed as exc:
                    console.print(
                        f"[red]{safe(exc)}[/red]\nThe job may still be running: "
                        f"`sleap-rtc jobs attach {safe(handle.job_id)} --room {safe(room)}`",
                        highlight=False,
                    )
                    return EXIT_FAILED

    _run_async(go)


async def _download_outputs(
    session: WorkerSession, outputs: list[str], dest: Path, console: Console, as_json: bool
) -> None:
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
            _emit_dict({"type": "DOWNLOADED", "remote": remote, "local": str(local)})
        else:
            console.print(f"  downloaded: {safe(local)}", highlight=False)


PKG_DEPRECATION = """\
Warning: --pkg-path is deprecated. It uploads the package to the worker on every run.
Put the config and labels on storage the worker mounts and name them instead:

  # Old
  sleap-rtc train --room {room} --pkg-path {pkg}

  # New
  sleap-rtc train --room {room} \\
      --config /shared/project/config.yaml \\
      --labels /shared/data/labels.slp
"""


def _package_spec(pkg: Path, options: dict[str, Any]) -> SpecFactory:
    """Upload and unpack the package, then train on the config and labels inside it."""

    async def make(session: WorkerSession, console: Console) -> TrainSpec:
        size = pkg.stat().st_size
        console.print(
            f"uploading {safe(pkg.name)} ({size:,} bytes) to {safe(session.worker_name)}…"
        )
        done = await session.upload(pkg, unpack=True)
        configs = sorted(f for f in done.files if f.endswith((".yaml", ".yml")))
        labels = sorted(f for f in done.files if f.endswith(".slp"))
        if not configs:
            raise ClientError(f"{pkg.name} holds no config YAML (.yaml); nothing to train")
        fields = {k: v for k, v in options.items() if k in TrainSpec.model_fields}
        fields["config_paths"] = list(options["config_paths"]) or configs
        if not fields.get("labels_path"):
            if len(labels) > 1:
                raise ClientError(
                    f"{pkg.name} holds {len(labels)} .slp files; say which with --labels"
                )
            fields["labels_path"] = labels[0] if labels else None
        return TrainSpec(**fields)

    return make


def _ready(spec: TrainSpec | TrackSpec) -> SpecFactory:
    async def make(session: WorkerSession, console: Console) -> TrainSpec | TrackSpec:
        return spec

    return make


def _spec_or_exit(build: Callable[[dict[str, Any]], T], options: dict[str, Any]) -> T:
    from pydantic import ValidationError

    from sleap_rtc.jobs.specs import problems_from_validation_error

    try:
        return build(options)
    except ValidationError as exc:
        print_rejection(
            make_console(stderr=True), problems_from_validation_error(exc), header="Invalid job:"
        )
        sys.exit(EXIT_REJECTED)


download_option = click.option(
    "--download",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="When the job completes, copy its outputs (model folder, predictions) to DIR here.",
)


@click.command()
@room_option()
@make_train_options(config_required=False)
@click.option(
    "--pkg-path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    metavar="ZIP",
    help="Deprecated: upload a training package (config YAML + labels) and train on it.",
)
@download_option
@selection_options
@output_options
def train(room: str, pkg_path: Path | None, **options: Any) -> None:
    """Train on a worker of a room, with live progress.

    Paths name files on the worker. The worker checks every path and value first
    and rejects the job with every problem at once.

    \b
    Examples:
      sleap-rtc train --room my-room --config /vast/project/centroid.yaml
      sleap-rtc train --room my-room --auto-select --min-gpu-memory 8000 \\
          --config /vast/project/centroid.yaml --config /vast/project/centered_instance.yaml
      sleap-rtc train --room my-room --worker-id worker-abc123 \\
          --config /vast/project/config.yaml --labels /vast/data/labels.slp --max-epochs 50

    Exit codes: 0 complete, 1 failed, 2 rejected or invalid, 130 interrupted.
    """
    if pkg_path is not None:
        make_console(stderr=True).print(
            PKG_DEPRECATION.format(room=plain(room), pkg=plain(pkg_path)),
            style="yellow",
            highlight=False,
            markup=False,  # fixed text and the user's own room and path
            soft_wrap=True,
        )
        _submit_command(_package_spec(pkg_path, options), room, options)
        return
    if not options["config_paths"]:
        raise click.UsageError("Missing option '--config' / '-c' (or the deprecated --pkg-path).")
    spec = _spec_or_exit(train_spec_from, options)
    _submit_command(_ready(spec), room, options)


@click.command()
@room_option()
@track_options
@download_option
@selection_options
@output_options
def track(room: str, **options: Any) -> None:
    """Run inference on a worker of a room, with live progress.

    \b
    Examples:
      sleap-rtc track --room my-room --data-path /vast/data/session1.slp \\
          --model-paths /vast/models/centroid --model-paths /vast/models/centered_instance
      sleap-rtc track --room my-room -d /vast/data/video.slp -m /vast/models/single \\
          --frames "0-100,500-600" --output /vast/out/predictions.slp

    Exit codes: 0 complete, 1 failed, 2 rejected or invalid, 130 interrupted.
    """
    _submit_command(_ready(_spec_or_exit(track_spec_from, options)), room, options)


# -- jobs ---------------------------------------------------------------------------------------


def worker_session_options(worker_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--worker-id, --server, --room and --transport, for commands that talk to one worker."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option("--worker-id", "-w", metavar="ID", help=worker_help)(func)
        func = server_option(func)
        func = room_option()(func)
        return click.option(
            "--transport",
            type=click.Choice(["auto", "webrtc", "relay"]),
            default="auto",
            show_default=True,
        )(func)

    return decorate


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


async def _workers_for(server: ServerClient, room: str, worker_id: str | None) -> list[WorkerView]:
    listed = await server.workers(room)
    if worker_id is not None:
        return [choose_worker(listed, room, worker_id=worker_id)]
    online = [w for w in listed if w.status != "offline"]
    if not online:
        raise ClientError(f"no worker is online in room {room}")
    return online


async def _with_job(
    server: ServerClient,
    room: str,
    job_id: str,
    options: dict[str, Any],
) -> tuple[WorkerSession, p.JobSummary]:
    """A session to the worker that has ``job_id`` (searching the online ones)."""
    for worker in await _workers_for(server, room, options["worker_id"]):
        session = await WorkerSession.open(
            server, room, worker.id, transport=options["transport"], ice_servers=ice_servers()
        )
        try:
            summary = await session.status(job_id)
        except WorkerError as exc:
            await session.close()
            if exc.code == "NO_SUCH_JOB":
                continue
            raise
        return session, summary
    raise ClientError(f"no job {job_id!r} on the online workers of room {room}")


@jobs.command("list")
@_jobs_options
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs_list(room: str, limit: int, as_json: bool, **options: Any) -> None:
    """List recent jobs on the room's online workers."""

    async def go() -> int:
        rows: list[tuple[WorkerView, p.JobSummary]] = []
        async with ServerClient.from_config(options["server"]) as server:
            for worker in await _workers_for(server, room, options["worker_id"]):
                async with await WorkerSession.open(
                    server,
                    room,
                    worker.id,
                    transport=options["transport"],
                    ice_servers=ice_servers(),
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

    _run_async(go)


@jobs.command("status")
@click.argument("job_id")
@_jobs_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs_status(job_id: str, room: str, as_json: bool, **options: Any) -> None:
    """Show one job's state, progress and outputs."""

    async def go() -> int:
        async with ServerClient.from_config(options["server"]) as server:
            session, job = await _with_job(server, room, job_id, options)
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

    _run_async(go)


@jobs.command("logs")
@click.argument("job_id")
@_jobs_options
@click.option("--tail", type=click.IntRange(0, 10_000), default=200, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the job ends.")
def jobs_logs(job_id: str, room: str, tail: int, follow: bool, **options: Any) -> None:
    """Print a job's log (the last --tail lines)."""

    async def go() -> int:
        async with ServerClient.from_config(options["server"]) as server:
            session, _ = await _with_job(server, room, job_id, options)
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

    _run_async(go)


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
            session, _ = await _with_job(server, room, job_id, options)
            async with session:
                handle = await session.attach(job_id, log_lines=30)
                return await _follow(
                    handle,
                    console,
                    as_json=as_json,
                    logs=logs,
                    interactive=_interactive(options["non_interactive"]),
                )

    _run_async(go)


@jobs.command("cancel")
@click.argument("job_id")
@_jobs_options
def jobs_cancel(job_id: str, room: str, **options: Any) -> None:
    """Cancel a queued or running job (yours)."""

    async def go() -> int:
        async with ServerClient.from_config(options["server"]) as server:
            session, _ = await _with_job(server, room, job_id, options)
            async with session:
                job = await session.cancel(job_id)
        click.echo(f"job {plain(job.job_id)}: {plain(job.state)}")
        return 0

    _run_async(go)


@jobs.command("stop")
@click.argument("job_id")
@_jobs_options
def jobs_stop(job_id: str, room: str, **options: Any) -> None:
    """Stop a training job after the current batch; the model is kept."""

    async def go() -> int:
        async with ServerClient.from_config(options["server"]) as server:
            session, _ = await _with_job(server, room, job_id, options)
            async with session:
                job = await session.stop(job_id)
        click.echo(f"job {plain(job.job_id)}: stop requested ({plain(job.state)})")
        return 0

    _run_async(go)
