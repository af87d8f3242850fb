"""Writing a pipeline's scripts: every stage checked, its inputs keyed, its script kept
current.

:func:`generate` checks every pinned manifest and every stage
(:mod:`sleap_rtc.pipeline.checks`), works out each stage's inputs and their key
(:mod:`sleap_rtc.pipeline.inputs`, parents first), renders its script
(:mod:`sleap_rtc.pipeline.sbatch`) and decides what to do with the one on disk:

- none yet: it is written (``written``);
- the same text: kept as it is (``kept``);
- a different text, and the script is as sleap-rtc wrote it: written again, so a
  changed job file, config or labels file reaches the script (``rewritten``);
- edited by hand: kept while the job file still writes what it wrote before
  (``edited``); once it writes something else, that is a problem naming the
  script and what changed, for the person to settle (move it away, or carry the
  edits into the job file's ``setup`` or ``slurm``), and nothing is written.

Beside each script, ``.meta.json`` says what wrote it and for what: the job
file's spec, the resolved paths, the stage's inputs and key, the SHA-256 of the
script as written (how an edit is told), sleap-rtc's and sleap-nn's versions, the
command line, the git commit of the job file's folder and whether it had
changes, when. It is written with its script, so a kept script keeps its meta.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sleap_rtc import __version__
from sleap_rtc.engine.backends.slurm.tools import SlurmClient
from sleap_rtc.jobs.problems import JobRejected, Problem, ProblemCode
from sleap_rtc.pipeline.inputs import changes, file_inputs, file_role, inputs_key, stage_inputs
from sleap_rtc.pipeline.manifest import Manifest, read_manifest, verify_manifest
from sleap_rtc.pipeline.sbatch import (
    ArrayShape,
    Layout,
    gate_script,
    render,
    stage_job,
    trained_here,
)
from sleap_rtc.pipeline.spec import Pipeline, Stage

ScriptAction = Literal["written", "rewritten", "kept", "edited"]


@dataclass(frozen=True)
class Written:
    """One stage's script, and what :func:`generate` did with it."""

    stage: Stage
    script: Path
    meta: Path
    action: ScriptAction
    #: The stage's inputs now, and their key (:mod:`sleap_rtc.pipeline.inputs`).
    inputs: dict[str, Any]
    key: str
    #: For a rewritten script: what changed since it was written, in words.
    changed: list[str] = field(default_factory=list)
    #: An array stage's files over its tasks.
    shape: ArrayShape | None = None

    @property
    def gate(self) -> Path:
        """The script of the job standing for this stage's attempts (``retries``)."""
        return self.script.with_name(f"{self.stage.name}.attempts.sbatch")

    @property
    def created(self) -> bool:
        return self.action in ("written", "rewritten")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def stage_files(stage: Stage) -> dict[str, Path | None]:
    """The files a stage reads, by role (their identities are among its inputs)."""
    if stage.kind == "command" and stage.files:  # aftercorr: file by file, as track
        return {"labels": stage.data.labels, **{file_role(i): f for i, f in enumerate(stage.files)}}
    if stage.kind == "command":
        if stage.dataset is None:
            return {}
        data = [f for f in stage.dataset.track if f != stage.dataset.labels]
        roles = ["data"] if len(data) == 1 else [file_role(i) for i in range(len(data))]
        return {"labels": stage.dataset.labels, **dict(zip(roles, data, strict=True))}
    if stage.files:  # an array: each file's part of the inputs is its own (file_inputs)
        return {file_role(i): f for i, f in enumerate(stage.files)}
    if stage.kind == "track":
        return {"data": stage.data.track[0]}
    return {
        "config": stage.config,
        "labels": stage.data.labels,
        "val_labels": stage.data.val_labels,
    }


def keyed_inputs(
    pipeline: Pipeline, layout: Layout, pinned: dict[str, Manifest]
) -> dict[str, tuple[dict[str, Any], str]]:
    """Every stage's inputs and key, parents first (their keys are among the inputs)."""
    found: dict[str, tuple[dict[str, Any], str]] = {}
    stages = pipeline.by_key()
    for stage in pipeline.stages:
        manifest = pinned.get(stage.key)
        inputs = stage_inputs(
            stage_job(stage, manifest),
            stage_files(stage),
            manifest_path(stage, pipeline, layout) if manifest is not None else None,
            {parent: found[parent][1] for parent in stage.parents},
        )
        if stage.files and stage.kind == "command":
            # File by file after its parent's files: each file's inputs take that
            # file's key in the parent, so one changed file reruns one task here too.
            inputs["parent_files"] = {
                parent: [
                    inputs_key(file_inputs(found[parent][0], i)) for i in range(len(stage.files))
                ]
                for parent in stage.parents
                if stages[parent].files
            }
        found[stage.key] = (inputs, inputs_key(inputs))
    return found


def current_keys(pipeline: Pipeline, layout: Layout) -> dict[str, tuple[dict[str, Any], str]]:
    """Every stage's inputs and key, without checking anything (for ``status``): pinned
    manifests are read, not verified."""
    pinned = {}
    for stage in pipeline.stages:
        if stage.manifest is not None:
            manifest, _ = read_manifest(
                manifest_path(stage, pipeline, layout), "", layout.experiment_root
            )
            if manifest is not None:
                pinned[stage.key] = manifest
    return keyed_inputs(pipeline, layout, pinned)


def generate(
    pipeline: Pipeline,
    layout: Layout,
    *,
    sleap_rtc: list[str] | None = None,
    dry_run: bool = False,
    slurm: SlurmClient | None = None,
) -> list[Written]:
    """Check every stage, then bring every stage's script up to date (see the module's
    description); with ``dry_run``, only say what would be written. An array stage's
    tasks fit under ``slurm``'s MaxArraySize (asked only when there is one).

    JobRejected lists every problem at once: pinned manifests, stages, scripts edited
    by hand that the job file would now write differently. Nothing is written then.
    """
    from sleap_rtc.pipeline.checks import check_stages

    command = sleap_rtc or [sys.executable, "-m", "sleap_rtc"]
    pinned = check_manifests(pipeline, layout)
    check_stages(pipeline, pinned)
    keyed = keyed_inputs(pipeline, layout, pinned)
    problems: list[Problem] = []
    planned: list[tuple[Written, str, dict[str, Any] | None]] = []
    largest = None
    for stage in pipeline.stages:
        inputs, key = keyed[stage.key]
        shape = None
        if stage.files:
            if largest is None:
                largest = (slurm or SlurmClient()).max_array_size()
            shape = ArrayShape.fit(len(stage.files), largest)
        text = render(stage, layout, command, inputs, pinned.get(stage.key), shape)
        script, meta_file = layout.script(stage), layout.meta(stage)
        meta = _read_meta(meta_file)
        action, changed, problem = _decide(stage, script, text, meta, inputs)
        if problem is not None:
            problems.append(problem)
        item = Written(stage, script, meta_file, action, inputs, key, changed, shape)
        planned.append((item, text, meta))
    if problems:
        raise JobRejected(problems)
    if dry_run:
        return [item for item, _, _ in planned]
    made = provenance(pipeline.source.parent)
    for item, text, meta in planned:
        layout.log_folder(item.stage).mkdir(parents=True, exist_ok=True)
        if item.created:
            item.script.parent.mkdir(parents=True, exist_ok=True)
            partial = item.script.with_suffix(".sbatch.part")
            partial.write_text(text)
            partial.chmod(0o755)
            partial.replace(item.script)
        if item.stage.retries:  # ours alone, not for editing: always as the job file says
            item.gate.write_text(gate_script(item.stage, layout))
        if item.created or meta is None:
            info = _meta(item, pipeline, layout, made, _sha256(text))
            item.meta.write_text(json.dumps(info, indent=2) + "\n")
    return [item for item, _, _ in planned]


def _decide(
    stage: Stage,
    script: Path,
    text: str,
    meta: dict[str, Any] | None,
    inputs: dict[str, Any],
) -> tuple[ScriptAction, list[str], Problem | None]:
    """What to do with a stage's script: see the module's description."""
    try:
        on_disk = script.read_text(encoding="utf-8")
    except FileNotFoundError:
        return "written", [], None
    except (OSError, UnicodeDecodeError):
        on_disk = None
    if on_disk == text:
        return "kept", [], None
    written_sha = (meta or {}).get("script_sha256")
    changed = changes((meta or {}).get("inputs"), inputs) if meta else []
    if on_disk is not None and written_sha == _sha256(on_disk):
        return "rewritten", changed or ["the job file changed"], None
    if written_sha == _sha256(text):
        return "edited", [], None
    why = "; ".join(changed) if changed else "the job file changed"
    problem = Problem(
        field=f"{stage.key}: script",
        value=str(script),
        code=ProblemCode.CONFLICT,
        message=(
            f"{script} was edited by hand, and the job file now writes it differently "
            f"({why[:300]}); move it away to have it written again, or carry the edits "
            "into the job file (setup, slurm)"
        ),
    )
    return "edited", changed, problem


def _meta(
    item: Written, pipeline: Pipeline, layout: Layout, made: dict[str, object], sha: str
) -> dict[str, Any]:
    stage = item.stage
    dataset = stage.dataset
    return {
        "job": pipeline.name,
        "job_file": str(pipeline.source),
        "dataset": dataset.name if dataset is not None else None,
        "stage": stage.name,
        "kind": stage.kind,
        "after": list(stage.after),
        "parents": list(stage.parents),
        "dependency": stage.dependency,
        "spec": pipeline.spec,
        "paths": {
            "config": str(stage.config) if stage.config else None,
            "labels": str(dataset.labels) if dataset else None,
            "val_labels": str(dataset.val_labels) if dataset and dataset.val_labels else None,
            "track": [str(f) for f in dataset.track] if dataset else None,
            "script": str(item.script),
            "logs": str(layout.log_folder(stage)),
            "artifacts": str(layout.artifacts_dir(stage)),
            "experiment_root": str(layout.experiment_root),
        },
        "resources": stage.resources.model_dump(exclude_none=True),
        "manifest": str(manifest_path(stage, pipeline, layout)) if stage.manifest else None,
        "optimize_batch_size": stage.optimize_batch_size,
        "inputs_key": item.key,
        "inputs": item.inputs,
        "script_sha256": sha,
        **made,
        "written_at": time.time(),
        "script_action": item.action,
    }


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


def manifest_path(stage: Stage, pipeline: Pipeline, layout: Layout) -> Path:
    """A stage's ``dependency_manifests`` template, filled in; relative to the job file."""
    assert stage.manifest is not None
    filled = stage.manifest.format(dataset=stage.group, experiment_root=str(layout.experiment_root))
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
        where = f"dependency_manifests ({stage.key})"
        manifest, found = verify_manifest(path, where, layout.experiment_root)
        problems.extend(found)
        if manifest is None or found:
            continue
        if stage.kind == "track" and not trained_here(stage) and not manifest.models:
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
