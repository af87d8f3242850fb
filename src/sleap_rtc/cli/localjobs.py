"""``sleap-rtc local jobs …``: the jobs this machine's worker has run, from its job store."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from sleap_rtc.cli.render import make_console, plain, safe
from sleap_rtc.worker import JobRecord, JobStore, WorkerConfigError, load_worker_config


@click.group()
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
