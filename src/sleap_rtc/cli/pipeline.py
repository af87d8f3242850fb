"""``sleap-rtc pipeline``: spec-driven runs on SLURM (job files, SBATCH scripts, manifests)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console

from sleap_rtc.cli.render import print_rejection
from sleap_rtc.jobs.problems import JobRejected

EXIT_INVALID = 2


def _rejected(exc: JobRejected, header: str) -> NoReturn:
    print_rejection(Console(stderr=True), exc.problems, header=header)
    sys.exit(EXIT_INVALID)


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


@pipeline.command("run")
@click.option(
    "--job",
    "job_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The job file (JSON or YAML).",
)
@click.option(
    "--generate-only",
    is_flag=True,
    required=True,
    help="Write the SBATCH scripts (and a .meta.json beside each) without submitting.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where slurm_jobs/ and slurm_logs/ go.",
)
def run(job_file: Path, generate_only: bool, output_dir: Path) -> None:
    """Check a job file and write one SBATCH script per dataset and stage.

    Scripts are named {name}_{dataset}_{stage}.sbatch in slurm_jobs/; logs go to
    slurm_logs/ and artifacts to experiment_runs/{name}/{dataset}/{stage}/, or under
    $SLEAP_RTC_EXPERIMENT_ROOT when it is set (the scripts honour it when they run
    too). A script that already exists is kept as it is, edits included. Pinned
    manifests (dependency_manifests) are verified first.
    """
    from sleap_rtc.pipeline.sbatch import EXPERIMENT_ROOT_ENV, Layout, generate
    from sleap_rtc.pipeline.spec import load_job

    try:
        loaded = load_job(job_file)
    except JobRejected as exc:
        _rejected(exc, f"Invalid job file {job_file}:")
    root = os.environ.get(EXPERIMENT_ROOT_ENV)
    layout = Layout.under(output_dir, Path(root) if root else None)
    try:
        written = generate(loaded, layout)
    except JobRejected as exc:
        _rejected(exc, "Pinned artifacts don't check out:")
    console = Console()
    for item in written:
        state = "written" if item.created else "kept (exists; delete it to write it again)"
        console.print(f"{item.script}  {state}", highlight=False, soft_wrap=True)
    console.print(
        f"{len(written)} script(s) for {len(loaded.datasets)} dataset(s); logs: {layout.logs}; "
        f"artifacts: {layout.experiment_root}",
        highlight=False,
        soft_wrap=True,
    )


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
def manifest_write(
    root: Path, job: str, dataset: str, stage: str, models: tuple[str, ...], slurm_job_id: str
) -> None:
    """Hash the model folders under ROOT into ROOT/manifest.json."""
    from sleap_rtc.pipeline.manifest import write_manifest

    try:
        path = write_manifest(
            root,
            job=job,
            dataset=dataset,
            stage=stage,
            models=list(models),
            slurm_job_id=slurm_job_id or None,
        )
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(path)


@manifest.command("verify")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def manifest_verify(path: Path) -> None:
    """Check that every file a manifest pins exists with its size and SHA-256 (exit 2 if not)."""
    from sleap_rtc.pipeline.manifest import verify_manifest

    found, problems = verify_manifest(path, "manifest")
    if problems:
        print_rejection(
            Console(stderr=True), problems, header=f"Manifest {path} does not check out:"
        )
        sys.exit(EXIT_INVALID)
    assert found is not None
    click.echo(f"{path}: {len(found.artifacts)} file(s) match")
