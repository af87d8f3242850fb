"""Path rules: a path a peer names is resolved inside the mounts, then checked.

Each rule appends a :class:`~sleap_rtc.jobs.problems.Problem` (naming the field, the
path as written, a code and what to do) and returns the resolved path, or None; the
caller goes on, so one rejection lists every problem. Checkpoints get one rule more:
they can hold code, so they load only from mounts the worker trusts.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from pathlib import Path
from typing import Literal

from sleap_rtc.jobs.mounts import Mounts
from sleap_rtc.jobs.problems import Problem, ProblemCode
from sleap_rtc.jobs.specs import TrackSpec

DATA_SUFFIXES = (".slp", ".mp4", ".avi", ".mov", ".mkv", ".h5", ".hdf5")
#: A trained model folder as sleap-nn loads it: its config and its best weights, in
#: sleap-nn's layout (training_config.yaml + best.ckpt) or SLEAP ≤1.4's
#: (training_config.json + best_model.h5).
MODEL_CONFIG_NAMES = ("training_config.yaml", "training_config.json")
MODEL_WEIGHT_NAMES = ("best.ckpt", "best_model.h5")
MODEL_LAYOUTS = (
    "training_config.yaml and best.ckpt (sleap-nn), or training_config.json and "
    "best_model.h5 (SLEAP 1.4 and earlier)"
)
#: Files sleap-nn loads as weights (``torch.load`` or Keras HDF5).
CHECKPOINT_SUFFIXES = (".ckpt", ".h5")


def existing(
    mounts: Mounts,
    name: str,
    raw: str,
    problems: list[Problem],
    *,
    want: str,
    base: Path | None = None,
) -> Path | None:
    """Resolve ``raw`` inside the mounts and check it exists as a file or folder."""
    real, problem = mounts.resolve(name, raw, base=base)
    if problem:
        problems.append(problem)
        return None
    assert real is not None
    if not real.exists():
        problems.append(
            Problem(
                field=name,
                value=raw,
                code=ProblemCode.PATH_NOT_FOUND,
                message=f"Path not found: {raw}",
            )
        )
        return None
    if want == "file" and not real.is_file():
        problems.append(
            Problem(
                field=name,
                value=raw,
                code=ProblemCode.NOT_A_FILE,
                message=f"{raw} is a folder; a file is expected here",
            )
        )
        return None
    if want == "dir" and not real.is_dir():
        problems.append(
            Problem(
                field=name,
                value=raw,
                code=ProblemCode.NOT_A_DIRECTORY,
                message=f"{raw} is a file; a folder is expected here",
            )
        )
        return None
    if not os.access(real, os.R_OK):
        problems.append(
            Problem(
                field=name,
                value=raw,
                code=ProblemCode.NOT_READABLE,
                message=f"{raw} exists but the worker may not read it",
            )
        )
        return None
    return real


def checkpoint(
    mounts: Mounts,
    name: str,
    raw: str,
    problems: list[Problem],
    *,
    base: Path | None = None,
    suffixes: tuple[str, ...] = CHECKPOINT_SUFFIXES,
) -> Path | None:
    """A weights file sleap-nn will load: inside the mounts, of a known kind, trusted."""
    real = existing(mounts, name, raw, problems, want="file", base=base)
    if real is None:
        return None
    if real.suffix.lower() not in suffixes:
        problems.append(
            Problem(
                field=name,
                value=raw,
                code=ProblemCode.WRONG_FILE_TYPE,
                message=f"{raw} is not a checkpoint ({', '.join(suffixes)})",
            )
        )
        return None
    return real if trusted(mounts, name, raw, real, problems) else None


def trusted(mounts: Mounts, name: str, raw: str, real: Path, problems: list[Problem]) -> bool:
    """False (and a problem) when ``real`` lies in a mount weights may not load from."""
    mount = mounts.containing(real)
    if mount is not None and not mount.trusted:
        problems.append(
            Problem(
                field=name,
                value=raw,
                code=ProblemCode.ACCESS_DENIED,
                message=(
                    f"{raw} is in the '{mount.label}' folder, and checkpoints (which can hold "
                    "code) load from there only on a sandboxed worker; put the model in "
                    "another mount or ask the administrator to enable the sandbox"
                ),
            )
        )
        return False
    return True


def model_folder(path: Path) -> Path:
    """The model folder a path names: a folder itself, or the folder of its config or
    weights file (sleap-nn takes ``.../best.ckpt`` for its folder too)."""
    if path.is_file() and path.name in (*MODEL_CONFIG_NAMES, *MODEL_WEIGHT_NAMES):
        return path.parent
    return path


#: What sleap-nn writes into a run's folder when training starts, before any weights.
RUN_START_NAMES = ("initial_config.yaml",)

ModelState = Literal["complete", "incomplete"]


def model_state(files: Collection[str]) -> ModelState | None:
    """What a folder holding the files named ``files`` is: ``complete``, a model sleap-nn
    can load (its config and its best weights); ``incomplete``, a training run's folder
    without best weights (training was cancelled or failed before a best model was
    saved); None, not a model folder at all."""
    has_config = any(name in files for name in MODEL_CONFIG_NAMES)
    if has_config and any(name in files for name in MODEL_WEIGHT_NAMES):
        return "complete"
    if has_config or any(name in files for name in RUN_START_NAMES):
        return "incomplete"
    return None


def model_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a model sleap-nn can load (None when it is; the rule is
    :func:`model_state`'s)."""
    names = (*MODEL_CONFIG_NAMES, *MODEL_WEIGHT_NAMES, *RUN_START_NAMES)
    state = model_state([name for name in names if (folder / name).is_file()])
    if state == "complete":
        return None
    others = sorted(p.name for p in folder.glob("*.ckpt"))
    if state == "incomplete" and others:
        return (
            f"it holds {', '.join(others[:3])} but no best.ckpt, the checkpoint sleap-nn "
            "loads (did training end before a best model was saved?)"
        )
    if state == "incomplete":
        return (
            "it is a training run's folder without best.ckpt: training was cancelled or "
            "failed before a best model was saved; name a model whose training completed"
        )
    return f"it is not a trained model folder (expected {MODEL_LAYOUTS})"


#: How an Analysis HDF5 file's name ends (sleap-nn names it after the .slp output).
ANALYSIS_SUFFIX = ".analysis.h5"


def analysis_h5_path(path: Path) -> Path:
    """The Analysis HDF5 file sleap-nn writes for the output ``path`` of one video, as
    sleap-nn names it: ``x.slp`` and ``x.predictions.slp`` give ``x.analysis.h5``; a
    name that already ends in ``.analysis.h5`` is kept."""
    name = path.name
    if name.endswith(ANALYSIS_SUFFIX):
        return path
    for suffix in (".predictions.slp", ".slp"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ANALYSIS_SUFFIX)
    return path.with_name(path.stem + ANALYSIS_SUFFIX)


def analysis_h5_argument(h5: Path) -> Path:
    """The ``--output_path`` that makes sleap-nn write the Analysis HDF5 file ``h5``
    (it strips ``.predictions.slp`` and adds ``.analysis.h5``; no .slp is written)."""
    return h5.with_name(h5.name[: -len(ANALYSIS_SUFFIX)] + ".predictions.slp")


def plan_output(
    spec: TrackSpec, mounts: Mounts, data: Path | None, problems: list[Problem]
) -> Path | None:
    """Where tracking writes: a new .slp (or one ``overwrite`` allows) of its own, in a
    folder that exists and the worker may write; a relative name lands beside the data.

    With ``output_format`` analysis_h5 the file written, and so checked and returned, is
    the Analysis HDF5 file :func:`analysis_h5_path` names (``output_path`` may end in
    .slp or .analysis.h5); no .slp is written then."""
    raw = spec.output_path
    relative = isinstance(raw, str) and raw.strip() != "" and not raw.startswith(("/", "~"))
    if relative and data is None:
        return None  # resolved against data_path's folder, which is already reported
    real, problem = mounts.resolve(
        "output_path", raw, base=data.parent if relative and data else None, for_writing=True
    )
    if problem:
        problems.append(problem)
        return None
    assert real is not None
    h5 = spec.output_format == "analysis_h5"
    if h5 and (real.suffix.lower() == ".slp" or real.name.endswith(ANALYSIS_SUFFIX)):
        real = analysis_h5_path(real)
    elif real.suffix.lower() != ".slp":
        problems.append(
            Problem(
                field="output_path",
                value=raw,
                code=ProblemCode.WRONG_FILE_TYPE,
                message=f"output_path {raw} must end in "
                + (".slp or .analysis.h5 (output_format analysis_h5)" if h5 else ".slp"),
            )
        )
        return None
    if not real.parent.is_dir():
        problems.append(
            Problem(
                field="output_path",
                value=raw,
                code=ProblemCode.PATH_NOT_FOUND,
                message=f"Path not found: {real.parent} (the folder for output_path must exist)",
            )
        )
        return None
    if real.is_dir():
        problems.append(
            Problem(
                field="output_path",
                value=raw,
                code=ProblemCode.NOT_A_FILE,
                message=f"output_path {raw} is a folder; name a .slp file",
            )
        )
        return None
    if real.exists() and not spec.overwrite:
        problems.append(
            Problem(
                field="output_path",
                value=raw,
                code=ProblemCode.OUTPUT_EXISTS,
                message=(
                    f"{real} already exists; choose another output name or allow "
                    "overwriting (--overwrite)"
                ),
            )
        )
        return None
    named = os.path.join(data.parent, raw) if relative and data else raw
    if h5:
        named = str(analysis_h5_path(Path(named)))
    if real.exists() or os.path.lexists(real) or os.path.lexists(named):
        try:
            info = os.lstat(real)
        except OSError:
            info = None
        linked = os.path.islink(named)
        if linked or info is None or not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            problems.append(
                Problem(
                    field="output_path",
                    value=raw,
                    code=ProblemCode.INVALID_PATH,
                    message=(
                        f"output_path {raw} exists and is not a plain file of its own (a "
                        "link, a pipe or a file with other names); choose a new file name"
                    ),
                )
            )
            return None
    if data is not None and real == data:
        problems.append(
            Problem(
                field="output_path",
                value=raw,
                code=ProblemCode.CONFLICT,
                message="output_path is the input data_path; predictions go to a new file",
            )
        )
        return None
    if not os.access(real.parent, os.W_OK):
        problems.append(
            Problem(
                field="output_path",
                value=raw,
                code=ProblemCode.READ_ONLY,
                message=f"the worker may not write in {real.parent}",
            )
        )
        return None
    return real
