"""Reading what sleap-nn wrote when a step finished, into :class:`StepResult` entries.

A model folder holds ``training_log.csv`` (one row per epoch) and, after sleap-nn's
closing evaluation, ``metrics.val.0.json`` (mOKS, VOC mAP on OKS, keypoint distance
percentiles, PCK). Files the worker didn't check were written by the job, so each is
read size-limited and defensively: a missing, large or malformed file leaves its
fields empty and never raises.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from sleap_rtc.jobs.results import StepResult

#: Largest results file read (a metrics file of a large validation split is ~1 MB).
MAX_RESULT_FILE_BYTES = 8 * 1024 * 1024

#: sleap-nn's evaluation metrics shown after a run, by the name a person reads.
HEADLINE_METRICS: dict[str, tuple[str, ...]] = {
    "mOKS": ("mOKS", "mOKS"),
    "mAP": ("voc_metrics", "oks_voc.mAP"),
    "mAR": ("voc_metrics", "oks_voc.mAR"),
    "dist.p50": ("distance_metrics", "p50"),
    "dist.p90": ("distance_metrics", "p90"),
    "mPCK": ("pck_metrics", "mPCK"),
}


def _read(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_RESULT_FILE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_RESULT_FILE_BYTES:
        return None
    return data.decode("utf-8", errors="replace")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _dig(data: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def epochs_of(model_dir: Path) -> tuple[int | None, float | None, int | None]:
    """Epochs trained, the best validation loss, and the (1-based) epoch it was seen in."""
    text = _read(model_dir / "training_log.csv")
    if text is None:
        return None, None, None
    epochs = 0
    best: tuple[float, int] | None = None
    for row in csv.DictReader(io.StringIO(text)):
        # One row per epoch (sleap-nn's first holds only its validation loss).
        train = _number(row.get("train/loss"))
        val = _number(row.get("val/loss"))
        if train is None and val is None:
            continue
        epochs += 1
        if val is not None and (best is None or val < best[0]):
            best = (val, epochs)
    return epochs, best[0] if best else None, best[1] if best else None


def metrics_of(model_dir: Path) -> dict[str, float]:
    """The headline evaluation metrics of the validation split, where sleap-nn wrote them."""
    text = _read(model_dir / "metrics.val.0.json")
    if text is None:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    found = {}
    for name, keys in HEADLINE_METRICS.items():
        value = _number(_dig(data, keys))
        if value is not None:
            found[name] = value
    return found


def train_result(model_dir: Path) -> StepResult:
    epochs, best, best_epoch = epochs_of(model_dir)
    return StepResult(
        output=str(model_dir),
        kind="train",
        epochs=epochs,
        best_val_loss=best,
        best_epoch=best_epoch,
        metrics=metrics_of(model_dir),
    )


def track_result(predictions: Path) -> StepResult:
    """Frames with predictions in a ``.slp`` (other formats: the path alone)."""
    frames = None
    if predictions.suffix == ".slp" and predictions.is_file():
        try:
            import sleap_io as sio

            frames = len(sio.load_slp(str(predictions), open_videos=False).labeled_frames)
        except Exception:  # a summary never fails a job
            frames = None
    return StepResult(output=str(predictions), kind="track", frames=frames)


def results_of(kind: str, outputs: list[str]) -> list[StepResult]:
    """One result per output of a finished ``kind`` job."""
    read = train_result if kind == "train" else track_result
    return [read(Path(output)) for output in outputs[:64]]
