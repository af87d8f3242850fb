"""Typed progress of a running job.

These are data, not messages: the engine produces them, the worker stores the
latest one, and the protocol layer carries them to clients.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

#: How a line of a job's log starts when it is a note for the user (a run name that
#: was taken, ...): clients show these lines even when they don't show the log.
NOTE_PREFIX = "[sleap-rtc] note: "


class TrainProgress(BaseModel):
    """Where a training run is. ``model_index`` counts from 1 in multi-model jobs."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["train"] = "train"
    model_index: int = 1
    n_models: int = 1
    model_name: str = ""
    epoch: int  # 1-based epoch being run or just finished
    total_epochs: int
    batch: int | None = None
    loss: float | None = None
    val_loss: float | None = None
    eta_s: float | None = None
    epoch_done: bool = False


class TrackProgress(BaseModel):
    """Where an inference run is, in frames."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["track"] = "track"
    n_processed: int
    n_total: int | None = None
    rate: float | None = None  # frames per second
    eta_s: float | None = None


Progress = TrainProgress | TrackProgress
