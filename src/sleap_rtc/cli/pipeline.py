"""``sleap-rtc pipeline``: spec-driven runs on SLURM (job files, SBATCH scripts, manifests).

``tune-batch-size`` is in :mod:`sleap_rtc.cli.tune`, ``manifest …`` in
:mod:`sleap_rtc.cli.manifests`.

Every command talks to SLURM through the :class:`~sleap_rtc.pipeline.SlurmClient` in
the click context's object (``CliRunner().invoke(cli, args, obj=client)``), else this
machine's SLURM tools.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from sleap_rtc.cli.exitcodes import EXIT_REJECTED
from sleap_rtc.cli.manifests import manifest
from sleap_rtc.cli.render import make_console, plain, print_rejection, safe
from sleap_rtc.cli.tune import tune_batch_size_command
from sleap_rtc.jobs.problems import JobRejected

if TYPE_CHECKING:
    from sleap_rtc.pipeline import SlurmClient
    from sleap_rtc.pipeline.sbatch import Layout
    from sleap_rtc.pipeline.scripts import Written
    from sleap_rtc.pipeline.spec import Pipeline


def _slurm() -> SlurmClient:
    """The SLURM client in the context's object (a test's recorded one), else the real tools."""
    from sleap_rtc.pipeline import SlurmClient

    found = click.get_current_context().find_object(SlurmClient)
    return found if found is not None else SlurmClient()


def _rejected(exc: JobRejected, header: str) -> NoReturn:
    print_rejection(make_console(stderr=True), exc.problems, header=header)
    sys.exit(EXIT_REJECTED)


@click.group()
def pipeline() -> None:
    """Pipelines on a SLURM cluster, from a job file.

    \b
    A job file names datasets (from a registry), stages (single_instance,
    centroid, centered_instance, bottomup, track), a config per training stage,
    overrides and SLURM resources. Examples are in examples/jobs/.

    \b
      sleap-rtc pipeline run --job jobs/topdown.json --generate-only
      sleap-rtc pipeline manifest verify experiment_runs/topdown/mice/centroid/manifest.json
    """


job_option = click.option(
    "--job",
    "job_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The job file (JSON or YAML).",
)
output_option = click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where slurm_jobs/ and slurm_logs/ are.",
)


def _load(job_file: Path, output_dir: Path) -> tuple[Pipeline, Layout]:
    from sleap_rtc.pipeline.sbatch import Layout
    from sleap_rtc.pipeline.spec import load_job

    try:
        loaded = load_job(job_file)
    except JobRejected as exc:
        _rejected(exc, f"Invalid job file {job_file}:")
    return loaded, Layout.under(output_dir)


@pipeline.command("run")
@job_option
@click.option(
    "--generate-only",
    is_flag=True,
    help="Write the SBATCH scripts (and a .meta.json beside each); submit nothing.",
)
@click.option("--submit", is_flag=True, help="Submit every stage that needs to run.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check everything and say what --submit would do with each stage, and why; "
    "write and submit nothing.",
)
@click.option(
    "--chain",
    type=click.Choice(["afterok", "poll"]),
    is_flag=False,
    flag_value="afterok",
    default=None,
    help="With --submit: each stage waits for the ones it needs. --chain (=afterok): "
    "SLURM dependencies, a failure cancels what depends on it. --chain=poll: this "
    "command stays and submits each stage when its parents completed.",
)
@click.option(
    "--force", is_flag=True, help="With --submit: rerun stages whose outputs already exist."
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Seconds between looks at the jobs (one sacct call each; doubling while nothing "
    "changes, up to 8x): with --chain=poll, to submit what can start; with --chain, while "
    "the job file's throttle.max_queued keeps stages waiting [default: 10].",
)
@click.option(
    "--cancel-on-exit",
    is_flag=True,
    help="With --chain=poll: when stopped (Ctrl-C, SIGTERM), cancel the jobs still "
    "queued or running instead of leaving them to finish.",
)
@output_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print what happened as JSON (with --chain=poll: each stage's outcome at the end; "
    "the event lines go to stderr).",
)
def run(
    job_file: Path,
    generate_only: bool,
    submit: bool,
    dry_run: bool,
    chain: str | None,
    force: bool,
    poll_interval: float | None,
    cancel_on_exit: bool,
    output_dir: Path,
    as_json: bool,
) -> None:
    """Check a job file, write one SBATCH script per dataset and stage, and submit them.

    Scripts are slurm_jobs/{name}/{dataset}/{stage}.sbatch (a stage of the whole
    job: {name}/_pipeline/{stage}); logs go to slurm_logs/ in the same folders and
    artifacts to experiment_runs/{name}/{dataset}/{stage}/, or under
    $SLEAP_RTC_EXPERIMENT_ROOT when it is set (the scripts honour it when they run
    too). A script is written again when the job file, a config or a labels file
    changes what it would say; one edited by hand is kept while they don't, and is
    a problem to settle when they do. Pinned manifests (dependency_manifests) are
    verified first.

    With --submit, a stage whose outputs are current (its manifest checks out and
    records the inputs it has now) is skipped, and so is a stage still queued or
    running from an earlier submission: running it twice submits nothing twice. A
    stage whose inputs changed reruns, and so does every stage that needs it.
    --dry-run shows that plan, with the reason for each stage.

    With --chain=poll, no job carries a SLURM dependency (for queues that don't
    allow them): this command submits what can start, then looks at the jobs every
    --poll-interval seconds and submits each stage once all its parents COMPLETED.
    A stage whose parent ends otherwise (FAILED, TIMEOUT, CANCELLED, ...) is never
    submitted, and says which parent. It prints a line per event and a summary,
    and exits 0 when every stage completed (or was done already), 1 otherwise.
    `pipeline status` shows the stages it has yet to submit as WAITING. Ctrl-C or
    SIGTERM stops it (exit 130 / 143) and leaves the submitted jobs running (on a
    terminal, Ctrl-C asks whether to cancel them; --cancel-on-exit cancels them);
    running the same command again resumes, skipping stages done or still queued.

    \b
    Examples:
      sleap-rtc pipeline run --job jobs/topdown.json --generate-only
      sleap-rtc pipeline run --job jobs/topdown.json --dry-run
      sleap-rtc pipeline run --job jobs/topdown.json --submit --chain
      sleap-rtc pipeline run --job jobs/topdown.json --submit --chain=poll --poll-interval 30
    """
    from sleap_rtc.pipeline import SlurmError

    if generate_only + submit + dry_run != 1:
        raise click.UsageError("Choose one of --generate-only, --dry-run and --submit.")
    if chain and not submit:
        raise click.UsageError("--chain goes with --submit.")
    if force and not (submit or dry_run):
        raise click.UsageError("--force goes with --submit or --dry-run.")
    if cancel_on_exit and chain != "poll":
        raise click.UsageError("--cancel-on-exit goes with --chain=poll.")
    if poll_interval is not None and not chain:
        raise click.UsageError("--poll-interval goes with --chain or --chain=poll.")
    loaded, layout = _load(job_file, output_dir)
    console = make_console()
    if dry_run:
        _dry_run(loaded, layout, force, as_json)
        return
    if generate_only:
        from sleap_rtc.pipeline.scripts import generate

        try:
            written = generate(loaded, layout)
        except JobRejected as exc:
            _rejected(exc, "Nothing was written:")
        if as_json:
            click.echo(json.dumps([_script_dict(w) for w in written]))
            return
        for item in written:
            console.print(
                f"{plain(str(item.script))}  {plain(_script_state(item))}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        console.print(
            f"{len(written)} script(s) for {len(loaded.datasets)} dataset(s); logs: "
            f"{safe(layout.logs)}; artifacts: {safe(layout.experiment_root)}",
            highlight=False,
            soft_wrap=True,
        )
        return
    if chain == "poll":
        interval = 10.0 if poll_interval is None else poll_interval
        _drive(loaded, layout, force, interval, cancel_on_exit, as_json)
        return
    from sleap_rtc.pipeline.plan import NOT_RUN
    from sleap_rtc.pipeline.record import AlreadyDriven
    from sleap_rtc.pipeline.run import as_dicts
    from sleap_rtc.pipeline.run import submit as submit_pipeline

    try:
        runs = submit_pipeline(
            loaded,
            layout,
            chain=chain == "afterok",
            force=force,
            slurm=_slurm(),
            poll_interval=10.0 if poll_interval is None else poll_interval,
        )
    except JobRejected as exc:
        _rejected(exc, "Nothing was submitted:")
    except AlreadyDriven as exc:
        raise click.ClickException(str(exc)) from None
    except SlurmError as exc:  # nothing of this run was left queued (all or nothing)
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(as_dicts(runs)))
        return
    for stage_run in runs:
        if stage_run.action == "submitted":
            waits = f" after {', '.join(stage_run.after)}" if stage_run.after else ""
            why = f" ({stage_run.note})" if stage_run.note != NOT_RUN else ""
            line = f"submitted job {stage_run.job_id}{waits}{why}"
        else:
            line = f"skipped: {stage_run.note}"
        console.print(
            f"{plain(stage_run.dataset):<12} {plain(stage_run.stage):<18} {plain(line)}",
            highlight=False,
            markup=False,  # names from the job file, notes and ids from SLURM
            soft_wrap=True,
        )


def _script_state(item: Written) -> str:
    if item.action == "rewritten":
        return f"rewritten ({'; '.join(item.changed)})"
    if item.action == "edited":
        return "kept (edited by hand; the job file writes the same as before)"
    return item.action


def _script_dict(item: Written) -> dict[str, object]:
    return {
        "script": str(item.script),
        "action": item.action,
        "written": item.created,
        "changed": item.changed,
        "inputs_key": item.key,
    }


def _dry_run(loaded: Pipeline, layout: Layout, force: bool, as_json: bool) -> None:
    """``run --dry-run``: the plan, a line per stage, and what would become of the scripts."""
    from sleap_rtc.pipeline import SlurmError
    from sleap_rtc.pipeline.run import plan

    try:
        steps = plan(loaded, layout, force=force, slurm=_slurm())
    except JobRejected as exc:
        _rejected(exc, "These would stop the run:")
    except SlurmError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        found = [
            {
                "dataset": step.stage.group,
                "stage": step.stage.name,
                "action": step.action,
                "reason": step.reason,
                "job_id": step.job_id,
                "script": str(step.written.script),
                "script_action": step.written.action,
                "script_changes": step.written.changed,
                "inputs_key": step.written.key,
                "tasks": step.tasks,
            }
            for step in steps
        ]
        click.echo(json.dumps(found))
        return
    console = make_console()
    for step in steps:
        script = step.written
        changed = f"  [its script changes: {'; '.join(script.changed)}]"
        note = {"rewritten": changed, "written": "  [its script is new]"}.get(script.action, "")
        console.print(
            f"{plain(step.stage.group):<12} {plain(step.stage.name):<18} "
            f"{step.action:<6} {plain(step.reason)}{plain(note)}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    counts = {a: sum(1 for s in steps if s.action == a) for a in ("run", "skip", "queued")}
    console.print(
        f"{len(steps)} stage(s): {counts['run']} to run, {counts['skip']} current, "
        f"{counts['queued']} queued or running. Nothing was written or submitted.",
        highlight=False,
        soft_wrap=True,
    )


def _drive(
    loaded: Pipeline,
    layout: Layout,
    force: bool,
    interval: float,
    cancel_on_exit: bool,
    as_json: bool,
) -> NoReturn:
    """``run --submit --chain=poll``: drive until done or stopped; exits with the outcome."""
    import signal
    import threading
    import time
    from types import FrameType

    from sleap_rtc.pipeline import SlurmError
    from sleap_rtc.pipeline.driver import Driver, Event, drive, summary
    from sleap_rtc.pipeline.record import AlreadyDriven
    from sleap_rtc.pipeline.run import as_dicts

    out = make_console(stderr=as_json)  # with --json, stdout holds the JSON alone

    def say(text: str) -> None:
        # One line each; it names datasets and stages, and quotes SLURM's words.
        out.print(plain(text), highlight=False, markup=False, soft_wrap=True)

    def show(event: Event) -> None:
        at = time.strftime("%H:%M:%S", time.localtime(event.at))
        if event.kind == "retry":
            say(f"{at}  {event.text}")
        else:
            say(f"{at}  {event.dataset:<12} {event.stage:<18} {event.text}")

    driver = Driver(loaded, layout, force=force, interval=interval, on_event=show, slurm=_slurm())
    stop = threading.Event()
    signals: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if signals and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        signals.append(signum)
        stop.set()

    def ask(left: list[str]) -> bool:
        """On a terminal, a first Ctrl-C asks whether to cancel what is left."""
        if not signals or signals[0] != signal.SIGINT or not sys.stdin.isatty():
            return False
        try:
            return click.confirm(
                f"Stopped. Cancel the {len(left)} job(s) still queued or running?",
                default=False,
                err=True,
            )
        except click.Abort:
            return False

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        drive(driver, stop=stop, cancel_on_exit=cancel_on_exit, ask=ask)
    except KeyboardInterrupt:
        pass  # a second Ctrl-C: stopped now, without asking
    except AlreadyDriven as exc:
        raise click.ClickException(str(exc)) from None
    except JobRejected as exc:
        _rejected(exc, "Nothing was submitted:")
    except SlurmError as exc:
        raise click.ClickException(
            f"{exc} (stages submitted before it are recorded; run it again to go on)"
        ) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if signals:
        left = driver.in_flight_ids()
        if driver.cancelled:
            cancelled = driver.cancelled
            say(f"stopped; cancelled {len(cancelled)} job(s): {' '.join(cancelled)}")
        elif left:
            say(
                f"stopped; {len(left)} job(s) left queued or running: {' '.join(left)}. Run "
                "the same command again to go on driving (stages done or still queued are "
                "skipped), or `sleap-rtc pipeline cancel` to cancel them."
            )
        else:
            say("stopped; no job left queued or running. Run the same command again to go on.")
    results = driver.results()
    say(summary(results))
    if as_json:
        click.echo(json.dumps(as_dicts(results)))
    if signals:
        sys.exit(128 + signals[0])
    sys.exit(0 if driver.succeeded() else 1)


@pipeline.command("status")
@job_option
@output_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--watch", is_flag=True, help="Refresh until every job has finished.")
@click.option("--interval", type=click.FloatRange(1), default=10.0, show_default=True)
def status_command(
    job_file: Path, output_dir: Path, as_json: bool, watch: bool, interval: float
) -> None:
    """Every stage of every dataset with its SLURM state (one sacct call per refresh).

    \b
    Examples:
      sleap-rtc pipeline status --job jobs/topdown.json
      sleap-rtc pipeline status --job jobs/topdown.json --watch --interval 30
    """
    import time

    from rich.live import Live
    from rich.table import Table

    from sleap_rtc.pipeline import FINAL_STATES
    from sleap_rtc.pipeline.run import as_dicts, status

    loaded, layout = _load(job_file, output_dir)
    slurm = _slurm()

    def table() -> tuple[Table, bool]:
        found = status(loaded, layout, slurm=slurm)
        grid = Table("dataset", "stage", "job", "state")
        for item in found:
            state = f"{item.state}: {item.reason}" if item.reason else item.state
            grid.add_row(safe(item.dataset), safe(item.stage), safe(item.job_id or ""), safe(state))
        waiting = any(
            (i.job_id and i.state not in FINAL_STATES) or i.state == "WAITING" for i in found
        )
        return grid, waiting

    if as_json:
        click.echo(json.dumps(as_dicts(status(loaded, layout, slurm=slurm))))
        return
    grid, waiting = table()
    console = make_console()
    if not watch:
        console.print(grid)
        return
    with Live(grid, console=console, refresh_per_second=1) as live:
        while waiting:
            time.sleep(interval)
            grid, waiting = table()
            live.update(grid)


@pipeline.command("cancel")
@job_option
@output_option
def cancel_command(job_file: Path, output_dir: Path) -> None:
    """Cancel every job of this pipeline that is still pending or running.

    \b
    Examples:
      sleap-rtc pipeline cancel --job jobs/topdown.json
      sleap-rtc pipeline cancel --job jobs/topdown.json --output-dir /vast/runs
    """
    from sleap_rtc.pipeline.run import cancel

    loaded, layout = _load(job_file, output_dir)
    ids = cancel(loaded, layout, slurm=_slurm())
    click.echo(f"cancelled {len(ids)} job(s){': ' + ' '.join(ids) if ids else ''}")


pipeline.add_command(tune_batch_size_command)
pipeline.add_command(manifest)
