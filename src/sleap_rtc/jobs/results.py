"""What a finished job achieved, per output: data the worker keeps and clients show.

A training step's result is read from the files sleap-nn leaves in the model folder
(:mod:`sleap_rtc.engine.results`): how many epochs ran, the best validation loss and
its epoch, and the evaluation metrics sleap-nn computed on the validation split. A
tracking step's is the number of frames with predictions. Every field may be missing:
a result is a summary, never a reason for a job to fail.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

#: Most metrics kept per result (the headline ones; the rest stay in the model folder).
MAX_METRICS = 16

_NAME = Annotated[str, Field(max_length=64)]


class StepResult(BaseModel):
    """One output of a finished job and what it holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    output: Annotated[str, Field(max_length=4096)]
    kind: Annotated[str, Field(max_length=16)] = "train"
    epochs: int | None = None
    best_val_loss: float | None = None
    best_epoch: int | None = None
    #: Headline evaluation metrics by name (``mOKS``, ``mAP``, ``dist.p50``…).
    metrics: dict[_NAME, float] = Field(default_factory=dict, max_length=MAX_METRICS)
    #: Frames with predictions (tracking).
    frames: int | None = None
