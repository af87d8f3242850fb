"""``sleap-rtc train`` and ``track``: submit a job to a room's worker and follow it live."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from sleap_rtc.cli.correct import correct_paths
from sleap_rtc.cli.downloads import download_outputs
from sleap_rtc.cli.exitcodes import EXIT_REJECTED, run_client
from sleap_rtc.cli.follow import emit_dict, follow, output_options, report_lost_channel
from sleap_rtc.cli.options import (
    make_train_options,
    track_options,
    track_spec_from,
    train_spec_from,
)
from sleap_rtc.cli.render import make_console, plain, print_rejection, safe
from sleap_rtc.cli.rooms import room_option
from sleap_rtc.cli.targets import interactive, select, selection_options
from sleap_rtc.client import ServerClient
from sleap_rtc.client.ice import ice_servers
from sleap_rtc.client.jobs import JobRejectedError, SessionClosed, WorkerSession
from sleap_rtc.client.next_steps import after, fetch
from sleap_rtc.client.packages import upload_package
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.protocol import jobs as p

#: Rounds of interactive path correction before a rejection is final.
MAX_CORRECTIONS = 5
T = TypeVar("T")

SpecFactory = Callable[[WorkerSession, Console], Coroutine[Any, Any, TrainSpec | TrackSpec]]


def _submit_command(make_spec: SpecFactory, room: str, options: dict[str, Any]) -> None:
    as_json = options["as_json"]
    console = make_console(stderr=as_json)
    prompts = interactive(options["non_interactive"])
    download: Path | None = options.get("download")

    async def go() -> int:
        async with ServerClient.from_config(options["server"]) as server:
            worker = await select(server, room, options, console)
            async with await WorkerSession.open(
                server,
                room,
                worker.id,
                transport=options["transport"],
                idle_timeout=options["timeout"],
                ice_servers=ice_servers(),
            ) as session:
                spec = await make_spec(session, console)
                for attempt in range(1, MAX_CORRECTIONS + 2):
                    try:
                        handle = await session.submit(spec)
                        break
                    except JobRejectedError as exc:
                        if as_json:
                            emit_dict(
                                {
                                    "type": "JOB_REJECTED",
                                    "job_id": exc.job_id,
                                    "worker_id": worker.id,
                                    "errors": [e.model_dump() for e in exc.errors],
                                }
                            )
                            return EXIT_REJECTED
                        print_rejection(console, exc.errors)
                        if not prompts or attempt > MAX_CORRECTIONS:
                            return EXIT_REJECTED
                        corrected = await correct_paths(session, spec, exc.errors, console)
                        if corrected is None:
                            return EXIT_REJECTED
                        spec = corrected
                        console.print("Resubmitting the job with the corrected path(s)…")
                if as_json:
                    emit_dict(
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
                    track_here = ["sleap-rtc", "track", "--room", room]
                    code = await follow(
                        handle,
                        console,
                        as_json=as_json,
                        logs=options["logs"],
                        interactive=prompts,
                        next_steps=lambda result: [
                            *after(track_here, spec, result),
                            *fetch(room, result),
                        ],
                    )
                    if code == 0 and download is not None:
                        assert isinstance(handle.result, p.JobComplete)
                        await download_outputs(
                            session, handle.result.outputs, download, console, as_json
                        )
                    return code
                except SessionClosed as exc:
                    return await report_lost_channel(
                        console, server, room, worker.id, worker.name, handle.job_id, exc
                    )

    run_client(go)


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
    async def make(session: WorkerSession, console: Console) -> TrainSpec:
        size = pkg.stat().st_size
        console.print(
            f"uploading {safe(pkg.name)} ({size:,} bytes) to {safe(session.worker_name)}…"
        )
        return await upload_package(session, pkg, options)

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
        raise SystemExit(EXIT_REJECTED) from None


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
