"""Turn sleap-nn's own progress output into typed progress.

Training progress comes from sleap-nn's ZMQ publisher (JSON dicts with
``event`` = train_begin, epoch_begin, batch_end, epoch_end, train_end);
tracking progress from the JSON lines ``sleap-nn predict --gui`` prints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from sleap_rtc.engine.backend import Step
from sleap_rtc.jobs.events import TrackProgress, TrainProgress

_LOSS_KEYS = ("train/loss", "train_loss", "loss")
_VAL_LOSS_KEYS = ("val/loss", "val_loss")


def _first_float(logs: Any, keys: tuple[str, ...]) -> float | None:
    if not isinstance(logs, dict):
        return None
    for key in keys:
        value = logs.get(key)
        if isinstance(value, int | float) and value == value:  # not NaN
            return float(value)
    return None


class TrainProgressTracker:
    """Folds ZMQ events of one training step into :class:`TrainProgress`.

    Batch updates are throttled (``batch_interval_s``) so a fast GPU doesn't
    flood the channel; epoch boundaries are always reported.
    """

    def __init__(
        self,
        step: Step,
        *,
        batch_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.step = step
        self.total_epochs = step.total_epochs or 1
        self.batch_interval_s = batch_interval_s
        self._clock = clock
        self._epoch = 0
        self._epoch_started: float | None = None
        self._durations: list[float] = []
        self._last_batch_emit = float("-inf")
        self._loss: float | None = None
        self._val_loss: float | None = None

    def _eta(self, *, epoch_done: bool) -> float | None:
        if not self._durations:
            return None
        mean = sum(self._durations) / len(self._durations)
        remaining = self.total_epochs - self._epoch
        if not epoch_done and self._epoch_started is not None:
            elapsed = self._clock() - self._epoch_started
            return max(mean - elapsed, 0.0) + mean * remaining
        return mean * remaining

    def _progress(self, *, batch: int | None = None, epoch_done: bool = False) -> TrainProgress:
        return TrainProgress(
            model_index=self.step.index,
            n_models=self.step.total,
            model_name=self.step.name,
            epoch=max(self._epoch, 1),
            total_epochs=self.total_epochs,
            batch=batch,
            loss=self._loss,
            val_loss=self._val_loss,
            eta_s=self._eta(epoch_done=epoch_done),
            epoch_done=epoch_done,
        )

    def feed(self, message: dict[str, Any]) -> TrainProgress | None:
        event = message.get("event")
        epoch = message.get("epoch")
        if isinstance(epoch, int):
            self._epoch = epoch + 1
        if event == "epoch_begin":
            self._epoch_started = self._clock()
            return self._progress()
        if event == "batch_end":
            loss = _first_float(message.get("logs"), _LOSS_KEYS)
            if loss is not None:
                self._loss = loss
            now = self._clock()
            if now - self._last_batch_emit < self.batch_interval_s:
                return None
            self._last_batch_emit = now
            batch = message.get("batch")
            return self._progress(batch=batch + 1 if isinstance(batch, int) else None)
        if event == "epoch_end":
            logs = message.get("logs")
            self._loss = _first_float(logs, _LOSS_KEYS) or self._loss
            self._val_loss = _first_float(logs, _VAL_LOSS_KEYS) or self._val_loss
            if self._epoch_started is not None:
                self._durations.append(self._clock() - self._epoch_started)
            return self._progress(epoch_done=True)
        return None


def parse_track_line(line: str) -> TrackProgress | str | None:
    """A ``predict --gui`` line: progress, an error message (str), or None if neither."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if data.get("error"):
        return f"{data.get('type', 'Error')}: {data.get('message', '')}".strip()
    processed = data.get("n_processed")
    if not isinstance(processed, int):
        return None
    total = data.get("n_total")
    rate = data.get("rate")
    eta = data.get("eta")
    return TrackProgress(
        n_processed=processed,
        n_total=total if isinstance(total, int) else None,
        rate=float(rate) if isinstance(rate, int | float) else None,
        eta_s=float(eta) if isinstance(eta, int | float) else None,
    )
