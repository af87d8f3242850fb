"""Batch-size tuning: the largest training batch that fits in memory, from short trial runs.

On a GPU, each trial is a real ``sleap-nn train`` with the stage's config and labels,
cut down to one epoch of a few steps, saving nothing; it runs through the local
backend (:mod:`sleap_rtc.engine.backends.local`), like any job step here, which
owns starting, reading and stopping the process group. The first trial uses
the starting batch size; while trials fit, the size doubles (up to a cap: the number of
training samples in the labels, or a size given); once one runs out of memory, the size
is halved from the failing one until a trial fits again. The answer is the largest size
that fit. A trial that fails for any other reason (a broken config, a missing file)
stops the search with that reason: it is not mistaken for running out of memory.

On a CPU nothing is tuned: there is no device memory limit to find (the machine swaps,
or the process is killed), so the starting batch size is kept. Forced, the probe runs
anyway; it then climbs to the cap, since nothing runs out of memory.

The starting size is the one asked for, else the config's
``trainer_config.train_data_loader.batch_size``, else 4.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from sleap_rtc.engine.backend import BackendJob, EngineJob, Finished, LogLine, Step
from sleap_rtc.engine.backends.local.backend import LocalBackend
from sleap_rtc.engine.commands import default_sleap_nn_command, list_override, override

DEFAULT_START = 4
DEFAULT_MAX_BATCH_SIZE = 1024
DEFAULT_MAX_TRIALS = 10
DEFAULT_STEPS = 3
DEFAULT_TRIAL_TIMEOUT = 900.0
#: Seconds a trial stopped for its time limit gets after each signal (SIGINT, SIGTERM).
CANCEL_GRACE_S = 2.0

#: Text in a trial's output that means it ran out of memory (GPU or host).
OOM_MARKERS = (
    "CUDA out of memory",
    "CUDA error: out of memory",
    "OutOfMemoryError",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "DefaultCPUAllocator: can't allocate memory",
    "MPS backend out of memory",
)
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")
#: Lines of a trial's output kept to explain a failure.
_TAIL_LINES = 200
_MESSAGE_CHARS = 500


class Outcome(StrEnum):
    FITS = "fits"
    OOM = "oom"
    ERROR = "error"

    @property
    def label(self) -> str:
        return {"fits": "fits", "oom": "out of memory", "error": "failed"}[self.value]


@dataclass(frozen=True)
class TrialResult:
    """One trial: the batch size, how it ended, how long it took, and why it failed."""

    batch_size: int
    outcome: Outcome
    seconds: float = 0.0
    message: str = ""


@dataclass(frozen=True)
class TuneResult:
    """The chosen batch size (None on error) and the trials that led to it."""

    batch_size: int | None
    trials: list[TrialResult] = field(default_factory=list)
    #: Why no batch size could be chosen.
    error: str | None = None
    #: How the search ended, or why there was none.
    note: str = ""
    #: False when no trial ran (no GPU, not forced): the starting size is kept.
    tuned: bool = True

    @property
    def ok(self) -> bool:
        return self.error is None and self.batch_size is not None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["trials"] = [
            {**asdict(t), "outcome": str(t.outcome), "seconds": round(t.seconds, 2)}
            for t in self.trials
        ]
        return out


def search_batch_size(
    start: int,
    fits: Callable[[int], TrialResult],
    *,
    max_batch_size: int,
    max_trials: int = DEFAULT_MAX_TRIALS,
) -> TuneResult:
    """The largest batch size that ``fits``, searched by doubling and then halving.

    ``start`` (capped at ``max_batch_size``) is tried first. While trials fit, the size
    doubles, never past ``max_batch_size``; after one runs out of memory, the size is
    halved from the failing one until a trial fits (a size already known to fit ends the
    search without running again). At most ``max_trials`` trials run. A trial that
    fails for another reason ends the search with that reason as the error, and so does
    batch size 1 running out of memory.
    """
    if start < 1 or max_batch_size < 1 or max_trials < 1:
        raise ValueError("start, max_batch_size and max_trials must be at least 1")
    size = min(start, max_batch_size)
    best: int | None = None
    halving = False
    trials: list[TrialResult] = []
    while True:
        if len(trials) >= max_trials:
            if best is None:
                return TuneResult(
                    None,
                    trials,
                    error=f"no batch size fit in {max_trials} trial(s); the smallest tried was "
                    f"{min(t.batch_size for t in trials)} (allow more trials, or start lower)",
                )
            return TuneResult(best, trials, note=f"stopped after {max_trials} trial(s)")
        result = fits(size)
        trials.append(result)
        if result.outcome is Outcome.ERROR:
            reason = result.message or "no error message"
            return TuneResult(
                None,
                trials,
                error=f"the trial at batch size {size} failed, not for lack of memory: {reason}",
            )
        if result.outcome is Outcome.FITS:
            best = size
            if halving:
                failed = min(t.batch_size for t in trials if t.outcome is Outcome.OOM)
                return TuneResult(best, trials, note=f"{failed} ran out of memory; {best} fit")
            if size >= max_batch_size:
                return TuneResult(best, trials, note=f"reached the largest size tried ({size})")
            size = min(size * 2, max_batch_size)
            continue
        # Out of memory: halve from the failing size.
        if size == 1:
            return TuneResult(
                None,
                trials,
                error="even batch size 1 runs out of memory: use a smaller model or input "
                "scale, or a GPU with more memory",
            )
        halving = True
        size //= 2
        if best is not None and size <= best:
            return TuneResult(
                best, trials, note=f"{trials[-1].batch_size} ran out of memory; {best} fit"
            )


def _oom_line(line: str) -> bool:
    return any(marker in line for marker in OOM_MARKERS)


def _error_line(lines: list[str]) -> str:
    """The last exception line of a trial's output, else its last non-empty line."""
    stripped = [line.strip() for line in lines if line.strip()]
    for line in reversed(stripped):
        if _EXCEPTION_LINE.match(line):
            return line[:_MESSAGE_CHARS]
    return stripped[-1][:_MESSAGE_CHARS] if stripped else ""


def classify(returncode: int, output: str | list[str]) -> tuple[Outcome, str]:
    """How a trial ended, from its exit code and output; with the line that says why.

    Running out of memory (CUDA, cuBLAS, cuDNN or host allocator messages) wins over
    the exit code of a failed run; exit 0 otherwise means it fits; anything else is an
    error, explained by the last exception line.
    """
    lines = output.splitlines() if isinstance(output, str) else output
    if returncode != 0:
        for line in reversed(lines):
            if _oom_line(line):
                return Outcome.OOM, line.strip()[:_MESSAGE_CHARS]
    if returncode == 0:
        return Outcome.FITS, ""
    reason = _error_line(lines)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        killed = f"sleap-nn was killed by {name}"
        if -returncode == signal.SIGKILL:
            killed += " (host memory exhausted, or a time limit)"
        return Outcome.ERROR, f"{killed}; last output: {reason}" if reason else killed
    return Outcome.ERROR, reason or f"sleap-nn exited with {returncode} and printed nothing"


@dataclass(frozen=True)
class Probe:
    """What a trial trains: the stage's config and labels, on which device."""

    config: Path
    labels: list[Path]
    val_labels: list[Path] = field(default_factory=list)
    device: str = "auto"
    steps: int = DEFAULT_STEPS
    timeout: float = DEFAULT_TRIAL_TIMEOUT
    sleap_nn: list[str] | None = None

    def argv(self, batch_size: int, ckpt_dir: Path) -> list[str]:
        """``sleap-nn train`` for one short trial at ``batch_size``, writing under ``ckpt_dir``."""
        command = self.sleap_nn or default_sleap_nn_command()
        argv = [
            *command,
            "train",
            "--config",
            str(self.config),
            override("trainer_config.ckpt_dir", str(ckpt_dir)),
            override("trainer_config.run_name", "probe"),
            override("trainer_config.save_ckpt", False),
            override("trainer_config.use_wandb", False),
            override("trainer_config.enable_progress_bar", False),
            override("trainer_config.visualize_preds_during_training", False),
            override("trainer_config.eval.enabled", False),
            override("trainer_config.resume_ckpt_path", None),
            override("trainer_config.max_epochs", 1),
            override("trainer_config.train_steps_per_epoch", self.steps),
            override("trainer_config.min_train_steps_per_epoch", 1),
            # One device: DDP would split nothing (the batch size is per device) and cost
            # a respawn; reading frames on demand skips caching the whole dataset first.
            override("trainer_config.trainer_devices", 1),
            override("data_config.data_pipeline_fw", "torch_dataset"),
            override("trainer_config.train_data_loader.num_workers", 0),
            override("trainer_config.val_data_loader.num_workers", 0),
            override("trainer_config.train_data_loader.batch_size", batch_size),
            override("trainer_config.val_data_loader.batch_size", batch_size),
            list_override("data_config.train_labels_path", self.labels),
        ]
        if self.val_labels:
            argv.append(list_override("data_config.val_labels_path", self.val_labels))
        if self.device != "auto":
            argv.append(override("trainer_config.trainer_accelerator", self.device))
        return argv

    def run(self, batch_size: int) -> TrialResult:
        """Train for one short trial at ``batch_size``; nothing it writes is kept."""
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="sleap-rtc-tune-") as scratch:
            argv = self.argv(batch_size, Path(scratch))
            if shutil.which(argv[0]) is None:
                return TrialResult(
                    batch_size,
                    Outcome.ERROR,
                    time.monotonic() - started,
                    f"can't run {argv[0]}: not found, or not executable",
                )
            trial = asyncio.run(_run_trial(argv, self.timeout))
        seconds = time.monotonic() - started
        if trial.timed_out:
            return TrialResult(
                batch_size,
                Outcome.ERROR,
                seconds,
                f"the trial took longer than {self.timeout:g} s and was stopped",
            )
        if trial.exit_code is None:  # it never ran
            return TrialResult(
                batch_size, Outcome.ERROR, seconds, f"can't run {argv[0]}: {trial.reason}"
            )
        if trial.oom and trial.exit_code != 0:
            return TrialResult(batch_size, Outcome.OOM, seconds, trial.oom)
        outcome, message = classify(trial.exit_code, list(trial.tail))
        return TrialResult(batch_size, outcome, seconds, message)


@dataclass
class _Trial:
    """What a trial's job said: its last lines, the last out-of-memory line, its end."""

    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES))
    oom: str = ""
    exit_code: int | None = None
    reason: str = ""
    timed_out: bool = False


async def _run_trial(argv: list[str], timeout: float) -> _Trial:
    """Run ``argv`` as a one-step local job, stopped (its whole group) after ``timeout``.

    The trial inherits this process's environment, less anything named like a
    secret (see :func:`~sleap_rtc.engine.sandbox.job_environment`).
    """
    step = Step(name="probe", kind="train", argv=argv, index=1, total=1)
    job = EngineJob(job_id="tune", kind="train", steps=[step], env_allow=("*",), stop_early=False)
    handle = await LocalBackend(cancel_grace_s=CANCEL_GRACE_S).submit(job)
    trial = _Trial()
    reader = asyncio.create_task(_read(handle, trial))
    try:
        finished = await asyncio.wait_for(asyncio.shield(reader), timeout)
    except TimeoutError:
        trial.timed_out = True
        await handle.cancel()
        finished = await reader
    trial.exit_code, trial.reason = finished.exit_code, finished.reason or ""
    return trial


async def _read(handle: BackendJob, trial: _Trial) -> Finished:
    async for event in handle.events():
        if isinstance(event, LogLine):
            trial.tail.append(event.text)
            if _oom_line(event.text):
                trial.oom = event.text.strip()[:_MESSAGE_CHARS]
        elif isinstance(event, Finished):
            return event
    raise AssertionError("a backend job's events end with Finished")


def read_config(path: Path) -> dict[str, Any]:
    """A sleap-nn config YAML as a mapping; ValueError if it can't be read as one."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"can't read the config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a sleap-nn config (a mapping)")
    return data


def _section(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)  # type: ignore[assignment]
    return data


def start_batch_size(config: dict[str, Any], explicit: int | None = None) -> int:
    """``explicit``, else the config's training batch size, else 4."""
    if explicit is not None:
        return explicit
    found = _section(config, "trainer_config", "train_data_loader", "batch_size")
    if isinstance(found, int) and not isinstance(found, bool) and found > 0:
        return found
    return DEFAULT_START


def config_labels(config: dict[str, Any], config_path: Path, key: str) -> list[Path]:
    """The label files a config names under ``data_config.<key>``, relative to its folder."""
    raw = _section(config, "data_config", key)
    entries = raw if isinstance(raw, list) else [raw] if raw else []
    paths = []
    for entry in entries:
        path = Path(str(entry)).expanduser()
        paths.append(path if path.is_absolute() else (config_path.parent / path).resolve())
    return paths


def count_samples(labels: list[Path], config: dict[str, Any]) -> int | None:
    """How many training samples the labels hold: user instances for top-down instance
    models (one crop each), else frames with user labels. None if they can't be read."""
    heads = _section(config, "model_config", "head_configs") or {}
    per_instance = any(
        isinstance(heads, dict) and heads.get(name)
        for name in ("centered_instance", "multi_class_topdown")
    )
    try:
        import sleap_io as sio

        total = 0
        for path in labels:
            loaded = sio.load_slp(str(path), open_videos=False)
            if per_instance:
                total += sum(len(frame.user_instances) for frame in loaded.labeled_frames)
            else:
                total += len(loaded.user_labeled_frames)
    except Exception:
        return None
    return total or None


def has_gpu() -> bool:
    """Whether a CUDA GPU is here (nvidia-smi, else torch in a child Python)."""
    from sleap_rtc.engine.gpus import detect_gpus

    _, accelerator = detect_gpus()
    return accelerator == "cuda"


def skip_reason(device: str, force: bool = False) -> str | None:
    """Why tuning won't run on ``device`` (None: it runs); ``force`` runs it anyway."""
    if force or device == "cuda":
        return None
    if device == "cpu":
        return "the device is the CPU"
    return None if has_gpu() else "no GPU"


def tune_batch_size(
    probe: Probe,
    *,
    start: int | None = None,
    max_batch_size: int | None = None,
    max_trials: int = DEFAULT_MAX_TRIALS,
    force: bool = False,
    report: Callable[[str], None] | None = None,
) -> TuneResult:
    """Choose a batch size for training with ``probe``'s config and labels.

    ``start`` defaults to the config's batch size (else 4), ``max_batch_size`` to the
    number of training samples in the labels (else 1024). Without a GPU (and not
    ``force``) no trial runs and the starting size is kept. ``report`` receives a line
    of progress before and after each trial.
    """
    say = report or (lambda _: None)
    config = read_config(probe.config)
    first = start_batch_size(config, start)
    reason = skip_reason(probe.device, force)
    if reason is not None:
        return TuneResult(
            first,
            note=f"{reason}: keeping batch size {first}; tuning needs a GPU's memory limit",
            tuned=False,
        )
    cap = max_batch_size
    if cap is None:
        counted = count_samples(probe.labels, config)
        cap = counted or DEFAULT_MAX_BATCH_SIZE
        why = "training samples in the labels" if counted else "the labels could not be counted"
        say(f"largest batch size to try: {cap} ({why})")

    def trial(size: int) -> TrialResult:
        say(f"batch size {size}: training {probe.steps} step(s)…")
        result = probe.run(size)
        detail = f": {result.message}" if result.message else ""
        say(f"batch size {size}: {result.outcome.label} ({result.seconds:.1f} s){detail}")
        return result

    return search_batch_size(first, trial, max_batch_size=cap, max_trials=max_trials)
