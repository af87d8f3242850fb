"""The lines of an array stage's script: each task runs its share of the files, each
file in its own folder with its own manifest (so a rerun redoes only the files whose
inputs changed).

Two kinds of stage run so: track over several files, and a command stage that
follows it file by file (``dependency: aftercorr``: task N after track's task N),
which runs its lines once per file in that file's folder, with the file and its
predictions in the environment.
"""

from __future__ import annotations

from sleap_rtc.jobs.options import option
from sleap_rtc.pipeline.arrays import ArrayShape, file_folders
from sleap_rtc.pipeline.manifest import EXPERIMENT_ROOT_ENV, Manifest
from sleap_rtc.pipeline.sbatch import (
    PREDICTIONS,
    SPEC_FILE,
    command_env,
    json_lines,
    manifest_command,
    mount_options,
    pinned_models,
    quote,
    stage_spec,
)
from sleap_rtc.pipeline.spec import Stage


def array_lines(
    stage: Stage, sleap_rtc: list[str], pinned: Manifest | None, shape: ArrayShape
) -> list[str]:
    """The lines after the stage's inputs: its job, then the loop over its files."""
    cli = " ".join(quote(part) for part in sleap_rtc)
    if stage.kind == "command":
        head = command_env(stage, sleap_rtc)
        body = _command_body(stage, cli)
    else:
        head = json_lines(
            SPEC_FILE,
            stage_spec(stage, pinned).model_dump(mode="json", exclude_none=True),
            "The job each file runs (its data and output below); relative paths are "
            "relative to $ARTIFACTS.",
            shared=True,
        )
        body = _track_body(stage, cli, pinned)
    what = "tracks" if stage.kind == "track" else "runs its command on"
    return [
        *head,
        f"# The {len(stage.files)} files this stage {what}, and each one's folder in $ARTIFACTS;",
        (
            "# task N takes file N."
            if shape.per_task == 1
            else f"# task N takes {shape.per_task} files, from file N*{shape.per_task} on."
        ),
        "FILES=(",
        *(f"    {quote(file)}" for file in stage.files),
        ")",
        "NAMES=(",
        *(f"    {quote(name)}" for name in file_folders(stage.files)),
        ")",
        f"PER_TASK={shape.per_task}",
        "first=$((TASK * PER_TASK))",
        "for ((i = first; i < first + PER_TASK && i < ${#FILES[@]}; i++)); do",
        '    OUT="$ARTIFACTS/${NAMES[$i]}"',
        '    mkdir -p "$OUT"',
        '    echo "file $i: ${FILES[$i]}" >&2',
        *("    " + line for line in body),
        *("    " + line for line in _manifest(stage, cli).split("\n")),
        "done",
    ]


def _manifest(stage: Stage, cli: str) -> str:
    """The line that ends one file: its manifest, with that file's part of the inputs."""
    pins = [PREDICTIONS] if stage.kind == "track" else list(stage.outputs)
    line = manifest_command(cli, stage, [f"--output {quote(pin)}" for pin in pins])
    line = line.replace('"$ARTIFACTS" \\', '"$OUT" \\', 1)
    return line.replace(
        '--slurm-job-id "${SLURM_JOB_ID:-}"',
        '--file "$i" --slurm-job-id "${SLURM_ARRAY_JOB_ID:-}_${TASK}"',
    )


def _track_body(stage: Stage, cli: str, pinned: Manifest | None) -> list[str]:
    data, output = option("track", "data_path").flag, option("track", "output_path").flag
    command = [
        f"{cli} local track",
        *mount_options([*(f.parent for f in stage.files), *pinned_models(stage, pinned)]),
        f'--mount "${EXPERIMENT_ROOT_ENV}:experiments"',
        f'--spec "$ARTIFACTS"/{SPEC_FILE}',
        f'{data} "${{FILES[$i]}}"',
        f'{output} "$OUT"/{PREDICTIONS}',
    ]
    return [
        'export SLEAP_RTC_HOME="$OUT/.sleap-rtc"',
        *" \\\n    ".join(command).split("\n"),
    ]


def _command_body(stage: Stage, cli: str) -> list[str]:
    (parent,) = stage.after  # aftercorr needs exactly one stage: track
    return [
        "# This file, and what the stage it follows made of it.",
        'export SLEAP_RTC_TRACK_FILE="${FILES[$i]}"',
        f'export SLEAP_RTC_PREDICTIONS="$SLEAP_RTC_EXPERIMENT"/{quote(stage.data.name)}/'
        f'{quote(parent)}/"${{NAMES[$i]}}"/{PREDICTIONS}',
        'cd "$OUT"',
        "# The stage's command (a failing line fails the task)",
        *stage.command,
        'cd "$OUT"',
    ]
