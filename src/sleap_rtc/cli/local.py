"""``sleap-rtc local``: run and inspect jobs on this machine, as a worker would.

Useful on a GPU box itself (no server needed) and to check a job before sending
it anywhere: ``--dry-run`` validates and prints the sleap-nn commands only.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from sleap_rtc.cli.exitcodes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_REJECTED
from sleap_rtc.cli.options import track_options, track_spec_from, train_options, train_spec_from
from sleap_rtc.cli.render import JobProgressView, make_console, plain, print_rejection, safe
from sleap_rtc.jobs.mounts import Mount
from sleap_rtc.jobs.problems import JobRejected
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.jobs.states import JobState
from sleap_rtc.worker.config import (
    MountConfig,
    WorkerConfig,
    WorkerConfigError,
    load_worker_config,
)
from sleap_rtc.worker.store import JobRecord, JobStore, StoreLocked


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
    func = click.option("--logs", is_flag=True, help="Also print sleap-nn's log lines.")(func)
    func = click.option("--json", "as_json", is_flag=True, help="Print one JSON event per line.")(
        func
    )
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


def _run(
    config: WorkerConfig, spec: TrainSpec | TrackSpec, *, dry_run: bool, as_json: bool, logs: bool
) -> None:
    console = make_console(stderr=as_json)
    if dry_run:
        _dry_run(config, spec, console)
        return
    from sleap_rtc.engine.local import LocalBackend
    from sleap_rtc.worker.runner import JobRejectedError, JobRunner

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
            except JobRejectedError as exc:
                if as_json:
                    _emit(
                        {
                            "type": "JOB_REJECTED",
                            "job_id": exc.job_id,
                            "errors": [p.model_dump(mode="json") for p in exc.problems],
                        }
                    )
                else:
                    print_rejection(console, exc.problems)
                return EXIT_REJECTED
            if as_json:
                _emit({"type": "JOB_ACCEPTED", "job_id": record.id})
            else:
                console.print(f"job {record.id} accepted")
            watch = runner.watch(record.id)
            try:
                with JobProgressView(console, show_logs=logs) as view:
                    async for event in watch:
                        if as_json:
                            _emit_event(event)
                        else:
                            view.update(event)
            except asyncio.CancelledError:
                console.print("interrupted: cancelling the job…")
                await runner.cancel(record.id)
                return EXIT_INTERRUPTED
            final = await runner.wait(record.id)
            if not as_json:
                _print_outcome(console, final, runner.store.read_log(final.id, tail=15))
            return 0 if final.state is JobState.COMPLETE else EXIT_FAILED
        finally:
            await runner.close()

    try:
        code = asyncio.run(go())
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    sys.exit(code)


def _dry_run(config: WorkerConfig, spec: TrainSpec | TrackSpec, console: Console) -> None:
    from sleap_rtc.engine.commands import build_track_job, build_train_job
    from sleap_rtc.jobs.validation import TrainPlan, plan_track, plan_train

    try:
        mounts = config.build_mounts()
        plan = plan_train(spec, mounts) if isinstance(spec, TrainSpec) else plan_track(spec, mounts)
    except WorkerConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except JobRejected as exc:
        print_rejection(console, exc.problems)
        sys.exit(EXIT_REJECTED)
    if isinstance(plan, TrainPlan):
        job = build_train_job(
            plan,
            job_id="dry-run-0000",
            models_dir=config.resolved_models_dir(),
            sleap_nn=config.sleap_nn_command,
            device=config.device,
        )
    else:
        job = build_track_job(
            plan, job_id="dry-run-0000", sleap_nn=config.sleap_nn_command, device=config.device
        )
    console.print("job is valid; it would run:")
    for step in job.steps:
        console.print(plain(shlex.join(step.argv)), highlight=False, markup=False, soft_wrap=True)
        if step.config is not None:
            console.print(f"# {plain(step.argv[-1])}:", highlight=False, markup=False)
            text = yaml.safe_dump(step.config, sort_keys=False)
            console.print(text.rstrip(), highlight=False, markup=False, soft_wrap=True)


def _emit(payload: dict[str, Any]) -> None:
    click.echo(json.dumps(payload))


def _emit_event(event: object) -> None:
    from sleap_rtc.worker.runner import LogEvent, ProgressEvent, StateEvent

    if isinstance(event, ProgressEvent):
        _emit(
            {
                "type": "JOB_PROGRESS",
                "job_id": event.job_id,
                "progress": event.progress.model_dump(mode="json"),
            }
        )
    elif isinstance(event, LogEvent):
        _emit({"type": "JOB_LOG", "job_id": event.job_id, "line": event.line})
    elif isinstance(event, StateEvent):
        record = event.record
        kind = {
            JobState.COMPLETE: "JOB_COMPLETE",
            JobState.FAILED: "JOB_FAILED",
            JobState.CANCELLED: "JOB_CANCELLED",
        }.get(record.state, "JOB_STATUS")
        _emit(
            {
                "type": kind,
                "job_id": record.id,
                "state": record.state.value,
                "reason": record.reason,
                "exit_code": record.exit_code,
                "outputs": record.outputs,
                "stopped_early": record.stopped_early,
            }
        )


def _print_outcome(console: Console, record: JobRecord, tail: list[str]) -> None:
    if record.state is JobState.COMPLETE:
        note = " (stopped early)" if record.stopped_early else ""
        console.print(f"[green]job {record.id} complete{note}[/green]")
        for output in record.outputs:
            console.print(f"  output: {safe(output)}", highlight=False)
    else:
        console.print(
            f"[red]job {record.id} {record.state.value.lower()}[/red]: {safe(record.reason)}"
        )
        if record.state is JobState.FAILED and tail:
            console.print("last log lines:")
            for line in tail:
                console.print(f"  {plain(line)}", highlight=False, markup=False)


@local.command()
@worker_options
@train_options
@run_options
def train(dry_run: bool, as_json: bool, logs: bool, **options: Any) -> None:
    """Validate and run a training job here.

    \b
    Example:
      sleap-rtc local train --mount /vast/project:project \\
          --config /vast/project/centroid.yaml --max-epochs 50 --run-name exp-1
    """
    config = _config(options)
    _run(config, _spec(train_spec_from, options), dry_run=dry_run, as_json=as_json, logs=logs)


@local.command()
@worker_options
@track_options
@run_options
def track(dry_run: bool, as_json: bool, logs: bool, **options: Any) -> None:
    """Validate and run an inference job here.

    \b
    Example:
      sleap-rtc local track --mount /vast --data-path /vast/data/labels.slp \\
          --model-paths /vast/models/single_instance --frames "0-100,500-600"
    """
    config = _config(options)
    _run(config, _spec(track_spec_from, options), dry_run=dry_run, as_json=as_json, logs=logs)


def _spec(
    build: Callable[[dict[str, Any]], TrainSpec | TrackSpec], options: dict[str, Any]
) -> TrainSpec | TrackSpec:
    from pydantic import ValidationError

    from sleap_rtc.jobs.specs import problems_from_validation_error

    try:
        return build(options)
    except ValidationError as exc:
        print_rejection(
            make_console(stderr=True), problems_from_validation_error(exc), header="Invalid job:"
        )
        sys.exit(EXIT_REJECTED)


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
    """List recent jobs, newest first."""
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
    """Show a job's state, history, progress and outputs."""
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
    """Print a job's full log."""
    store = _store(worker_config)
    record = _find(store, job_id)
    for line in store.read_log(record.id, tail=tail):
        click.echo(plain(line))
