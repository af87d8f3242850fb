"""SBATCH scripts for pipeline stages, written so a person can read and edit them.

Each stage of each dataset gets ``slurm_jobs/{job}/{dataset}/{stage}.sbatch``
(``{job}/_pipeline/{stage}`` for a stage of the whole job), written by
:mod:`sleap_rtc.pipeline.scripts` with a ``.meta.json`` beside it. A script holds
its resources as ``#SBATCH`` lines, the job file's set-up lines, and the commands
that run the stage with ``sleap-rtc local``: the stage's job is a spec (the
``extra_args`` of the job file are its fields), written by the script into the
artifacts folder and run with ``sleap-rtc local train|track --spec``; a command
stage runs its own lines there instead. A script fails on the first failing line
(``set -euo pipefail``), set-up included. With ``optimize_batch_size``, a training
stage first probes for the largest batch size that fits in the GPU's memory
(``sleap-rtc pipeline tune-batch-size``; without a GPU it keeps the starting size)
and trains with it. Every stage ends by writing its manifest, with its inputs
(:mod:`sleap_rtc.pipeline.inputs`), which is how a later run knows its outputs are
current. Artifacts go to ``$SLEAP_RTC_EXPERIMENT_ROOT/{job}/{dataset}/{stage}/``;
the root defaults to the one chosen when it was written; the environment overrides it.
Track over several files is one array job, a folder per file (:mod:`.arrays`).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sleap_rtc.jobs.options import option
from sleap_rtc.jobs.pathmaps import as_pairs
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.pipeline.arrays import ArrayShape, file_folders
from sleap_rtc.pipeline.attempts import NOT_RETRIED, attempt_lines, gate_script
from sleap_rtc.pipeline.manifest import (
    EXPERIMENT_ROOT_ENV,
    Manifest,
    default_experiment_root,
)
from sleap_rtc.pipeline.spec import TRAINING_STAGES, Stage

__all__ = ["NOT_RETRIED", "ArrayShape", "Layout", "file_folders", "gate_script", "render"]

#: Inside a stage's artifacts folder: the trained model, tracking's output, the job's spec.
MODEL_DIR = "model"
PREDICTIONS = "predictions.slp"
SPEC_FILE = "spec.json"
#: Inside a stage's artifacts folder: its inputs, as the script was written for them.
INPUTS_FILE = "inputs.json"
#: A training script writes its inputs here first, to compare them with an earlier run's.
NEXT_INPUTS = "inputs.json.next"
#: The checkpoint sleap-nn leaves after each epoch, which a rerun for the same inputs resumes.
LAST_CHECKPOINT = "last.ckpt"
SAVE_LAST = "trainer_config.model_ckpt.save_last=true"
#: Where a resumed stage keeps its best checkpoint while training goes on.
BEST_ASIDE = "best.ckpt.before-resume"
#: The shell variable a probed batch size is kept in.
BATCH_SIZE_VAR = "BATCH_SIZE"


@dataclass(frozen=True)
class Layout:
    """Where a run's scripts, logs and artifacts go."""

    scripts: Path
    logs: Path
    experiment_root: Path

    @classmethod
    def under(cls, folder: Path, experiment_root: Path | None = None) -> Layout:
        """``folder``'s layout; the root is ``experiment_root``, else $SLEAP_RTC_EXPERIMENT_ROOT,
        else ``folder/experiment_runs``."""
        folder = folder.resolve()
        root = experiment_root or default_experiment_root(folder)
        return cls(
            scripts=folder / "slurm_jobs",
            logs=folder / "slurm_logs",
            experiment_root=root.resolve(),
        )

    def artifacts_dir(self, stage: Stage) -> Path:
        """The stage's artifacts folder, as a path here."""
        return self.experiment_root / stage.job / stage.group / stage.name

    def artifacts(self, stage: Stage) -> str:
        """The stage's artifacts folder as the script names it (honouring the env)."""
        parts = "/".join(quote(part) for part in (stage.job, stage.group, stage.name))
        return f'"${EXPERIMENT_ROOT_ENV}"/{parts}'

    def script(self, stage: Stage) -> Path:
        return self.scripts / stage.job / stage.group / f"{stage.name}.sbatch"

    def meta(self, stage: Stage) -> Path:
        return self.scripts / stage.job / stage.group / f"{stage.name}.meta.json"

    def log_folder(self, stage: Stage) -> Path:
        return self.logs / stage.job / stage.group

    def log(self, stage: Stage, job_id: str | None, task: str | None = None) -> Path:
        """A stage's log for one of its jobs (``%j`` for the job id SLURM fills in); an
        array stage's, for one task (``%A_%a``; ``*`` for any task)."""
        if stage.files:
            return self.log_folder(stage) / f"{stage.name}-{job_id or '%A'}_{task or '%a'}.out"
        return self.log_folder(stage) / f"{stage.name}-{job_id or '%j'}.out"

    def file_dirs(self, stage: Stage) -> list[Path]:
        """An array stage's folder for each of its files, in its artifacts folder."""
        return [self.artifacts_dir(stage) / name for name in file_folders(stage.files)]


def quote(value: str | Path) -> str:
    return shlex.quote(str(value))


def sbatch_lines(stage: Stage, layout: Layout, shape: ArrayShape | None = None) -> list[str]:
    """The ``#SBATCH`` header for a stage (an array job's, with ``shape``)."""
    lines = [
        f"--job-name={stage.slurm_name}",
        f"--output={layout.log(stage, None)}",
        f"--chdir={layout.scripts.parent}",
        *stage.resources.directives(),
    ]
    if shape is not None:
        lines.append(shape.option(parallelism=stage.array_parallelism))
    return [f"#SBATCH {line}" for line in lines]


def mount_options(paths: list[Path]) -> list[str]:
    """``--mount`` options for the folders a stage reads or writes (labels m0, m1…)."""
    folders: list[Path] = []
    for path in paths:
        if not any(path == f or path.is_relative_to(f) for f in folders):
            folders = [f for f in folders if not f.is_relative_to(path)] + [path]
    return [f"--mount {quote(f'{folder}:m{i}')}" for i, folder in enumerate(folders)]


def tune_lines(stage: Stage, cli: str) -> list[str]:
    """Lines that set ``$BATCH_SIZE`` for a training stage from a short probe.

    The assignment stands on its own line, so under ``set -e`` a failing probe fails
    the job (``export X=$(...)`` or ``local X=$(...)`` would hide its exit status).
    """
    assert stage.config is not None
    probe = [
        f"{cli} pipeline tune-batch-size",
        f"--config {quote(stage.config)}",
        f"--labels {quote(stage.data.labels)}",
    ]
    if stage.data.val_labels is not None:
        probe.append(f"--val-labels {quote(stage.data.val_labels)}")
    if "batch_size" in stage.extra_args:
        probe.append(f"--start {quote(str(stage.extra_args['batch_size']))}")
    return [
        "# The largest batch size that fits in the GPU's memory, from a few short trial runs",
        "# (without a GPU, the starting size); a failing probe fails the job.",
        f"{BATCH_SIZE_VAR}=$(" + " \\\n    ".join(probe) + ")",
        "",
    ]


def trained_here(stage: Stage) -> list[str]:
    """The training stages of this run whose models a track stage uses (those it needs)."""
    return [parent for parent in stage.after if parent in TRAINING_STAGES]


def pinned_models(stage: Stage, pinned: Manifest | None) -> list[Path]:
    """Pinned models join those trained in this run, unless this run trains their stage."""
    if pinned is None or pinned.stage in trained_here(stage):
        return []
    return pinned.model_paths()


def stage_spec(stage: Stage, pinned: Manifest | None = None) -> TrainSpec | TrackSpec:
    """The job one stage runs, with the job file's ``extra_args`` as its fields.

    Relative paths are relative to the stage's artifacts folder, where the script keeps
    the spec (:data:`SPEC_FILE`): the model folder, tracking's output and the models the
    other stages of this run train (``../centroid/model``), so the spec still holds when
    the experiment root moves. A probed batch size is left out: the script passes it.
    """
    args = dict(stage.extra_args)
    # The job file's maps first, then the dataset's (the longest prefix wins anyway).
    maps = [*(as_pairs(args.pop("path_map", None)) or []), *stage.data.path_map]
    if maps:
        args["path_map"] = maps
    if stage.kind == "train":
        assert stage.config is not None
        if stage.optimize_batch_size:
            args.pop("batch_size", None)
        # A checkpoint after every epoch, so a requeued or retried stage goes on from it.
        args["overrides"] = [SAVE_LAST, *args.get("overrides", [])]
        val = stage.data.val_labels
        return TrainSpec(
            config_paths=[str(stage.config)],
            labels_path=str(stage.data.labels),
            val_labels_path=str(val) if val is not None else None,
            run_name=MODEL_DIR,
            **args,
        )
    models = [f"../{parent}/{MODEL_DIR}" for parent in trained_here(stage)]
    models += [str(model) for model in pinned_models(stage, pinned)]
    return TrackSpec(
        data_path=str(stage.data.track[0]),  # an array's files: each task gives its own
        model_paths=models,
        output_path=PREDICTIONS,
        overwrite=True,
        **args,
    )


def stage_job(stage: Stage, pinned: Manifest | None = None) -> dict[str, Any]:
    """What a stage runs, as its inputs record it: its spec, or a command stage's lines."""
    if stage.kind == "command":
        return {"command": list(stage.command), "outputs": list(stage.outputs)}
    job = stage_spec(stage, pinned).model_dump(mode="json", exclude_none=True)
    return {**job, "optimize_batch_size": stage.optimize_batch_size}


def json_lines(name: str, data: dict[str, Any], comment: str, *, shared: bool = False) -> list[str]:
    """Lines that write ``data`` as ``$ARTIFACTS/{name}``, as it is here.

    A quoted here-document: the shell expands nothing in it, and JSON has no line that
    reads ``JSON`` (newlines in strings are escaped), so it ends where it should.
    ``shared``: the tasks of an array write it side by side, so each writes its own
    copy and renames it into place (a reader sees one whole file or the other).
    """
    if not shared:
        return [
            f"# {comment}",
            f"cat > \"$ARTIFACTS\"/{name} <<'JSON'",
            json.dumps(data, indent=2),
            "JSON",
            "",
        ]
    return [
        f"# {comment}",
        f'cat > "$ARTIFACTS"/{name}."$TASK" <<\'JSON\'',
        json.dumps(data, indent=2),
        "JSON",
        f'mv -f "$ARTIFACTS"/{name}."$TASK" "$ARTIFACTS"/{name}',
        "",
    ]


def manifest_command(cli: str, stage: Stage, pins: list[str]) -> str:
    """The line that ends a stage: its manifest, with its outputs and inputs."""
    words = [
        f'{cli} pipeline manifest write "$ARTIFACTS"',
        f"--job {quote(stage.job)} --dataset {quote(stage.group)} --stage {quote(stage.name)}",
        *pins,
        f'--inputs "$ARTIFACTS"/{INPUTS_FILE}',
        '--slurm-job-id "${SLURM_JOB_ID:-}"',
    ]
    return " \\\n    ".join(words)


def stage_commands(stage: Stage, sleap_rtc: list[str], pinned: Manifest | None = None) -> list[str]:
    """The shell lines that run one stage (after ``ARTIFACTS`` is set).

    The stage's job runs from its spec (:func:`stage_spec`); the command line only
    names the folders it may use, and the batch size a probe chose. A training stage
    ends by writing its manifest; track uses the models trained earlier in this run,
    or those ``pinned`` by a manifest from outside it. A command stage runs its lines
    in its artifacts folder, with the job's folders in the environment.
    """
    cli = " ".join(quote(part) for part in sleap_rtc)
    if stage.kind == "command":
        return _command_lines(stage, cli, sleap_rtc)
    spec = stage_spec(stage, pinned)
    text = spec.model_dump(mode="json", exclude_none=True)
    spec_lines = json_lines(
        SPEC_FILE, text, "The job this stage runs; relative paths are relative to $ARTIFACTS."
    )
    run_spec = f'--spec "$ARTIFACTS"/{SPEC_FILE}'
    if isinstance(spec, TrainSpec):
        assert stage.config is not None
        inputs = [stage.config.parent, stage.data.labels.parent]
        if stage.data.val_labels is not None:
            inputs.append(stage.data.val_labels.parent)
        command = [
            f"{cli} local train",
            *mount_options(inputs),
            '--mount "$ARTIFACTS:artifacts"',
            '--models-dir "$ARTIFACTS"',
        ]
        if stage.optimize_batch_size:
            command.append(f'{option("train", "batch_size").flag} "${BATCH_SIZE_VAR}"')
        command += ['"${RESUME[@]}"', run_spec]
        train = [
            *spec_lines,
            *_resume_lines(),
            " \\\n    ".join(command),
            *_restore_best_lines(),
            "",
            manifest_command(cli, stage, [f"--model {MODEL_DIR}"]),
        ]
        return [*tune_lines(stage, cli), *train] if stage.optimize_batch_size else train
    command = [
        f"{cli} local track",
        *mount_options([stage.data.track[0].parent, *pinned_models(stage, pinned)]),
        f'--mount "${EXPERIMENT_ROOT_ENV}:experiments"',
        run_spec,
    ]
    return [
        *spec_lines,
        " \\\n    ".join(command),
        "",
        manifest_command(cli, stage, [f"--output {PREDICTIONS}"]),
    ]


def _resume_lines() -> list[str]:
    """A training stage run again for the same inputs (a requeue, a retry) goes on from
    its last checkpoint; for other inputs it starts over, keeping the old model aside."""
    model = f'"$ARTIFACTS"/{MODEL_DIR}'
    return [
        "# Same inputs and a checkpoint from an earlier attempt: go on from its last epoch,",
        "# in the same folder (sleap-nn picks another folder when it holds a best.ckpt, so",
        "# that one waits aside until training has ended).",
        "RESUME=()",
        f'if [ -f {model}/{LAST_CHECKPOINT} ] && cmp -s "$ARTIFACTS"/{NEXT_INPUTS} '
        f'"$ARTIFACTS"/{INPUTS_FILE}; then',
        f"    RESUME=({option('train', 'resume_ckpt_path').flag} {model}/{LAST_CHECKPOINT})",
        f'    echo "resuming from {model}/{LAST_CHECKPOINT}" >&2',
        f"    if [ -f {model}/best.ckpt ]; then mv {model}/best.ckpt {model}/{BEST_ASIDE}; fi",
        f"elif [ -e {model} ]; then",
        f"    rm -rf {model}.previous && mv {model} {model}.previous",
        "fi",
        f'mv "$ARTIFACTS"/{NEXT_INPUTS} "$ARTIFACTS"/{INPUTS_FILE}',
        "",
    ]


def _restore_best_lines() -> list[str]:
    """After a resumed training: the best checkpoint of the epochs before the resume comes
    back, unless a later epoch beat it."""
    model = f'"$ARTIFACTS"/{MODEL_DIR}'
    return [
        f"if [ -f {model}/{BEST_ASIDE} ]; then",
        f"    if [ -f {model}/best.ckpt ]; then rm {model}/{BEST_ASIDE}",
        f"    else mv {model}/{BEST_ASIDE} {model}/best.ckpt; fi",
        "fi",
    ]


def command_env(stage: Stage, sleap_rtc: list[str]) -> list[str]:
    """The environment a command stage's lines run in."""
    lines = []
    interpreter = Path(sleap_rtc[0])
    if interpreter.is_absolute():  # the tools sleap-rtc runs with (sleap-nn) come first
        lines.append(f'export PATH={quote(interpreter.parent)}:"$PATH"')
    lines += [
        "# What the command may use: this job's artifacts, and its dataset's files.",
        f"export SLEAP_RTC_JOB={quote(stage.job)}",
        f'export SLEAP_RTC_EXPERIMENT="${EXPERIMENT_ROOT_ENV}"/{quote(stage.job)}',
    ]
    if stage.dataset is not None:
        lines += [
            f"export SLEAP_RTC_DATASET={quote(stage.dataset.name)}",
            f"export SLEAP_RTC_LABELS={quote(stage.dataset.labels)}",
            # The file track runs on; several (an array), one per line.
            f"export SLEAP_RTC_TRACK_DATA={quote(chr(10).join(map(str, stage.dataset.track)))}",
        ]
    return lines


def _command_lines(stage: Stage, cli: str, sleap_rtc: list[str]) -> list[str]:
    return [
        *command_env(stage, sleap_rtc),
        'cd "$ARTIFACTS"',
        "# The stage's command (a failing line fails the job)",
        *stage.command,
        "",
        'cd "$ARTIFACTS"',
        manifest_command(cli, stage, [f"--output {quote(out)}" for out in stage.outputs]),
    ]


def render(
    stage: Stage,
    layout: Layout,
    sleap_rtc: list[str],
    inputs: dict[str, Any],
    pinned: Manifest | None = None,
    shape: ArrayShape | None = None,
) -> str:
    """The whole script for one stage, written for these ``inputs``; an array stage's
    (track over several files) spread over its tasks as ``shape`` says."""
    if stage.files and shape is None:
        raise ValueError(f"{stage.key} tracks {len(stage.files)} files: give its array shape")
    shape = shape if stage.files else None
    lines = ["#!/bin/bash", *sbatch_lines(stage, layout, shape), ""]
    where = stage.dataset.name if stage.dataset is not None else "the whole job"
    lines += [
        f"# {stage.job} / {where} / {stage.name}, written by `sleap-rtc pipeline`.",
        "# Edit freely: an edited script is kept while the job file writes the same one.",
        "set -euo pipefail",
        "",
    ]
    if stage.retries:
        lines += attempt_lines(stage)
    if stage.setup:
        # First: a set-up line may set the experiment root, and every path below follows.
        lines.append("# Environment set-up (a failing line fails the job)")
        lines += stage.setup
        lines.append("")
    root = EXPERIMENT_ROOT_ENV
    lines += [
        f'export {root}="${{{root}:-{layout.experiment_root}}}"',
        "# A relative root is relative to this folder (the --chdir), as when it was written.",
        f'{root}="$(realpath -m -- "${root}")"',
        f"ARTIFACTS={layout.artifacts(stage)}",
        'mkdir -p "$ARTIFACTS"',
    ]
    if shape is not None:
        lines += [
            "# Each task of the array has its own sleap-rtc state, beside its file's outputs.",
            'TASK="${SLURM_ARRAY_TASK_ID:-0}"',
            "",
        ]
        lines += json_lines(
            INPUTS_FILE,
            inputs,
            "What this stage's outputs are made from (each file's manifest keeps its part).",
            shared=True,
        )
        if pinned is not None:
            lines.append(
                f"# Pinned artifacts: {pinned.root} ({len(pinned.artifacts)} files, checked)"
            )
        from sleap_rtc.pipeline.array_scripts import array_lines  # it builds on this module

        lines += array_lines(stage, sleap_rtc, pinned, shape)
        return "\n".join(lines) + "\n"
    lines += [
        "# The stage's own sleap-rtc state (job store, logs), so stages can run side by side.",
        'export SLEAP_RTC_HOME="$ARTIFACTS/.sleap-rtc"',
        "",
    ]
    lines += json_lines(
        NEXT_INPUTS if stage.kind == "train" else INPUTS_FILE,
        inputs,
        "What this stage's outputs are made from (its manifest keeps it).",
    )
    if pinned is not None:
        lines.append(f"# Pinned artifacts: {pinned.root} ({len(pinned.artifacts)} files, checked)")
    lines += stage_commands(stage, sleap_rtc, pinned)
    return "\n".join(lines) + "\n"
