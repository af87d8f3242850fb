"""This machine's GPUs and sleap-nn: what jobs here would run on.

Only the standard library and pydantic are imported at the top here. GPUs are
found with ``nvidia-smi``; where that is missing, torch is asked in a child Python
so that the calling process (a worker, the batch-size probe) never imports torch.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "GpuInfo",
    "detect_gpus",
    "parse_nvidia_smi",
    "parse_usage",
    "query_nvidia_smi",
    "query_torch",
    "refresh_free_memory",
    "sleap_nn_version",
]

NVIDIA_SMI_ARGS = (
    "--query-gpu=index,name,memory.total,memory.free",
    "--format=csv,noheader,nounits",
)

#: What changes while a worker runs: free memory and how busy each GPU is.
NVIDIA_SMI_USAGE_ARGS = (
    "--query-gpu=index,memory.free,utilization.gpu",
    "--format=csv,noheader,nounits",
)

_MIB = 1024 * 1024

# Marks the child's answer so that anything else torch prints on stdout is ignored.
_TORCH_MARKER = "SLEAP_RTC_CAPABILITIES "

_TORCH_SCRIPT = """
import json, sys
try:
    import torch
except Exception:
    print("SLEAP_RTC_CAPABILITIES " + json.dumps({"torch": False}))
    sys.exit(0)
out = {"torch": True, "cuda": [], "mps": False}
try:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
except Exception:
    count = 0
for i in range(count):
    try:
        props = torch.cuda.get_device_properties(i)
    except Exception:
        continue
    try:
        free = int(torch.cuda.mem_get_info(i)[0])
    except Exception:
        free = None
    out["cuda"].append(
        {"index": i, "name": str(props.name), "total": int(props.total_memory), "free": free}
    )
try:
    out["mps"] = bool(torch.backends.mps.is_available())
except Exception:
    pass
print("SLEAP_RTC_CAPABILITIES " + json.dumps(out))
"""


class GpuInfo(BaseModel):
    """One GPU as the worker reports it; memory in MiB."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    name: str
    memory_total_mb: int = Field(ge=0)
    memory_free_mb: int | None = Field(default=None, ge=0)
    utilization_pct: int | None = Field(default=None, ge=0, le=100)


def _parse_count(field: str) -> int | None:
    """A whole, non-negative number such as ``81559`` (``81559 MiB`` too); else None."""
    value = field.strip()
    if value.endswith("MiB"):
        value = value[:-3].strip()
    if not value.isascii() or not value.isdigit():
        return None
    return int(value)


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """GPUs in ``nvidia-smi --query-gpu=index,name,memory.total,memory.free`` CSV output.

    The index is the first field, the two memory values the last two, and the name
    everything in between. A free-memory value such as ``[N/A]`` becomes None; lines
    that can't be read are skipped.
    """
    gpus: list[GpuInfo] = []
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) < 4:
            continue
        index = _parse_count(parts[0])
        name = ",".join(parts[1:-2]).strip()
        total = _parse_count(parts[-2])
        if index is None or total is None or not name:
            continue
        gpus.append(
            GpuInfo(
                index=index,
                name=name,
                memory_total_mb=total,
                memory_free_mb=_parse_count(parts[-1]),
            )
        )
    return gpus


def parse_usage(text: str) -> dict[int, tuple[int | None, int | None]]:
    """Free MiB and utilization % per GPU index from ``nvidia-smi`` with
    :data:`NVIDIA_SMI_USAGE_ARGS`; a value it can't tell (``[N/A]``) is None."""
    usage: dict[int, tuple[int | None, int | None]] = {}
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) != 3:
            continue
        index = _parse_count(parts[0])
        if index is None:
            continue
        busy = _parse_count(parts[2].removesuffix("%").strip())
        usage[index] = (_parse_count(parts[1]), busy if busy is not None and busy <= 100 else None)
    return usage


def _kill(proc: subprocess.Popen[str]) -> None:
    """Kill a child started by `_run` together with anything it started."""
    if os.name == "posix":
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()


def _run(argv: list[str], timeout: float) -> str | None:
    """Stdout of ``argv`` (no shell) if it exits 0 within ``timeout`` seconds; else None."""
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=os.name == "posix",
        )
    except (OSError, ValueError):
        return None
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        return None
    return stdout if proc.returncode == 0 else None


def query_nvidia_smi(timeout: float = 10.0, executable: str = "nvidia-smi") -> list[GpuInfo] | None:
    """GPUs listed by ``nvidia-smi``; None if it is not found, fails or times out."""
    path = shutil.which(executable)
    if path is None:
        return None
    stdout = _run([path, *NVIDIA_SMI_ARGS], timeout)
    if stdout is None:
        return None
    return parse_nvidia_smi(stdout)


def _parse_torch_answer(stdout: str) -> tuple[list[GpuInfo], str] | None:
    """The child's marked JSON line as (gpus, accelerator); None if absent or without torch."""
    for line in reversed(stdout.splitlines()):
        if not line.startswith(_TORCH_MARKER):
            continue
        try:
            answer = json.loads(line[len(_TORCH_MARKER) :])
            if not answer.get("torch"):
                return None
            gpus = [
                GpuInfo(
                    index=int(d["index"]),
                    name=str(d["name"]),
                    memory_total_mb=int(d["total"]) // _MIB,
                    memory_free_mb=None if d.get("free") is None else int(d["free"]) // _MIB,
                )
                for d in answer.get("cuda", [])
            ]
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        if gpus:
            return gpus, "cuda"
        return gpus, "mps" if answer.get("mps") else "cpu"
    return None


def query_torch(
    python: str = sys.executable, timeout: float = 120.0
) -> tuple[list[GpuInfo], str] | None:
    """CUDA GPUs and accelerator ("cuda", "mps" or "cpu") as seen by torch in a child Python.

    None if torch can't be imported there, or the child fails or times out.
    """
    stdout = _run([python, "-c", _TORCH_SCRIPT], timeout)
    if stdout is None:
        return None
    return _parse_torch_answer(stdout)


def detect_gpus(*, use_torch: bool = True) -> tuple[list[GpuInfo], str]:
    """GPUs and accelerator: nvidia-smi first, then torch if allowed, else ``([], "cpu")``."""
    try:
        gpus = query_nvidia_smi()
        if gpus:
            return gpus, "cuda"
        if use_torch:
            found = query_torch()
            if found is not None:
                return found
    except Exception:
        pass
    return [], "cpu"


def refresh_free_memory(gpus: list[GpuInfo], executable: str = "nvidia-smi") -> list[GpuInfo]:
    """``gpus`` with free memory and utilization re-read from nvidia-smi, matched by index.

    Unchanged if nvidia-smi is unavailable; a GPU it no longer lists keeps its old values.
    """
    path = shutil.which(executable)
    stdout = _run([path, *NVIDIA_SMI_USAGE_ARGS], 10.0) if path else None
    if stdout is None:
        return list(gpus)
    usage = parse_usage(stdout)
    fresh = []
    for gpu in gpus:
        if gpu.index in usage:
            free, busy = usage[gpu.index]
            gpu = gpu.model_copy(update={"memory_free_mb": free, "utilization_pct": busy})
        fresh.append(gpu)
    return fresh


def sleap_nn_version() -> str | None:
    """The installed sleap-nn distribution's version, or None if it is not installed."""
    try:
        return importlib.metadata.version("sleap-nn")
    except importlib.metadata.PackageNotFoundError:
        return None
