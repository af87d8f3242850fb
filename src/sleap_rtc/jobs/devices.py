"""Which GPUs a train job may ask for, checked against the worker that would run it.

A worker runs jobs on its ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``)
and knows how many GPUs its jobs can use (none with ``device = "cpu"``; unknown on a
scheduler's login node, where the GPUs are on other machines). ``--gpus N`` asks for
sleap-nn's multi-GPU training on N of them; asking for more than there are is refused
before the job is accepted, not after sleap-nn fails to start.
"""

from __future__ import annotations

from dataclasses import dataclass

from sleap_rtc.jobs.problems import Problem, ProblemCode


@dataclass(frozen=True)
class Devices:
    """What a worker offers a job."""

    #: The worker's ``device`` setting.
    device: str = "auto"
    #: GPUs its jobs can use; None when not known here (a scheduler's nodes decide).
    gpus: int | None = None


def _plural(count: int) -> str:
    return f"{count} GPU" + ("" if count == 1 else "s")


def check_gpus(requested: int | None, devices: Devices) -> list[Problem]:
    """Problems with ``gpus`` = ``requested`` on a worker offering ``devices``."""
    if requested is None:
        return []

    def problem(code: ProblemCode, message: str) -> list[Problem]:
        return [Problem(field="gpus", value=str(requested), code=code, message=message)]

    if devices.device in ("cpu", "mps"):
        return problem(
            ProblemCode.CONFLICT,
            f"this worker runs jobs on {devices.device} (device = {devices.device}); leave "
            "--gpus out, or choose a worker with GPUs (`sleap-rtc rooms workers` lists them)",
        )
    if devices.device.startswith("cuda:") and requested > 1:
        return problem(
            ProblemCode.CONFLICT,
            f"this worker gives each job one GPU (device = {devices.device}); use --gpus 1 "
            "or leave it out",
        )
    if devices.gpus is not None and requested > devices.gpus:
        has = "no GPU" if devices.gpus == 0 else _plural(devices.gpus)
        return problem(
            ProblemCode.OUT_OF_RANGE,
            f"gpus is {requested}; this worker has {has}"
            + (f" (use --gpus {devices.gpus} or fewer" if devices.gpus else " (")
            + ", or choose a worker with more: `sleap-rtc rooms workers` lists them)",
        )
    return []


def device_problem(device: str, gpus: int | None) -> str | None:
    """Why a worker set to ``device`` can't run jobs on a machine with ``gpus`` GPUs."""
    if not device.startswith("cuda:") or gpus is None:
        return None
    index = int(device.split(":", 1)[1])
    if index < gpus:
        return None
    found = "no GPU" if gpus == 0 else f"{_plural(gpus)} (cuda:0 to cuda:{gpus - 1})"
    return f"device = {device!r}, but this machine has {found}; set device to one of them"
