"""Plans → ``sleap-nn`` argument lists and the effective configs they run.

Commands are always argv lists, never shell strings. Training runs an *effective
config* the worker writes into the job's folder: the user's config with every key
that names a path replaced by its checked, resolved value or set by the worker
(:mod:`sleap_rtc.jobs.config_keys`), so sleap-nn never reads the user's file, which
could change after it was checked. The few values chosen at run time (ZMQ ports)
are Hydra ``++key=value`` overrides; values that reach sleap-nn as overrides are
quoted with :func:`hydra_quote`, so a path with spaces, commas, ``=``, quotes or
``${`` arrives byte for byte.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from sleap_rtc.engine.backend import EngineJob, Step
from sleap_rtc.jobs.config_keys import set_key
from sleap_rtc.jobs.events import NOTE_PREFIX
from sleap_rtc.jobs.frames import sleap_nn_frames_arg
from sleap_rtc.jobs.labels import write_remapped
from sleap_rtc.jobs.options import options_for
from sleap_rtc.jobs.paths import analysis_h5_argument
from sleap_rtc.jobs.specs import TrackSpec
from sleap_rtc.jobs.validation import ConfigPlan, TrackPlan, TrainPlan


def hydra_quote(value: str) -> str:
    """Quote ``value`` as a single-quoted Hydra override string.

    Hydra treats a backslash as an escape only before a quote or at the end of
    the string, and OmegaConf resolves ``${...}`` even inside quotes; both are
    escaped here so the value is taken literally.
    """
    text = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)
    text = text.replace("'", "\\'")
    text = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", text)
    return f"'{text}'"


def override(key: str, value: str | int | float | bool | None) -> str:
    if value is None:
        rendered = "null"
    elif isinstance(value, bool):
        rendered = "true" if value else "false"
    elif isinstance(value, int | float):
        rendered = repr(value)
    else:
        rendered = hydra_quote(value)
    return f"++{key}={rendered}"


def list_override(key: str, paths: Iterable[Path]) -> str:
    return f"++{key}=[{','.join(hydra_quote(str(p)) for p in paths)}]"


def zmq_overrides(publish_port: int, controller_port: int | None) -> list[str]:
    """Overrides that make sleap-nn publish progress and (optionally) obey a stop command."""
    overrides = [f"++trainer_config.zmq.publish_port={publish_port}"]
    if controller_port is not None:
        overrides.append(f"++trainer_config.zmq.controller_port={controller_port}")
    return overrides


def default_sleap_nn_command() -> list[str]:
    """The ``sleap-nn`` executable next to this interpreter, else the one on PATH."""
    beside = Path(sys.executable).with_name("sleap-nn")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("sleap-nn")
    return [found] if found else ["sleap-nn"]


def _run_names(plan: TrainPlan, job_id: str) -> list[str]:
    spec = plan.spec
    short = job_id.replace("-", "")[:8]
    if spec.run_name and len(plan.configs) == 1:
        return [spec.run_name]
    if spec.run_name:
        return [f"{spec.run_name}-{c.stem}" for c in plan.configs]
    return [f"{c.stem}-{short}" for c in plan.configs]


def unique_folder(parent: Path, name: str, taken: set[str] | None = None) -> str:
    """``name``, or ``name-2``, ``name-3``… so that ``parent/name`` doesn't exist yet.

    sleap-nn itself renames a run whose folder exists (to ``name-1``), which would
    leave the worker pointing at the wrong folder; choosing first avoids that.
    """
    taken = taken or set()
    candidate, n = name, 1
    while os.path.lexists(parent / candidate) or candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def run_name_note(wanted: str, chosen: str) -> str:
    """The log's note for a run that could not have the name asked for."""
    return f"{NOTE_PREFIX}run name {wanted} is taken; this run is {chosen}"


def _literal(value: Any) -> Any:
    """A value OmegaConf will read back unchanged (``${`` is escaped)."""
    if isinstance(value, str):
        return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)
    if isinstance(value, list):
        return [_literal(v) for v in value]
    return value


def file_label(name: str, fallback: str) -> str:
    """A readable part of a user's file name for a file the worker names itself."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64].lstrip(".") or fallback


def labels_copies(
    video_maps: dict[Path, dict[str, str]], work_dir: Path | None
) -> dict[Path, Path]:
    """Each labels file whose videos are read at other paths → the copy sleap-nn reads.

    The copies (:func:`~sleap_rtc.jobs.labels.write_remapped`) are written into
    ``work_dir/labels/``; without ``work_dir`` (a dry run) they are only named.
    """
    folder = (work_dir or Path("<work>")) / "labels"
    copies: dict[Path, Path] = {}
    for number, (source, remap) in enumerate(sorted(video_maps.items()), 1):
        label = file_label(source.name, "labels.slp")
        dest = folder / f"{number}-{label}"
        if not dest.name.endswith(".slp"):
            dest = dest.with_name(dest.name + ".slp")
        if work_dir is not None:
            write_remapped(source, remap, dest)
        copies[source] = dest
    return copies


def effective_config(
    plan: TrainPlan,
    config: ConfigPlan,
    *,
    run_name: str,
    models_dir: Path,
    cache_dir: Path | None,
    device: str = "auto",
    copies: dict[Path, Path] | None = None,
) -> dict[str, Any]:
    """The config sleap-nn runs: the user's, with every path key checked or set here.

    Label and checkpoint paths are the resolved ones validation checked (a labels file
    whose videos were mapped is replaced by its copy in ``copies``); output folders,
    caches, ports and logging are the worker's. Nothing in it is interpolated by OmegaConf.
    """
    spec = plan.spec
    copies = copies or {}
    data = copy.deepcopy(config.data)
    for key, value in config.paths.items():
        set_key(data, key, value)
    labels = [plan.labels_path] if plan.labels_path else config.train_labels
    set_key(data, "data_config.train_labels_path", [str(copies.get(p, p)) for p in labels] or None)
    val = [plan.val_labels_path] if plan.val_labels_path else config.val_labels
    set_key(data, "data_config.val_labels_path", [str(copies.get(p, p)) for p in val] or None)
    set_key(data, "data_config.cache_img_path", str(cache_dir) if cache_dir else None)
    set_key(data, "trainer_config.ckpt_dir", str(models_dir))
    set_key(data, "trainer_config.run_name", run_name)
    set_key(data, "trainer_config.save_ckpt", True)
    set_key(data, "trainer_config.enable_progress_bar", False)
    set_key(data, "trainer_config.use_wandb", spec.wandb)
    if spec.wandb:
        # Offline only: a key to an online account would reach every job on the worker.
        set_key(data, "trainer_config.wandb.wandb_mode", "offline")
        set_key(data, "trainer_config.wandb.api_key", None)
        set_key(data, "trainer_config.wandb.delete_local_logs", False)
        set_key(data, "trainer_config.wandb.name", run_name)
    set_key(data, "trainer_config.zmq.publish_port", None)
    set_key(data, "trainer_config.zmq.controller_port", None)
    data["filename"] = ""
    if spec.max_epochs is not None:
        set_key(data, "trainer_config.max_epochs", spec.max_epochs)
    if spec.batch_size is not None:
        set_key(data, "trainer_config.train_data_loader.batch_size", spec.batch_size)
        set_key(data, "trainer_config.val_data_loader.batch_size", spec.batch_size)
    if spec.learning_rate is not None:
        set_key(data, "trainer_config.optimizer.lr", spec.learning_rate)
    if plan.resume_ckpt_path is not None:
        set_key(data, "trainer_config.resume_ckpt_path", str(plan.resume_ckpt_path))
    for key, value in trainer_device_keys(device, spec.gpus).items():
        set_key(data, key, value)
    return {key: _literal_tree(value) for key, value in data.items()}


def trainer_device_keys(device: str, gpus: int | None = None) -> dict[str, Any]:
    """The sleap-nn trainer keys that make training run on the worker's ``device``.

    sleap-nn's accelerator is Lightning's (``cpu``, ``gpu``, ``mps``, ``auto``): a torch
    device name such as ``cuda:1`` there is replaced by ``auto`` (any GPU). So ``cuda``
    becomes ``gpu``, and ``cuda:N`` becomes ``gpu`` on device index N. ``auto`` leaves
    the config's own choice. ``gpus`` (a job's ``--gpus``, already checked against the
    worker) asks for that many GPUs.
    """
    keys: dict[str, Any] = {}
    if device == "cuda" or device.startswith("cuda:") or gpus is not None:
        keys["trainer_config.trainer_accelerator"] = "gpu"
    elif device != "auto":
        keys["trainer_config.trainer_accelerator"] = device
    if device.startswith("cuda:"):
        keys["trainer_config.trainer_device_indices"] = [int(device.split(":", 1)[1])]
        keys["trainer_config.trainer_devices"] = None
    elif gpus is not None:
        keys["trainer_config.trainer_devices"] = gpus
        keys["trainer_config.trainer_device_indices"] = None
    return keys


def _literal_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _literal_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal_tree(v) for v in value]
    return _literal(value)


def build_train_job(
    plan: TrainPlan,
    *,
    job_id: str,
    models_dir: Path,
    work_dir: Path | None = None,
    sleap_nn: list[str] | None = None,
    device: str = "auto",
    reserved: set[str] | None = None,
    stop_early: bool = True,
) -> EngineJob:
    """One ``sleap-nn train`` step per config, in order, each in its own run folder.

    Each step's effective config (:func:`effective_config`) is written to
    ``work_dir/configs/`` and is all sleap-nn reads besides the files it names; without
    ``work_dir`` (a dry run) nothing is written and the steps name where it would go.
    ``reserved`` holds run names other live jobs are about to create; the chosen names
    are added to it.
    """
    command = sleap_nn or default_sleap_nn_command()
    spec = plan.spec
    reserved = reserved if reserved is not None else set()
    configs_dir = (work_dir or Path("<work>")) / "configs"
    copies = labels_copies(plan.video_maps, work_dir)
    steps: list[Step] = []
    for index, (config, wanted) in enumerate(
        zip(plan.configs, _run_names(plan, job_id), strict=True)
    ):
        resumed = plan.resume_ckpt_path
        own = (models_dir / wanted).resolve()
        if resumed is not None and resumed.resolve().is_relative_to(own):
            run_name = wanted  # a resumed run goes on in its own folder
        else:
            run_name = unique_folder(models_dir, wanted, reserved)
        reserved.add(run_name)
        # A run never replaces a model; a taken name gets a suffix, said in the log.
        notes = (run_name_note(wanted, run_name),) if run_name != wanted else ()
        effective = effective_config(
            plan,
            config,
            run_name=run_name,
            models_dir=models_dir,
            cache_dir=work_dir / "cache" / str(index + 1) if work_dir else None,
            device=device,
            copies=copies,
        )
        # The worker's own file name: a number, and a readable part of the config's name.
        label = file_label(config.stem, "config")
        path = configs_dir / f"{index + 1}-{label}.yaml"
        if work_dir is not None:
            configs_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(effective, sort_keys=False), encoding="utf-8")
        steps.append(
            Step(
                name=config.stem,
                kind="train",
                argv=[*command, "train", "--config", str(path)],
                index=index + 1,
                total=len(plan.configs),
                total_epochs=spec.max_epochs or config.max_epochs,
                output=models_dir / run_name,
                config=effective,
                notes=notes,
            )
        )
    return EngineJob(job_id=job_id, kind="train", steps=steps, stop_early=stop_early)


def track_option_args(spec: TrackSpec) -> list[str]:
    """sleap-nn's flags for the set track options the table passes through
    (:attr:`~sleap_rtc.jobs.options.JobOption.sleap_nn`; sleap-nn's names are the fields')."""
    args: list[str] = []
    for option in options_for("track"):
        name = option.field
        value = getattr(spec, name)
        if not option.sleap_nn:
            continue
        if value is None or value is False:
            continue
        if value is True:
            args.append(f"--{name}")
        else:
            args += [f"--{name}", repr(value) if isinstance(value, float) else str(value)]
    return args


def build_track_job(
    plan: TrackPlan,
    *,
    job_id: str,
    sleap_nn: list[str] | None = None,
    device: str = "auto",
    work_dir: Path | None = None,
) -> EngineJob:
    """One ``sleap-nn predict`` step, printing JSON progress lines (``--gui``).

    ``predict`` rather than the legacy ``track``: sleap-nn 0.3.5 calls ``track`` its
    legacy pipeline, and only ``predict`` writes Analysis HDF5 files (``--output_format``)
    or filters by centroid distance. Run on a real model, ``predict`` takes every option
    used before (``--gui`` progress lines of the same shape, ``--frames``,
    ``--video_index``, ``--only_suggested_frames``, ``--peak_threshold``, ``--batch_size``,
    ``--device``) and the tracker options, and loads both model folder layouts
    (SLEAP 1.4's ``best_model.h5`` through its legacy-model converter).

    Data whose videos are read at other paths is tracked from its copy in ``work_dir``
    (:func:`labels_copies`); the output is still placed as checked. With
    ``output_format`` analysis_h5 the step's output is the Analysis HDF5 file the plan
    checked; sleap-nn is given the .slp name it derives that file's name from.
    """
    command = sleap_nn or default_sleap_nn_command()
    spec = plan.spec
    data = plan.data_path
    if plan.video_map:
        data = labels_copies({plan.data_path: plan.video_map}, work_dir)[plan.data_path]
    output = plan.output_path
    if spec.output_format == "analysis_h5":
        output = analysis_h5_argument(plan.output_path)
    # Options are separate argv items, so no quoting is needed: sleap-nn's own
    # click parser receives each path as one string.
    argv = [*command, "predict", "--data_path", str(data)]
    for model in plan.model_paths:
        argv += ["--model_paths", str(model)]
    argv += ["--output_path", str(output), "--device", device, "--gui"]
    if spec.output_format != "slp":
        argv += ["--output_format", spec.output_format]
    if spec.batch_size is not None:
        argv += ["--batch_size", str(spec.batch_size)]
    if spec.peak_threshold is not None:
        argv += ["--peak_threshold", repr(spec.peak_threshold)]
    if spec.only_suggested_frames:
        argv.append("--only_suggested_frames")
    if plan.frames is not None:
        argv += ["--frames", sleap_nn_frames_arg(plan.frames)]
    video_index = spec.video_index
    if video_index is None and plan.frames is not None and plan.data_path.suffix == ".slp":
        video_index = 0  # sleap-nn applies --frames to one video of a .slp
    if video_index is not None:
        argv += ["--video_index", str(video_index)]
    argv += track_option_args(spec)
    step = Step(
        name=plan.data_path.name, kind="track", argv=argv, index=1, total=1, output=plan.output_path
    )
    return EngineJob(job_id=job_id, kind="track", steps=[step])
