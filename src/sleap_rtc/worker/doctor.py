"""Checks of a worker machine, as ``sleap-rtc doctor`` runs them: is it ready to run jobs?

Each check is a :class:`Check`: a name, whether it passed, what was found and, for a
problem, what to do. Nothing here prints, creates a folder or imports torch in the
calling process: GPUs are asked of nvidia-smi and of torch in a child Python
(:mod:`sleap_rtc.engine.gpus`), sleap-nn is looked up without importing it, and the
sandbox is probed the way the worker probes it at start.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from sleap_rtc.engine import gpus as gpu_probe
from sleap_rtc.engine import sandbox
from sleap_rtc.jobs.devices import device_problem
from sleap_rtc.jobs.mounts import Mount, Mounts
from sleap_rtc.protocol.checks import Check
from sleap_rtc.worker.config import (
    MountConfig,
    WorkerConfig,
    WorkerConfigError,
    default_config_path,
    load_worker_config,
)

__all__ = [
    "MIN_FREE_BYTES",
    "Check",
    "WorkerMachine",
    "check_worker_machine",
    "free_space_check",
    "gpu_check",
    "worker_config_path",
]

#: Less free space than this in the models folder is a problem: a training run writes
#: checkpoints, logs and visualizations there.
MIN_FREE_BYTES: Final = 1 << 30  # 1 GiB

_GIB = float(1 << 30)

#: Answers of the GPU probes: nvidia-smi's GPUs (None: not there or failed), torch's
#: (GPUs, accelerator) in a child Python (None: torch can't be imported there).
SmiProbe = Callable[[], list[gpu_probe.GpuInfo] | None]
TorchProbe = Callable[[], tuple[list[gpu_probe.GpuInfo], str] | None]


@dataclass(frozen=True)
class WorkerMachine:
    """The checks of one worker configuration, and the configuration when it loads."""

    path: Path
    config: WorkerConfig | None
    checks: list[Check] = field(default_factory=list)


def worker_config_path(explicit: Path | None) -> Path | None:
    """The worker.toml to check: the one given, else the default one if it exists."""
    if explicit is not None:
        return explicit.expanduser()
    default = default_config_path()
    return default if default.is_file() else None


def _gib(count: int) -> str:
    return f"{count / _GIB:.1f} GiB"


def _nearest_existing(path: Path) -> Path:
    """``path`` or the closest folder above it that exists."""
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def free_space_check(folder: Path, free_bytes: int, minimum: int = MIN_FREE_BYTES) -> Check:
    """Whether ``free_bytes`` free where ``folder`` is are enough for new models."""
    if free_bytes >= minimum:
        return Check("disk space", True, f"{_gib(free_bytes)} free for models in {folder}")
    return Check(
        "disk space",
        False,
        f"only {_gib(free_bytes)} free in {folder}; training needs at least {_gib(minimum)}",
        "free space on that disk, or set models_dir in worker.toml to a folder on a "
        "disk with more room",
    )


def gpu_check(
    device: str,
    smi: list[gpu_probe.GpuInfo] | None,
    torch: tuple[list[gpu_probe.GpuInfo], str] | None,
) -> Check:
    """What the worker's ``device`` setting gets, given what nvidia-smi and torch see."""
    if device == "cpu":
        return Check("GPU", True, 'cpu configured (device = "cpu"): jobs run on the CPU')
    if torch is None:
        return Check(
            "GPU",
            False,
            f"PyTorch can't be imported by {sys.executable}",
            "install the worker's ML stack in this environment: pip install 'sleap-rtc[worker]'",
        )
    found, accelerator = torch
    if device == "mps" or (device == "auto" and accelerator == "mps" and not found):
        if accelerator == "mps":
            return Check("GPU", True, "Apple GPU (mps) visible to torch")
        return Check(
            "GPU",
            False,
            'device = "mps", but torch sees no Apple GPU',
            'set device = "auto" or "cpu" in worker.toml',
        )
    if not found:
        if smi:
            names = ", ".join(g.name for g in smi)
            return Check(
                "GPU",
                False,
                f"nvidia-smi lists {names}, but torch sees no CUDA GPU "
                "(a CPU-only PyTorch build, or a driver it doesn't support)",
                "install a CUDA build of PyTorch that matches the driver "
                "(https://pytorch.org/get-started/locally/)",
            )
        return Check(
            "GPU",
            False,
            "no GPU visible to torch (nor to nvidia-smi): jobs would run on the CPU",
            'install the NVIDIA driver and a CUDA build of PyTorch, or set device = "cpu" '
            "in worker.toml to run on the CPU on purpose",
        )
    wrong = device_problem(device, len(found))
    if wrong is not None:
        return Check("GPU", False, wrong, "set device in worker.toml to a GPU this machine has")
    listed = "; ".join(f"cuda:{g.index} {g.name} ({g.memory_total_mb:,} MB)" for g in found)
    return Check("GPU", True, f"visible to torch: {listed}")


def _config_check(path: Path) -> tuple[Check, WorkerConfig | None]:
    try:
        config = load_worker_config(path)
    except WorkerConfigError as exc:
        return Check(
            "worker config", False, str(exc), f"fix {path} (see `sleap-rtc worker -h`)"
        ), None
    summary = (
        f"{path}: worker {config.name}, backend {config.backend}, device {config.device}, "
        f"{len(config.mounts)} mount(s)"
    )
    return Check("worker config", True, summary), config


def _sleap_nn_check(config: WorkerConfig | None) -> Check:
    from sleap_rtc.engine.commands import default_sleap_nn_command

    custom = config.sleap_nn_command if config is not None else None
    command = custom or default_sleap_nn_command()
    executable = shutil.which(command[0]) if command else None
    version = gpu_probe.sleap_nn_version()
    if executable is None:
        where = "sleap_nn_command in worker.toml" if custom else "this environment or PATH"
        return Check(
            "sleap-nn",
            False,
            f"the sleap-nn command {command[0] if command else ''!r} is not in {where}",
            "install it with pip install 'sleap-rtc[worker]', or set sleap_nn_command "
            "in worker.toml to the sleap-nn executable",
        )
    if custom:
        known = f"sleap-nn {version}" if version else "sleap-nn (version not known here)"
        return Check("sleap-nn", True, f"{known}: {executable} (sleap_nn_command)")
    if version is None or importlib.util.find_spec("sleap_nn") is None:
        return Check(
            "sleap-nn",
            False,
            f"sleap-nn is not importable by {sys.executable}",
            "install it in this environment: pip install 'sleap-rtc[worker]'",
        )
    return Check("sleap-nn", True, f"sleap-nn {version}: {executable}")


def _sandbox_check(config: WorkerConfig, mounts: Mounts) -> Check:
    reason = sandbox.unavailable_reason()
    if config.sandbox == "off":
        if reason is None:
            return Check(
                "sandbox",
                False,
                f'sandbox = "off", but this machine can sandbox jobs ({sandbox.describe()}): '
                "jobs run with this user's full access",
                'remove sandbox = "off" from worker.toml (or start the worker with '
                "--sandbox landlock)",
            )
        return Check("sandbox", True, f'off (sandbox = "off"; Landlock unavailable: {reason})')
    try:
        note = config.check_sandbox(mounts)
    except WorkerConfigError as exc:
        fix = (
            "run the worker on a Linux kernel with Landlock (5.13 or newer), or set "
            'sandbox = "off" in worker.toml'
            if reason
            else "move the worker's state folder, key file and config out of the mounts"
        )
        return Check("sandbox", False, str(exc), fix)
    return Check("sandbox", True, note)


def _mount_check(index: int, entry: MountConfig, config_path: Path) -> tuple[Check, Mount | None]:
    raw = os.path.expanduser(entry.path)
    name = f"mount {entry.label or Path(raw).name or raw}"
    fix = f"create the folder, or fix or remove mounts[{index}] in {config_path}"
    if not os.path.isabs(raw):
        return Check(name, False, f"{entry.path!r} is not an absolute path", fix), None
    path = Path(raw)
    if not path.exists():
        return Check(name, False, f"{path} does not exist", fix), None
    if not path.is_dir():
        return Check(name, False, f"{path} is not a folder", fix), None
    try:
        mount = Mount.create(path, entry.label, read_only=entry.read_only)
    except ValueError as exc:
        return Check(name, False, str(exc), f"fix mounts[{index}] in {config_path}"), None
    user = _user()
    if not os.access(mount.path, os.R_OK | os.X_OK):
        return Check(
            name, False, f"{mount.path} is not readable by {user}", _permission_fix(user)
        ), None
    if not entry.read_only and not os.access(mount.path, os.W_OK):
        return Check(
            name,
            False,
            f"{mount.path} is not writable by {user}",
            f"{_permission_fix(user)}, or mark the mount read_only = true",
        ), None
    access = "read-only" if entry.read_only else "read-write"
    return Check(name, True, f"{mount.path} ({access})"), mount


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return "this user"


def _permission_fix(user: str) -> str:
    return f"give {user} access (run doctor as the worker's user, e.g. sudo -u USER)"


def _models_check(models: Path) -> Check:
    user = _user()
    if models.exists():
        if not models.is_dir():
            return Check(
                "models folder",
                False,
                f"{models} is not a folder",
                "set models_dir in worker.toml to a folder",
            )
        if not os.access(models, os.R_OK | os.W_OK | os.X_OK):
            return Check(
                "models folder", False, f"{models} is not writable by {user}", _permission_fix(user)
            )
        return Check("models folder", True, f"{models} (writable)")
    parent = _nearest_existing(models.parent)
    if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
        return Check("models folder", True, f"{models} (created when the worker starts)")
    return Check(
        "models folder",
        False,
        f"{models} does not exist and {user} can't create it in {parent}",
        "create it, or set models_dir in worker.toml to a folder the worker may write",
    )


def check_worker_machine(
    path: Path,
    *,
    min_free_bytes: int = MIN_FREE_BYTES,
    smi: SmiProbe = gpu_probe.query_nvidia_smi,
    torch: TorchProbe = gpu_probe.query_torch,
) -> WorkerMachine:
    """Every check of the worker configured by ``path``: config, sleap-nn, GPU, sandbox,
    models folder, free space and mounts. ``smi`` and ``torch`` find the GPUs."""
    config_check, config = _config_check(path)
    checks = [config_check, _sleap_nn_check(config)]
    if config is None:
        return WorkerMachine(path, None, checks)
    if config.gpus is not None:
        declared = ", ".join(g.name for g in config.gpus) or "none"
        checks.append(Check("GPU", True, f"declared in worker.toml ([[gpus]]): {declared}"))
    elif config.device != "cpu" and not config.backend_plugin.local_gpus:
        checks.append(
            Check("GPU", True, f"jobs run on {config.backend} nodes; their GPUs are not seen here")
        )
    else:
        needs_probe = config.device != "cpu"
        checks.append(
            gpu_check(
                config.device, smi() if needs_probe else None, torch() if needs_probe else None
            )
        )
    models = config.resolved_models_dir()
    checks.append(_models_check(models))
    where = _nearest_existing(models)
    try:
        checks.append(free_space_check(models, shutil.disk_usage(where).free, min_free_bytes))
    except OSError as exc:
        checks.append(
            Check(
                "disk space",
                False,
                f"can't measure free space in {where}: {exc.strerror}",
                "check that the models folder's disk is mounted and readable",
            )
        )
    mounts: list[Mount] = []
    for index, entry in enumerate(config.mounts):
        check, mount = _mount_check(index, entry, path)
        checks.append(check)
        if mount is not None:
            mounts.append(mount)
    try:
        usable = Mounts(mounts)
    except ValueError as exc:
        checks.append(Check("mounts", False, str(exc), f"give each mount its own label in {path}"))
        usable = Mounts([])
    checks.append(_sandbox_check(config, usable))
    return WorkerMachine(path, config, checks)
