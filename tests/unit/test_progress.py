"""Folding sleap-nn progress output into typed progress (pure logic)."""

from __future__ import annotations

from pathlib import Path

from sleap_rtc.engine.backend import Step
from sleap_rtc.engine.progress import TrainProgressTracker, parse_track_line
from sleap_rtc.jobs.events import TrackProgress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_train_tracker_epochs_losses_and_eta() -> None:
    clock = Clock()
    step = Step(
        name="centroid", kind="train", argv=[], index=1, total=2, total_epochs=4, output=Path("/m")
    )
    tracker = TrainProgressTracker(step, batch_interval_s=1.0, clock=clock)
    begin = tracker.feed({"event": "epoch_begin", "epoch": 0})
    assert begin and begin.epoch == 1 and begin.eta_s is None and begin.n_models == 2
    clock.now = 0.5
    first = tracker.feed(
        {"event": "batch_end", "epoch": 0, "batch": 0, "logs": {"train/loss": 0.9}}
    )
    assert first and first.loss == 0.9 and first.batch == 1
    clock.now = 0.6  # throttled
    assert (
        tracker.feed({"event": "batch_end", "epoch": 0, "batch": 1, "logs": {"train/loss": 0.8}})
        is None
    )
    clock.now = 10.0
    end = tracker.feed(
        {"event": "epoch_end", "epoch": 0, "logs": {"train/loss": 0.7, "val/loss": 0.75}}
    )
    assert end and end.epoch_done and end.loss == 0.7 and end.val_loss == 0.75
    assert end.eta_s == 30.0  # 3 epochs left at 10 s each
    assert tracker.feed({"event": "train_end"}) is None
    assert tracker.feed({"event": "bogus"}) is None


def test_track_lines() -> None:
    progress = parse_track_line('{"n_processed": 8, "n_total": 32, "rate": 4.0, "eta": 6.0}')
    assert progress == TrackProgress(n_processed=8, n_total=32, rate=4.0, eta_s=6.0)
    assert parse_track_line("Loading model...") is None
    assert parse_track_line("{not json") is None
    assert parse_track_line('{"n_processed": "x"}') is None
    error = parse_track_line('{"error": true, "type": "RuntimeError", "message": "CUDA OOM"}')
    assert error == "RuntimeError: CUDA OOM"
