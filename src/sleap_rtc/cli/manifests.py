"""``sleap-rtc pipeline manifest …``: write and verify manifests that pin a stage's artifacts."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sleap_rtc.cli.exitcodes import EXIT_REJECTED
from sleap_rtc.cli.render import make_console, print_rejection


@click.group()
def manifest() -> None:
    """Manifests that pin artifacts (paths, sizes, SHA-256)."""


@manifest.command("write")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--job", required=True)
@click.option("--dataset", required=True)
@click.option("--stage", required=True)
@click.option("--model", "models", multiple=True, help="Model folder under ROOT (repeatable).")
@click.option(
    "--output",
    "outputs",
    multiple=True,
    help="Another file (or folder) under ROOT to pin, e.g. predictions.slp (repeatable).",
)
@click.option(
    "--inputs",
    "inputs_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The stage's inputs (JSON, as its script writes them): kept in the manifest with "
    "their key, so a later run knows these outputs are current.",
)
@click.option(
    "--file",
    "file_index",
    type=click.IntRange(min=0),
    default=None,
    help="For one file of an array stage: keep that file's part of --inputs (its index).",
)
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
    outputs: tuple[str, ...],
    inputs_file: Path | None,
    file_index: int | None,
    slurm_job_id: str,
    portable: bool,
    experiment_root: Path | None,
) -> None:
    """Hash the model folders and outputs under ROOT into ROOT/manifest.json.

    \b
    Examples:
      sleap-rtc pipeline manifest write experiment_runs/topdown/mice/centroid \\
          --job topdown --dataset mice --stage centroid --model model
      sleap-rtc pipeline manifest write /vast/runs/topdown/mice/centroid --portable \\
          --experiment-root /vast/runs --job topdown --dataset mice --stage centroid \\
          --model model --slurm-job-id 123456
    """
    import json

    from sleap_rtc.pipeline.inputs import file_inputs
    from sleap_rtc.pipeline.manifest import default_experiment_root, portable_root, write_manifest

    if experiment_root is not None and not portable:
        raise click.UsageError("--experiment-root goes with --portable.")
    if file_index is not None and inputs_file is None:
        raise click.UsageError("--file goes with --inputs.")
    inputs = None
    if inputs_file is not None:
        try:
            inputs = json.loads(inputs_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise click.BadParameter(f"{inputs_file}: {exc}", param_hint="--inputs") from None
        if not isinstance(inputs, dict):
            raise click.BadParameter(f"{inputs_file} holds no JSON object", param_hint="--inputs")
        if file_index is not None:
            try:
                inputs = file_inputs(inputs, file_index)
            except (KeyError, TypeError, AttributeError):
                raise click.BadParameter(
                    f"{inputs_file} has no file {file_index}", param_hint="--file"
                ) from None
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
            outputs=list(outputs),
            inputs=inputs,
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
    """Check that every file a manifest pins exists with its size and SHA-256 (exit 2 if not).

    \b
    Examples:
      sleap-rtc pipeline manifest verify experiment_runs/topdown/mice/centroid/manifest.json
      sleap-rtc pipeline manifest verify /vast/runs/topdown/mice/centroid/manifest.json \\
          --experiment-root /vast/runs
    """
    from sleap_rtc.pipeline.manifest import verify_manifest

    found, problems = verify_manifest(path, "manifest", experiment_root)
    if problems:
        print_rejection(
            make_console(stderr=True), problems, header=f"Manifest {path} does not check out:"
        )
        sys.exit(EXIT_REJECTED)
    assert found is not None
    click.echo(f"{path}: {len(found.artifacts)} file(s) match")
