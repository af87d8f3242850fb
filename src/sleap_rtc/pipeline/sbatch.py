"""SBATCH scripts for pipeline stages, written so a person can read and edit them.

Each stage of each dataset gets ``slurm_jobs/{job}_{dataset}_{stage}.sbatch`` and
a ``.meta.json`` beside it, written with it and kept with it (the job file's spec,
the resolved paths, sleap-rtc's and sleap-nn's versions, the command line, the git
commit of the job file's folder and whether it had changes, when it was written). A script holds its
resources as ``#SBATCH`` lines, the job file's set-up lines, and the commands
that run the stage with ``sleap-rtc local``: the stage's job is a spec (the
``extra_args`` of the job file are its fields), written by the script into the
artifacts folder and run with ``sleap-rtc local train|track --spec``. A script
fails on the first failing line (``set -euo pipefail``), set-up included. With
``optimize_batch_size``, a training stage first probes for the largest batch size
that fits in the GPU's memory (``sleap-rtc pipeline tune-batch-size``; without a
GPU it keeps the starting size) and trains with it. Artifacts go to
``$SLEAP_RTC_EXPERIMENT_ROOT/{job}/{dataset}/{stage}/``; the root defaults to
the one chosen when the script was written and the environment overrides it.
"""

from __future__ import annotations

import importlib.metadata
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sleap_rtc import __version__
from sleap_rtc.jobs.options import option
from sleap_rtc.jobs.pathmaps import as_pairs
from sleap_rtc.jobs.problems import JobRejected, Problem, ProblemCode
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.pipeline.manifest import (
    EXPERIMENT_ROOT_ENV,
    Manifest,
    default_experiment_root,
    verify_manifest,
)
from sleap_rtc.pipeline.spec import Pipeline, Stage

#: Inside a stage's artifacts folder: the trained model, tracking's output, the job's spec.
MODEL_DIR = "model"
PREDICTIONS = "predictions.slp"
SPEC_FILE = "spec.json"
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
        return self.experiment_root / stage.job / stage.dataset.name / stage.name

    def artifacts(self, stage: Stage) -> str:
        """The stage's artifacts folder as the script names it (honouring the env)."""
        return f'"${EXPERIMENT_ROOT_ENV}"/{_q(stage.job)}/{_q(stage.dataset.name)}/{_q(stage.name)}'


def _q(value: str | Path) -> str:
    return shlex.quote(str(value))


def sbatch_lines(stage: Stage, layout: Layout) -> list[str]:
    """The ``#SBATCH`` header for a stage."""
    lines = [
        f"--job-name={stage.key}",
        f"--output={layout.logs / stage.key}-%j.out",
        f"--chdir={layout.scripts.parent}",
        *stage.resources.directives(),
    ]
    return [f"#SBATCH {line}" for line in lines]


def _mounts(paths: list[Path]) -> list[str]:
    """``--mount`` options for the folders a stage reads or writes (labels m0, m1…)."""
    folders: list[Path] = []
    for path in paths:
        if not any(path == f or path.is_relative_to(f) for f in folders):
            folders = [f for f in folders if not f.is_relative_to(path)] + [path]
    return [f"--mount {_q(f'{folder}:m{i}')}" for i, folder in enumerate(folders)]


def tune_lines(stage: Stage, cli: str) -> list[str]:
    """Lines that set ``$BATCH_SIZE`` for a training stage from a short probe.

    The assignment stands on its own line, so under ``set -e`` a failing probe fails
    the job (``export X=$(...)`` or ``local X=$(...)`` would hide its exit status).
    """
    assert stage.config is not None
    probe = [
        f"{cli} pipeline tune-batch-size",
        f"--config {_q(stage.config)}",
        f"--labels {_q(stage.dataset.labels)}",
    ]
    if stage.dataset.val_labels is not None:
        probe.append(f"--val-labels {_q(stage.dataset.val_labels)}")
    if "batch_size" in stage.extra_args:
        probe.append(f"--start {_q(str(stage.extra_args['batch_size']))}")
    return [
        "# The largest batch size that fits in the GPU's memory, from a few short trial runs",
        "# (without a GPU, the starting size); a failing probe fails the job.",
        f"{BATCH_SIZE_VAR}=$(" + " \\\n    ".join(probe) + ")",
        "",
    ]


def _pinned_models(stage: Stage, pinned: Manifest | None) -> list[Path]:
    """Pinned models join those trained in this run, unless this run trains their stage."""
    if pinned is None or pinned.stage in stage.after:
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
    maps = [*(as_pairs(args.pop("path_map", None)) or []), *stage.dataset.path_map]
    if maps:
        args["path_map"] = maps
    if stage.name != "track":
        assert stage.config is not None
        if stage.optimize_batch_size:
            args.pop("batch_size", None)
        val = stage.dataset.val_labels
        return TrainSpec(
            config_paths=[str(stage.config)],
            labels_path=str(stage.dataset.labels),
            val_labels_path=str(val) if val is not None else None,
            run_name=MODEL_DIR,
            **args,
        )
    models = [f"../{parent}/{MODEL_DIR}" for parent in stage.after]
    models += [str(model) for model in _pinned_models(stage, pinned)]
    return TrackSpec(
        data_path=str(stage.dataset.track),
        model_paths=models,
        output_path=PREDICTIONS,
        overwrite=True,
        **args,
    )


def _spec_lines(spec: TrainSpec | TrackSpec) -> list[str]:
    """Lines that write the stage's spec into its artifacts folder, as written here.

    A quoted here-document: the shell expands nothing in it, and JSON has no line that
    reads ``SPEC`` (newlines in strings are escaped), so it ends where it should.
    """
    text = json.dumps(spec.model_dump(mode="json", exclude_none=True), indent=2)
    return [
        "# The job this stage runs; relative paths are relative to $ARTIFACTS.",
        f"cat > \"$ARTIFACTS\"/{SPEC_FILE} <<'SPEC'",
        text,
        "SPEC",
        "",
    ]


def stage_commands(stage: Stage, sleap_rtc: list[str], pinned: Manifest | None = None) -> list[str]:
    """The shell lines that run one stage (after ``ARTIFACTS`` is set).

    The stage's job runs from its spec (:func:`stage_spec`); the command line only
    names the folders it may use, and the batch size a probe chose. A training stage
    ends by writing its manifest; track uses the models trained earlier in this run,
    or those ``pinned`` by a manifest from outside it.
    """
    cli = " ".join(_q(part) for part in sleap_rtc)
    spec = stage_spec(stage, pinned)
    run_spec = f'--spec "$ARTIFACTS"/{SPEC_FILE}'
    if isinstance(spec, TrainSpec):
        assert stage.config is not None
        inputs = [stage.config.parent, stage.dataset.labels.parent]
        if stage.dataset.val_labels is not None:
            inputs.append(stage.dataset.val_labels.parent)
        command = [
            f"{cli} local train",
            *_mounts(inputs),
            '--mount "$ARTIFACTS:artifacts"',
            '--models-dir "$ARTIFACTS"',
        ]
        if stage.optimize_batch_size:
            command.append(f'{option("train", "batch_size").flag} "${BATCH_SIZE_VAR}"')
        command.append(run_spec)
        manifest = [
            f'{cli} pipeline manifest write "$ARTIFACTS"',
            f"--job {_q(stage.job)} --dataset {_q(stage.dataset.name)} --stage {_q(stage.name)}",
            f"--model {MODEL_DIR}",
            '--slurm-job-id "${SLURM_JOB_ID:-}"',
        ]
        train = [*_spec_lines(spec), " \\\n    ".join(command), "", " \\\n    ".join(manifest)]
        return [*tune_lines(stage, cli), *train] if stage.optimize_batch_size else train
    command = [
        f"{cli} local track",
        *_mounts([stage.dataset.track.parent, *_pinned_models(stage, pinned)]),
        f'--mount "${EXPERIMENT_ROOT_ENV}:experiments"',
        run_spec,
    ]
    return [*_spec_lines(spec), " \\\n    ".join(command)]


def render(
    stage: Stage, layout: Layout, sleap_rtc: list[str], pinned: Manifest | None = None
) -> str:
    """The whole script for one stage."""
    lines = ["#!/bin/bash", *sbatch_lines(stage, layout), ""]
    lines += [
        f"# {stage.job} / {stage.dataset.name} / {stage.name}, written by `sleap-rtc pipeline`.",
        "# Edit freely: an existing script is submitted as it is, not written again.",
        "set -euo pipefail",
        "",
    ]
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
        "# The stage's own sleap-rtc state (job store, logs), so stages can run side by side.",
        'export SLEAP_RTC_HOME="$ARTIFACTS/.sleap-rtc"',
        "",
    ]
    if pinned is not None:
        lines.append(f"# Pinned artifacts: {pinned.root} ({len(pinned.artifacts)} files, checked)")
    lines += stage_commands(stage, sleap_rtc, pinned)
    return "\n".join(lines) + "\n"


def _git(folder: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit(folder: Path) -> str | None:
    """The commit checked out in ``folder``'s repository, if it is in one."""
    return _git(folder, "rev-parse", "HEAD")


def provenance(folder: Path) -> dict[str, object]:
    """What wrote a script: the versions, the command line, and the git state of the
    job file's folder (``git_dirty``: it had changes not committed)."""
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return {
        "sleap_rtc_version": __version__,
        "sleap_nn_version": _version_of("sleap-nn"),
        "command_line": shlex.join(sys.argv),
        "git_commit": git_commit(folder),
        "git_dirty": None if status is None else bool(status),
    }


def _version_of(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Written:
    stage: Stage
    script: Path
    meta: Path
    #: False when the script was already there (and is kept as it is).
    created: bool


def generate(
    pipeline: Pipeline, layout: Layout, *, sleap_rtc: list[str] | None = None
) -> list[Written]:
    """Check every stage (:mod:`sleap_rtc.pipeline.checks`), then write the scripts of
    every stage that has none yet, each with its meta file.

    A script that is there already is kept as it is, and so is its meta file: it
    describes the job the script was written for (a meta file that is missing is
    written, marked ``script_kept``)."""
    from sleap_rtc.pipeline.checks import check_stages

    command = sleap_rtc or [sys.executable, "-m", "sleap_rtc"]
    pinned = check_manifests(pipeline, layout)
    check_stages(pipeline, pinned)
    layout.scripts.mkdir(parents=True, exist_ok=True)
    layout.logs.mkdir(parents=True, exist_ok=True)
    made = provenance(pipeline.source.parent)
    written = []
    for stage in pipeline.stages:
        script = layout.scripts / f"{stage.key}.sbatch"
        meta = layout.scripts / f"{stage.key}.meta.json"
        created = not script.exists()
        if not created and meta.exists():
            written.append(Written(stage, script, meta, created))
            continue
        if created:
            text = render(stage, layout, command, pinned.get(stage.key))
            partial = script.with_suffix(".sbatch.part")
            partial.write_text(text)
            partial.chmod(0o755)
            partial.replace(script)
        info = {
            "job": pipeline.name,
            "job_file": str(pipeline.source),
            "dataset": stage.dataset.name,
            "stage": stage.name,
            "after": list(stage.after),
            "spec": pipeline.spec,
            "paths": {
                "config": str(stage.config) if stage.config else None,
                "labels": str(stage.dataset.labels),
                "val_labels": str(stage.dataset.val_labels) if stage.dataset.val_labels else None,
                "track": str(stage.dataset.track),
                "script": str(script),
                "logs": str(layout.logs),
                "experiment_root": str(layout.experiment_root),
            },
            "resources": stage.resources.model_dump(exclude_none=True),
            "manifest": str(manifest_path(stage, pipeline, layout)) if stage.manifest else None,
            "optimize_batch_size": stage.optimize_batch_size,
            **made,
            "written_at": time.time(),
            "script_kept": not created,
        }
        meta.write_text(json.dumps(info, indent=2) + "\n")
        written.append(Written(stage, script, meta, created))
    return written


def manifest_path(stage: Stage, pipeline: Pipeline, layout: Layout) -> Path:
    """A stage's ``dependency_manifests`` template, filled in; relative to the job file."""
    assert stage.manifest is not None
    filled = stage.manifest.format(
        dataset=stage.dataset.name, experiment_root=str(layout.experiment_root)
    )
    path = Path(filled).expanduser()
    return path if path.is_absolute() else pipeline.source.parent / path


def check_manifests(pipeline: Pipeline, layout: Layout) -> dict[str, Manifest]:
    """Verify every stage's pinned artifacts; JobRejected naming each file that fails.

    A track stage without models from this run takes its models from the manifest,
    which must then name some. A manifest whose root starts with ``{experiment_root}``
    is read with this layout's experiment root.
    """
    problems: list[Problem] = []
    pinned: dict[str, Manifest] = {}
    for stage in pipeline.stages:
        if stage.manifest is None:
            continue
        path = manifest_path(stage, pipeline, layout)
        where = f"dependency_manifests ({stage.dataset.name}/{stage.name})"
        manifest, found = verify_manifest(path, where, layout.experiment_root)
        problems.extend(found)
        if manifest is None or found:
            continue
        if stage.name == "track" and not stage.after and not manifest.models:
            problems.append(
                Problem(
                    field=where,
                    value=str(path),
                    code=ProblemCode.MISSING_FIELD,
                    message=f"manifest {path} names no model folders for track to use",
                )
            )
            continue
        pinned[stage.key] = manifest
    if problems:
        raise JobRejected(problems)
    return pinned
