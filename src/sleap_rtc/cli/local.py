"""``sleap-rtc local``: run and inspect jobs on this machine, as a worker would.

Useful on a GPU box itself (no server needed) and to check a job before sending
it anywhere: ``--dry-run`` validates and prints the sleap-nn commands only. A job
comes from the same options as ``sleap-rtc train/track``, or from a spec file
(``--spec``, as a pipeline's stage scripts run it). ``--json`` prints the job
protocol's messages, one per line, as ``sleap-rtc train --json`` does.
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml
from rich.console import Console

from sleap_rtc.cli.exitcodes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_REJECTED
from sleap_rtc.cli.localjobs import jobs
from sleap_rtc.cli.options import (
    job_options,
    spec_fields,
    track_spec_from,
    train_spec_from,
)
from sleap_rtc.cli.render import JobProgressView, make_console, plain, print_rejection
from sleap_rtc.cli.summary import print_result
from sleap_rtc.client.next_steps import after
from sleap_rtc.jobs.events import NOTE_PREFIX
from sleap_rtc.jobs.mounts import Mount
from sleap_rtc.jobs.options import JobKind, options_for
from sleap_rtc.jobs.problems import JobRejected
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.jobs.states import JobState
from sleap_rtc.protocol import jobs as p
from sleap_rtc.worker import (
    MountConfig,
    StoreLocked,
    WorkerConfig,
    WorkerConfigError,
    load_worker_config,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

    from sleap_rtc.worker import JobEvent, JobRunner


def _mount_option(value: tuple[str, ...]) -> list[dict[str, Any]] | None:
    mounts = []
    for text in value:
        try:
            mount = Mount.parse(text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--mount") from None
        mounts.append(
            MountConfig(
                path=str(mount.path), label=mount.label, read_only=mount.read_only
            ).model_dump()
        )
    return mounts or None


def worker_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--worker-config",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Worker TOML config [default: worker.toml in the config folder].",
    )(func)
    func = click.option(
        "--mount",
        "mounts",
        multiple=True,
        metavar="PATH[:LABEL][:ro]",
        help="Folder jobs may use; repeatable. Adds to the config's mounts.",
    )(func)
    func = click.option(
        "--models-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Where trained models are written.",
    )(func)
    func = click.option("--device", help="auto, cpu, cuda, cuda:N or mps.")(func)
    return func


def run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """How a submitted job is shown: --dry-run, --json, --logs."""
    func = click.option(
        "--logs",
        is_flag=True,
        help="Stream the job's log (sleap-nn's output) above the progress bar; "
        "`sleap-rtc local jobs logs ID` always has all of it.",
    )(func)
    func = click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print one JSON event per line (the job protocol's messages).",
    )(func)
    func = click.option(
        "--dry-run", is_flag=True, help="Validate and print the sleap-nn commands only."
    )(func)
    return func


def _config(options: dict[str, Any]) -> WorkerConfig:
    try:
        return load_worker_config(
            options.pop("worker_config"),
            mounts=_mount_option(options.pop("mounts")),
            models_dir=options.pop("models_dir"),
            device=options.pop("device"),
        )
    except WorkerConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def local() -> None:
    """Run and inspect jobs on this machine, without a server.

    \b
    Examples:
      sleap-rtc local train --mount /vast/project --config /vast/project/centroid.yaml
      sleap-rtc local track --mount /vast --data-path /vast/data/labels.slp \\
          --model-paths /vast/models/centroid --model-paths /vast/models/centered_instance
      sleap-rtc local jobs list
    """


#: The request id of the one submission a ``sleap-rtc local`` command makes, in its
#: ``--json`` events (the protocol's messages, as ``sleap-rtc train --json`` prints them).
LOCAL_REQUEST_ID = "local"


def _run(
    config: WorkerConfig,
    spec: TrainSpec | TrackSpec,
    *,
    dry_run: bool,
    as_json: bool,
    logs: bool,
    mounts: tuple[str, ...] = (),
) -> None:
    """Run ``spec`` here and follow it; ``mounts`` are the ``--mount`` values given, for
    the command the summary suggests next."""
    console = make_console(stderr=as_json)
    track_here = ["sleap-rtc", "local", "track"]
    for mount in mounts:
        track_here += ["--mount", mount]
    if dry_run:
        _dry_run(config, spec, console)
        return
    from sleap_rtc.engine import LocalBackend
    from sleap_rtc.worker import JobRunner, rejection, terminal_message

    async def go() -> int:
        try:
            runner = JobRunner(
                config, LocalBackend(cancel_grace_s=config.cancel_grace_s), shared=False
            )
        except StoreLocked as exc:
            raise click.ClickException(str(exc)) from None
        try:
            await runner.start()
            try:
                record = runner.submit(spec)
            except JobRejected as exc:
                if as_json:
                    _emit(rejection(LOCAL_REQUEST_ID, exc.job_id, exc.problems))
                else:
                    print_rejection(console, exc.problems)
                return EXIT_REJECTED
            if as_json:
                _emit(
                    p.JobAccepted(
                        request_id=LOCAL_REQUEST_ID, job_id=record.id, state=record.state.value
                    )
                )
            else:
                console.print(f"job {record.id} accepted")
            watch = runner.watch(record.id)
            try:
                with JobProgressView(console, show_logs=logs) as view:
                    async for event in watch:
                        if as_json:
                            for message in _messages(runner, event):
                                _emit(message)
                        else:
                            view.update(event)
            except asyncio.CancelledError:
                console.print("interrupted: cancelling the job…")
                await runner.cancel(record.id)
                return EXIT_INTERRUPTED
            final = await runner.wait(record.id)
            if not as_json:
                message = terminal_message(
                    final, runner.store.read_log(final.id, tail=15), runner.store.elapsed(final.id)
                )
                steps = (
                    after(track_here, spec, message) if isinstance(message, p.JobComplete) else []
                )
                print_result(console, message, steps)
            return 0 if final.state is JobState.COMPLETE else EXIT_FAILED
        finally:
            await runner.close()

    try:
        code = asyncio.run(go())
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    sys.exit(code)


def _dry_run(config: WorkerConfig, spec: TrainSpec | TrackSpec, console: Console) -> None:
    """Render :meth:`JobPlanner.preview`: the checks a submit makes, then what would run."""
    from sleap_rtc.worker import JobPlanner

    try:
        preview = JobPlanner(config).preview(spec)
    except WorkerConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except JobRejected as exc:
        print_rejection(console, exc.problems)
        sys.exit(EXIT_REJECTED)
    console.print("job is valid; it would run:")
    console.print(f"# in {plain(str(preview.work_dir))}", highlight=False, markup=False)
    console.print(f"# {plain(preview.sandbox)}", highlight=False, markup=False, soft_wrap=True)
    for step in preview.job.steps:
        for note in step.notes:
            note = note.removeprefix(NOTE_PREFIX)
            console.print(f"# note: {plain(note)}", highlight=False, markup=False, soft_wrap=True)
        console.print(plain(shlex.join(step.argv)), highlight=False, markup=False, soft_wrap=True)
        if step.config is not None:
            console.print(f"# {plain(step.argv[-1])}:", highlight=False, markup=False)
            text = yaml.safe_dump(step.config, sort_keys=False)
            console.print(text.rstrip(), highlight=False, markup=False, soft_wrap=True)


def _emit(message: BaseModel) -> None:
    click.echo(message.model_dump_json(exclude_none=True))


def _messages(
    runner: JobRunner, event: JobEvent
) -> list[p.JobProgress | p.JobComplete | p.JobFailed]:
    """A runner event as the protocol's messages, as a worker would send them."""
    from sleap_rtc.worker import LogEvent, ProgressEvent, QueueEvent, terminal_message

    if isinstance(event, ProgressEvent):
        return [p.JobProgress(job_id=event.job_id, progress=event.progress)]
    if isinstance(event, QueueEvent):
        return [p.JobProgress(job_id=event.job_id, state="QUEUED", queue_position=event.position)]
    if isinstance(event, LogEvent):
        return [p.JobProgress(job_id=event.job_id, lines=c) for c in p.chunk_lines([event.line])]
    record = event.record
    if record.finished:
        tail = runner.store.read_log(record.id, tail=30)
        return [terminal_message(record, tail, runner.store.elapsed(record.id))]
    return [p.JobProgress(job_id=record.id, state=record.state.value)]


def spec_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """--spec FILE: the job's options from a spec file instead of (or under) the flags."""
    return click.option(
        "--spec",
        "spec_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        metavar="FILE",
        help="Run the job a spec file (JSON, a train or track spec) describes; relative "
        "paths in it are relative to its folder. Options given as well replace its values.",
    )(func)


@local.command()
@worker_options
@job_options("train", required=False)
@spec_option
@run_options
def train(dry_run: bool, as_json: bool, logs: bool, **options: Any) -> None:
    """Validate and run a training job here.

    \b
    Examples:
      sleap-rtc local train --mount /vast/project:project \\
          --config /vast/project/centroid.yaml --max-epochs 50 --run-name exp-1
      sleap-rtc local train --mount /vast/project:project \\
          --spec /vast/project/runs/centroid/spec.json --batch-size 16
    """
    mounts = tuple(options.get("mounts") or ())
    config = _config(options)
    _run(
        config,
        _spec("train", options),
        dry_run=dry_run,
        as_json=as_json,
        logs=logs,
        mounts=mounts,
    )


@local.command()
@worker_options
@job_options("track", required=False)
@spec_option
@run_options
def track(dry_run: bool, as_json: bool, logs: bool, **options: Any) -> None:
    """Validate and run an inference job here.

    \b
    Examples:
      sleap-rtc local track --mount /vast --data-path /vast/data/labels.slp \\
          --model-paths /vast/models/single_instance --frames "0-100,500-600"
      sleap-rtc local track --mount /vast --spec /vast/runs/track/spec.json
    """
    config = _config(options)
    _run(config, _spec("track", options), dry_run=dry_run, as_json=as_json, logs=logs)


def _spec(kind: JobKind, options: dict[str, Any]) -> TrainSpec | TrackSpec:
    """The job the command line asks for: its flags, or a spec file under the flags given.

    Without ``--spec`` the required options are required as click requires them;
    a spec file is checked as a spec and must be of this command's kind.
    """
    from pydantic import ValidationError

    from sleap_rtc.jobs.specs import problems_from_validation_error

    ctx = click.get_current_context()
    spec_file: Path | None = options.pop("spec_file")
    try:
        if spec_file is None:
            for option in options_for(kind):
                if option.required and not options[option.field]:
                    param = next(q for q in ctx.command.params if q.name == option.field)
                    raise click.MissingParameter(ctx=ctx, param=param)
            return train_spec_from(options) if kind == "train" else track_spec_from(options)
        base = _read_spec_file(kind, spec_file)
        given = [
            name
            for name in options
            if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        ]
        fields = {**base.model_dump(), **spec_fields(kind, options, only=given)}
        return type(base).model_validate(fields)
    except ValidationError as exc:
        print_rejection(
            make_console(stderr=True), problems_from_validation_error(exc), header="Invalid job:"
        )
        sys.exit(EXIT_REJECTED)


def _read_spec_file(kind: JobKind, path: Path) -> TrainSpec | TrackSpec:
    """A spec file as a spec of ``kind``, its relative paths anchored to its folder."""
    from sleap_rtc.jobs.problems import Problem, ProblemCode
    from sleap_rtc.jobs.specs import anchored, parse_spec

    try:
        spec = parse_spec(path.read_bytes())
        if spec.kind != kind:
            message = f"{path} holds a {spec.kind} job; run it with `sleap-rtc local {spec.kind}`"
            raise JobRejected(
                [Problem(field="kind", value=spec.kind, code=ProblemCode.CONFLICT, message=message)]
            )
    except OSError as exc:
        raise click.BadParameter(f"can't read {path}: {exc}", param_hint="--spec") from None
    except JobRejected as exc:
        print_rejection(make_console(stderr=True), exc.problems, header=f"Invalid spec {path}:")
        sys.exit(EXIT_REJECTED)
    return anchored(spec, path.parent)


# ------------------------------------------------------------------- jobs


local.add_command(jobs)
