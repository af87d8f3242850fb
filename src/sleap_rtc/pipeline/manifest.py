"""Manifests that pin a stage's artifacts: every file with its size and SHA-256.

A training stage that succeeds writes ``manifest.json`` in its artifacts folder
(the model folder's files, the SLURM job that made them, when, and the spec).
A stage that needs artifacts from outside its run names a manifest; before it
is submitted, every pinned file must exist with the same size and hash, or the
stage is refused naming the file and what differs.

A manifest's ``root`` is absolute, or starts with ``{experiment_root}`` so that it
moves with the experiment root: such a root is expanded when the manifest is read,
to the experiment root given, else the one in effect ($SLEAP_RTC_EXPERIMENT_ROOT,
else ``experiment_runs/`` in the current folder, as for a pipeline run from it). Any other
``{...}`` placeholder in ``root`` makes the manifest invalid.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sleap_rtc.jobs.digest import known_sha256, sha256_of
from sleap_rtc.jobs.problems import Problem, ProblemCode
from sleap_rtc.pipeline.inputs import inputs_key

#: Where the experiment root is when a run or a script is told (scripts read it when they run).
EXPERIMENT_ROOT_ENV = "SLEAP_RTC_EXPERIMENT_ROOT"
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
#: What a portable manifest's ``root`` starts with.
EXPERIMENT_ROOT = "{experiment_root}"
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


class Artifact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Relative to the manifest's ``root``.
    path: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = MANIFEST_VERSION
    job: str
    dataset: str
    stage: str
    #: The folder the artifact paths are relative to (the stage's artifacts folder):
    #: absolute, or ``{experiment_root}/...`` (expanded when the manifest is read).
    root: str
    #: Model folders in this manifest (relative to ``root``), for stages that track with them.
    models: list[str] = Field(default_factory=list)
    #: Other pinned files and folders (relative to ``root``), e.g. ``predictions.slp``.
    outputs: list[str] = Field(default_factory=list)
    artifacts: list[Artifact]
    slurm_job_id: str | None = None
    created_at: float
    spec: dict[str, Any] = Field(default_factory=dict)
    #: What the artifacts were made from, and the key over it
    #: (:mod:`sleap_rtc.pipeline.inputs`): a later run reruns the stage when it differs.
    inputs: dict[str, Any] | None = None
    inputs_key: str | None = None

    def model_paths(self) -> list[Path]:
        return [Path(self.root) / m for m in self.models]


def default_experiment_root(output_dir: Path = Path(".")) -> Path:
    """The experiment root in effect for a pipeline run from ``output_dir``:
    $SLEAP_RTC_EXPERIMENT_ROOT, else ``output_dir/experiment_runs``.

    A relative $SLEAP_RTC_EXPERIMENT_ROOT is relative to ``output_dir``, where the
    scripts run (their ``--chdir``), not to wherever the command was typed: the root
    a stage writes to is then the root its outputs are looked for in."""
    from_env = os.environ.get(EXPERIMENT_ROOT_ENV)
    base = output_dir.resolve()
    root = base / from_env if from_env else base / "experiment_runs"
    return root.resolve()


def portable_root(root: Path, experiment_root: Path) -> str | None:
    """``root`` as ``{experiment_root}/...``, or None when it is not under the experiment root."""
    root = root.resolve()
    base = experiment_root.resolve()
    if not root.is_relative_to(base):
        return None
    rest = root.relative_to(base).as_posix()
    return EXPERIMENT_ROOT if rest == "." else f"{EXPERIMENT_ROOT}/{rest}"


def expand_root(root: str, experiment_root: Path | None = None) -> Path:
    """A manifest's ``root`` as a path here; ValueError naming any placeholder it can't expand.

    A leading ``{experiment_root}`` becomes ``experiment_root`` (default: the one in effect).
    """
    rest: str | None = None
    if root == EXPERIMENT_ROOT or root.startswith(EXPERIMENT_ROOT + "/"):
        rest = root[len(EXPERIMENT_ROOT) :].lstrip("/")
    unknown = _PLACEHOLDER.findall(root if rest is None else rest)
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {', '.join(unknown)} in {root!r}; "
            f"only a leading {EXPERIMENT_ROOT} is expanded"
        )
    if rest is None:
        return Path(root)
    base = (experiment_root or default_experiment_root()).resolve()
    return base / rest if rest else base


def write_manifest(
    root: Path,
    *,
    job: str,
    dataset: str,
    stage: str,
    models: list[str],
    slurm_job_id: str | None = None,
    spec: dict[str, Any] | None = None,
    portable: bool = False,
    experiment_root: Path | None = None,
    outputs: list[str] | None = None,
    inputs: dict[str, Any] | None = None,
) -> Path:
    """Hash every file under ``root``'s model folders and ``outputs`` (files, or folders
    taken whole) and write ``root/manifest.json``, with the ``inputs`` they were made from.

    The manifest's root is ``root``'s absolute path; with ``portable``, it is
    ``{experiment_root}/...`` when ``root`` lies under the experiment root
    (``experiment_root``, default: the one in effect), so the manifest still checks
    out after the experiment root has moved.
    """
    root = root.resolve()
    written_root = str(root)
    if portable:
        base = experiment_root or default_experiment_root()
        written_root = portable_root(root, base) or written_root
    files: list[Path] = []
    for model in models:
        folder = root / model
        if not folder.is_dir():
            raise FileNotFoundError(f"no model folder {folder} to pin")
        files += sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    for output in outputs or []:
        path = (root / output).resolve()
        if not path.is_relative_to(root):
            raise FileNotFoundError(f"output {output} is outside {root}")
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no output {path} to pin (the stage should have written it)")
    artifacts = [
        Artifact(path=str(path.relative_to(root)), size=path.stat().st_size, sha256=sha256_of(path))
        for path in dict.fromkeys(files)
    ]
    manifest = Manifest(
        job=job,
        dataset=dataset,
        stage=stage,
        root=written_root,
        models=models,
        outputs=list(outputs or []),
        artifacts=artifacts,
        slurm_job_id=slurm_job_id or None,
        created_at=time.time(),
        spec=spec or {},
        inputs=inputs,
        inputs_key=inputs_key(inputs) if inputs is not None else None,
    )
    target = root / MANIFEST_NAME
    partial = target.with_suffix(".json.part")
    partial.write_text(manifest.model_dump_json(indent=2) + "\n")
    partial.replace(target)
    return target


def read_manifest(
    path: Path, field: str, experiment_root: Path | None = None
) -> tuple[Manifest | None, list[Problem]]:
    """Read a manifest, its ``root`` expanded (see :func:`expand_root`)."""

    def problem(code: ProblemCode, message: str) -> list[Problem]:
        return [Problem(field=field, value=str(path), code=code, message=message)]

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, problem(ProblemCode.PATH_NOT_FOUND, f"manifest not found: {path}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, problem(ProblemCode.CONFIG_INVALID, f"manifest {path} can't be read: {exc}")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return None, problem(
            ProblemCode.CONFIG_INVALID, f"manifest {path} is not valid ({where}: {first['msg']})"
        )
    try:
        root = expand_root(manifest.root, experiment_root)
    except ValueError as exc:
        return None, problem(
            ProblemCode.INVALID_VALUE, f"manifest {path} is not valid (root: {exc})"
        )
    return manifest.model_copy(update={"root": str(root)}), []


def verify_manifest(
    path: Path, field: str = "dependency_manifests", experiment_root: Path | None = None
) -> tuple[Manifest | None, list[Problem]]:
    """Read a manifest and check every pinned file; the problems name file and reason.

    A root starting with ``{experiment_root}`` is expanded to ``experiment_root``
    (default: the one in effect); the manifest returned has the expanded root.
    """
    manifest, problems = read_manifest(path, field, experiment_root)
    if manifest is None:
        return None, problems
    root = Path(manifest.root)
    for artifact in manifest.artifacts:
        file = root / artifact.path
        if not file.is_file():
            problems.append(
                Problem(
                    field=field,
                    value=str(file),
                    code=ProblemCode.PATH_NOT_FOUND,
                    message=f"pinned file missing: {file} (manifest {path})",
                )
            )
            continue
        size = file.stat().st_size
        if size != artifact.size:
            change = f"is {size} bytes, the manifest says {artifact.size}"
        else:
            digest = known_sha256(file)
            if digest == artifact.sha256:
                continue
            change = f"has sha256 {digest[:12]}…, the manifest says {artifact.sha256[:12]}…"
        problems.append(
            Problem(
                field=field,
                value=str(file),
                code=ProblemCode.CONFLICT,
                message=f"pinned file changed: {file} {change} (manifest {path})",
            )
        )
    for model in manifest.model_paths():
        if not model.is_dir():
            problems.append(
                Problem(
                    field=field,
                    value=str(model),
                    code=ProblemCode.PATH_NOT_FOUND,
                    message=f"model folder missing: {model} (manifest {path})",
                )
            )
    return manifest, problems
