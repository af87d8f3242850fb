"""``sleap-rtc pipeline``: spec-driven runs on SLURM (job files, SBATCH scripts, manifests).

Size: one command group whose subcommands share option parsing and rendering; the run
driver's cancel-on-exit moves below the CLI when the pipeline gets its SLURM client object.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from sleap_rtc.cli.exitcodes import EXIT_REJECTED
from sleap_rtc.cli.render import make_console, plain, print_rejection, safe
from sleap_rtc.jobs.problems import JobRejected

if TYPE_CHECKING:
    from sleap_rtc.pipeline.sbatch import Layout
    from sleap_rtc.pipeline.spec import Pipeline


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
    help="With --chain=poll: seconds between looks at the jobs (one sacct call each) "
    "[default: 10].",
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
    chain: str | None,
    force: bool,
    poll_interval: float | None,
    cancel_on_exit: bool,
    output_dir: Path,
    as_json: bool,
) -> None:
    """Check a job file, write one SBATCH script per dataset and stage, and submit them.

    Scripts are named {name}_{dataset}_{stage}.sbatch in slurm_jobs/; logs go to
    slurm_logs/ and artifacts to experiment_runs/{name}/{dataset}/{stage}/, or under
    $SLEAP_RTC_EXPERIMENT_ROOT when it is set (the scripts honour it when they run
    too). A script that already exists is kept as it is, edits included. Pinned
    manifests (dependency_manifests) are verified first.

    With --submit, stages whose outputs exist (a manifest that checks out,
    predictions written) are skipped, and so are stages still queued or running
    from an earlier submission: running it twice submits nothing twice.

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
      sleap-rtc pipeline run --job jobs/topdown.json --submit --chain
      sleap-rtc pipeline run --job jobs/topdown.json --submit --chain=poll --poll-interval 30
    """
    from sleap_rtc.engine.slurm_tools import SlurmError

    if generate_only == submit:
        raise click.UsageError("Choose one of --generate-only and --submit.")
    if (chain or force) and not submit:
        raise click.UsageError("--chain and --force go with --submit.")
    if (poll_interval is not None or cancel_on_exit) and chain != "poll":
        raise click.UsageError("--poll-interval and --cancel-on-exit go with --chain=poll.")
    loaded, layout = _load(job_file, output_dir)
    console = make_console()
    if generate_only:
        from sleap_rtc.pipeline.sbatch import generate

        try:
            written = generate(loaded, layout)
        except JobRejected as exc:
            _rejected(exc, "Pinned artifacts don't check out:")
        if as_json:
            click.echo(
                json.dumps([{"script": str(w.script), "written": w.created} for w in written])
            )
            return
        for item in written:
            state = "written" if item.created else "kept (exists; delete it to write it again)"
            console.print(f"{safe(item.script)}  {state}", highlight=False, soft_wrap=True)
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
    from sleap_rtc.pipeline.run import AlreadyDriven, as_dicts
    from sleap_rtc.pipeline.run import submit as submit_pipeline

    try:
        runs = submit_pipeline(loaded, layout, chain=chain == "afterok", force=force)
    except JobRejected as exc:
        _rejected(exc, "Pinned artifacts don't check out:")
    except AlreadyDriven as exc:
        raise click.ClickException(str(exc)) from None
    except SlurmError as exc:
        raise click.ClickException(f"{exc} (stages submitted before it are recorded)") from None
    if as_json:
        click.echo(json.dumps(as_dicts(runs)))
        return
    for stage_run in runs:
        if stage_run.action == "submitted":
            waits = f" after {', '.join(stage_run.after)}" if stage_run.after else ""
            line = f"submitted job {stage_run.job_id}{waits}"
        else:
            line = f"skipped: {stage_run.note}"
        console.print(
            f"{plain(stage_run.dataset):<12} {plain(stage_run.stage):<18} {plain(line)}",
            highlight=False,
            markup=False,  # names from the job file, notes and ids from SLURM
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

    from sleap_rtc.engine.slurm_tools import SlurmError
    from sleap_rtc.pipeline.driver import Driver, Event, summary
    from sleap_rtc.pipeline.run import AlreadyDriven, as_dicts

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

    driver = Driver(loaded, layout, force=force, interval=interval, on_event=show)
    stop = threading.Event()
    signals: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if signals and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        signals.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    hard = False
    try:
        driver.run(stop=stop)
    except KeyboardInterrupt:
        hard = True
    except AlreadyDriven as exc:
        raise click.ClickException(str(exc)) from None
    except JobRejected as exc:
        _rejected(exc, "Pinned artifacts don't check out:")
    except SlurmError as exc:
        raise click.ClickException(
            f"{exc} (stages submitted before it are recorded; run it again to go on)"
        ) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if signals:
        left = driver.in_flight_ids()
        cancel = cancel_on_exit
        ask = not hard and signals[0] == signal.SIGINT and sys.stdin.isatty()
        if left and not cancel and ask:
            try:
                cancel = click.confirm(
                    f"Stopped. Cancel the {len(left)} job(s) still queued or running?",
                    default=False,
                    err=True,
                )
            except click.Abort:
                cancel = False
        if left and cancel:
            driver.cancel_in_flight()
            say(f"stopped; cancelled {len(left)} job(s): {' '.join(left)}")
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
    """Every stage of every dataset with its SLURM state (one sacct call per refresh)."""
    import time

    from rich.live import Live
    from rich.table import Table

    from sleap_rtc.engine.slurm_tools import FINAL_STATES
    from sleap_rtc.pipeline.run import as_dicts, status

    loaded, layout = _load(job_file, output_dir)

    def table() -> tuple[Table, bool]:
        found = status(loaded, layout)
        grid = Table("dataset", "stage", "job", "state")
        for item in found:
            state = f"{item.state}: {item.reason}" if item.reason else item.state
            grid.add_row(safe(item.dataset), safe(item.stage), safe(item.job_id or ""), safe(state))
        waiting = any(
            (i.job_id and i.state not in FINAL_STATES) or i.state == "WAITING" for i in found
        )
        return grid, waiting

    if as_json:
        click.echo(json.dumps(as_dicts(status(loaded, layout))))
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
    """Cancel every job of this pipeline that is still pending or running."""
    from sleap_rtc.pipeline.run import cancel

    loaded, layout = _load(job_file, output_dir)
    ids = cancel(loaded, layout)
    click.echo(f"cancelled {len(ids)} job(s){': ' + ' '.join(ids) if ids else ''}")


@pipeline.group()
def manifest() -> None:
    """Manifests that pin artifacts (paths, sizes, SHA-256)."""


@manifest.command("write")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--job", required=True)
@click.option("--dataset", required=True)
@click.option("--stage", required=True)
@click.option("--model", "models", multiple=True, required=True, help="Model folder under ROOT.")
@click.option("--slurm-job-id", default="", help="The SLURM job that made the artifacts.")
@click.option(
    "--portable",
    is_flag=True,
    help="Write the root as {experiment_root}/... (when ROOT is under the experiment root), "
    "so the manifest still checks out after the experiment root moves.",
)
@click.option(
    "--experiment-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --portable: the experiment root [default: $SLEAP_RTC_EXPERIMENT_ROOT, else "
    "./experiment_runs].",
)
def manifest_write(
    root: Path,
    job: str,
    dataset: str,
    stage: str,
    models: tuple[str, ...],
    slurm_job_id: str,
    portable: bool,
    experiment_root: Path | None,
) -> None:
    """Hash the model folders under ROOT into ROOT/manifest.json."""
    from sleap_rtc.pipeline.manifest import default_experiment_root, portable_root, write_manifest

    if experiment_root is not None and not portable:
        raise click.UsageError("--experiment-root goes with --portable.")
    base = None
    if portable:
        base = experiment_root or default_experiment_root()
        if portable_root(root, base) is None:
            click.echo(
                f"{root.resolve()} is not under the experiment root {base.resolve()}: "
                "the manifest keeps its absolute root",
                err=True,
            )
    try:
        path = write_manifest(
            root,
            job=job,
            dataset=dataset,
            stage=stage,
            models=list(models),
            slurm_job_id=slurm_job_id or None,
            portable=portable,
            experiment_root=base,
        )
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(path)


@manifest.command("verify")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--experiment-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="What a root starting with {experiment_root} expands to [default: "
    "$SLEAP_RTC_EXPERIMENT_ROOT, else ./experiment_runs].",
)
def manifest_verify(path: Path, experiment_root: Path | None) -> None:
    """Check that every file a manifest pins exists with its size and SHA-256 (exit 2 if not)."""
    from sleap_rtc.pipeline.manifest import verify_manifest

    found, problems = verify_manifest(path, "manifest", experiment_root)
    if problems:
        print_rejection(
            make_console(stderr=True), problems, header=f"Manifest {path} does not check out:"
        )
        sys.exit(EXIT_REJECTED)
    assert found is not None
    click.echo(f"{path}: {len(found.artifacts)} file(s) match")


@pipeline.command("tune-batch-size")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The sleap-nn config YAML to train with.",
)
@click.option(
    "--labels",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Training labels (.slp); repeatable [default: the config's train_labels_path].",
)
@click.option(
    "--val-labels",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Validation labels (.slp); repeatable [default: the config's val_labels_path, "
    "else a split of the training labels].",
)
@click.option(
    "--start",
    type=click.IntRange(min=1),
    help="The first batch size tried [default: the config's, else 4].",
)
@click.option(
    "--max-batch-size",
    type=click.IntRange(min=1),
    help="The largest batch size tried [default: the number of training samples in the "
    "labels, else 1024].",
)
@click.option(
    "--max-trials", type=click.IntRange(min=1), default=10, show_default=True, help="Most trials."
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Training steps in each trial.",
)
@click.option(
    "--trial-timeout",
    type=click.FloatRange(min=1),
    default=900.0,
    show_default=True,
    help="Seconds one trial may take before it counts as failed.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="auto: the GPU if there is one (probe), else the CPU (no probe).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Probe without a GPU too (on a CPU nothing runs out of memory: it climbs to the "
    "largest size).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result and trials as JSON.")
def tune_batch_size_command(
    config_path: Path,
    labels: tuple[Path, ...],
    val_labels: tuple[Path, ...],
    start: int | None,
    max_batch_size: int | None,
    max_trials: int,
    steps: int,
    trial_timeout: float,
    device: str,
    force: bool,
    as_json: bool,
) -> None:
    """Find the largest training batch size that fits in the GPU's memory.

    Runs sleap-nn train for a few steps at a time (one epoch, nothing saved):
    from the starting size, doubling while it fits, then halving from a size that
    ran out of memory until one fits. Each trial's progress goes to stderr; stdout
    gets only the chosen batch size (or, with --json, an object with every trial),
    so a script can capture it. Without a GPU nothing is tried and the starting
    size is printed (--force probes anyway).

    Exits 1 when no size fits (even 1 runs out of memory) or a trial fails for
    another reason (a broken config, unreadable labels): the reason is printed.

    \b
    Examples:
      sleap-rtc pipeline tune-batch-size --config centroid.yaml --labels mice.slp
      BATCH=$(sleap-rtc pipeline tune-batch-size --config centroid.yaml --labels mice.slp)
      sleap-rtc pipeline tune-batch-size --config c.yaml --labels l.slp --start 8 \\
          --max-batch-size 256 --json
      sleap-rtc pipeline tune-batch-size --config c.yaml --labels l.slp --device cpu \\
          --force --start 2 --max-batch-size 8
    """
    from sleap_rtc.pipeline.tune import Probe, config_labels, read_config, tune_batch_size

    def fail(message: str, result: dict[str, object] | None = None) -> NoReturn:
        if as_json:
            click.echo(json.dumps(result or {"batch_size": None, "error": message}))
        raise click.ClickException(message)

    if not config_path.is_file():
        fail(f"config not found: {config_path}")
    try:
        config = read_config(config_path)
    except ValueError as exc:
        fail(str(exc))
    config_path = config_path.resolve()
    train = [p.resolve() for p in labels] or config_labels(config, config_path, "train_labels_path")
    val = [p.resolve() for p in val_labels] or config_labels(config, config_path, "val_labels_path")
    if not train:
        fail(f"{config_path} names no data_config.train_labels_path: pass --labels PATH")
    for kind, paths in (("labels", train), ("validation labels", val)):
        for path in paths:
            if not path.is_file():
                fail(f"{kind} not found: {path}")
    probe = Probe(
        config=config_path,
        labels=train,
        val_labels=val,
        device=device,
        steps=steps,
        timeout=trial_timeout,
    )
    try:
        result = tune_batch_size(
            probe,
            start=start,
            max_batch_size=max_batch_size,
            max_trials=max_trials,
            force=force,
            report=lambda line: click.echo(plain(line), err=True),  # quotes sleap-nn's output
        )
    except ValueError as exc:
        fail(str(exc))
    if not result.ok:
        fail(result.error or "no batch size was chosen", result.to_dict())
    if result.tuned:
        click.echo(f"batch size {result.batch_size}: {result.note}", err=True)
    else:
        click.echo(f"{result.note} (--force probes anyway)", err=True)
    click.echo(json.dumps(result.to_dict()) if as_json else str(result.batch_size))
