"""``sleap-rtc local``: run and inspect jobs on this machine, as a worker would.

Useful on a GPU box itself (no server needed) and to check a job before sending
it anywhere: ``--dry-run`` validates and prints the sleap-nn commands only. A job
comes from the same options as ``sleap-rtc train/track``, or from a spec file
(``--spec``, as a pipeline's stage scripts run it). ``--json`` prints the job
protocol's messages, one per line, as ``sleap-rtc train --json`` does.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from sleap_rtc.cli.exitcodes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_REJECTED
from sleap_rtc.cli.options import (
    job_options,
    spec_fields,
    track_spec_from,
    train_spec_from,
)
from sleap_rtc.cli.render import JobProgressView, make_console, plain, print_rejection, safe
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
    JobRecord,
    JobStore,
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


@local.group()
def jobs() -> None:
    """Jobs this machine's worker has run (read from its job store)."""


def _store(worker_config: Path | None) -> JobStore:
    try:
        config = load_worker_config(worker_config)
    except WorkerConfigError as exc:
        raise click.ClickException(str(exc)) from None
    state = config.resolved_state_dir()
    if not (state / "jobs.sqlite3").exists():
        raise click.ClickException(f"no jobs have run here yet (no job store in {state})")
    return JobStore(state)


def _find(store: JobStore, job_id: str) -> JobRecord:
    record = store.find(job_id)
    if record is None:
        raise click.ClickException(
            f"no job matches {job_id!r}; see `sleap-rtc local jobs list` "
            "(a prefix must match exactly one job)"
        )
    return record


_worker_config_opt = click.option(
    "--worker-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Worker TOML config naming the state folder.",
)


@jobs.command("list")
@_worker_config_opt
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_jobs(worker_config: Path | None, limit: int, as_json: bool) -> None:
    """List recent jobs, newest first.

    \b
    Examples:
      sleap-rtc local jobs list
      sleap-rtc local jobs list --limit 5 --json
      sleap-rtc local jobs list --worker-config /etc/sleap-rtc/worker.toml
    """
    store = _store(worker_config)
    records = store.jobs(limit=limit)
    if as_json:
        click.echo(json.dumps([_record_json(r) for r in records], indent=2))
        return
    table = Table("id", "kind", "state", "created", "reason / output")
    for r in records:
        detail = r.reason or (r.outputs[0] if r.outputs else "")
        table.add_row(
            r.id,
            r.kind,
            r.state.value,
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at)),
            safe(detail),
        )
    make_console().print(table)


def _record_json(r: JobRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "kind": r.kind,
        "state": r.state.value,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "reason": r.reason,
        "exit_code": r.exit_code,
        "outputs": r.outputs,
        "problems": r.problems,
        "progress": r.progress,
        "stopped_early": r.stopped_early,
        "spec": r.spec,
    }


@jobs.command()
@_worker_config_opt
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
def status(worker_config: Path | None, job_id: str, as_json: bool) -> None:
    """Show a job's state, history, progress and outputs.

    \b
    Examples:
      sleap-rtc local jobs status 7c79a1          # a prefix of the id is enough
      sleap-rtc local jobs status 7c79a1 --json
    """
    store = _store(worker_config)
    record = _find(store, job_id)
    history = store.history(record.id)
    if as_json:
        payload = _record_json(record)
        payload["history"] = [
            {"at": h.at, "state": h.state.value, "reason": h.reason} for h in history
        ]
        click.echo(json.dumps(payload, indent=2))
        return
    console = make_console()
    console.print(f"job {record.id} ({record.kind}): [bold]{record.state.value}[/bold]")
    for h in history:
        when = time.strftime("%H:%M:%S", time.localtime(h.at))
        console.print(f"  {when}  {h.state.value}" + (f"  {safe(h.reason)}" if h.reason else ""))
    if record.progress:
        console.print(f"  last progress: {safe(record.progress)}", highlight=False)
    for problem in record.problems:
        console.print(f"  - {safe(problem['field'])}: {safe(problem['message'])}", highlight=False)
    for output in record.outputs:
        console.print(f"  output: {safe(output)}", highlight=False)


@jobs.command()
@_worker_config_opt
@click.argument("job_id")
@click.option("--tail", type=int, help="Only the last N lines.")
def logs(worker_config: Path | None, job_id: str, tail: int | None) -> None:
    """Print a job's full log.

    \b
    Examples:
      sleap-rtc local jobs logs 7c79a1
      sleap-rtc local jobs logs 7c79a1 --tail 50
    """
    store = _store(worker_config)
    record = _find(store, job_id)
    for line in store.read_log(record.id, tail=tail):
        click.echo(plain(line))
