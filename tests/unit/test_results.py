"""What a finished job holds, read from sleap-nn's files, and how its summary reads."""

from __future__ import annotations

import json
from pathlib import Path

from sleap_rtc.cli.summary import describe, duration
from sleap_rtc.client.next_steps import DATA_PLACEHOLDER, after
from sleap_rtc.engine.results import results_of
from sleap_rtc.jobs.results import StepResult
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.protocol import jobs as p

# sleap-nn's training_log.csv: its first row holds only a validation loss.
LOG = """epoch,train/loss,val/loss,learning_rate
0,,0.0027,
1,0.0032,0.0023,0.002
2,0.0025,0.0031,0.002
"""


def test_a_model_folder_gives_epochs_best_loss_and_headline_metrics(tmp_path: Path) -> None:
    (tmp_path / "training_log.csv").write_text(LOG)
    metrics = {
        "mOKS": {"mOKS": 0.51},
        "voc_metrics": {"oks_voc.mAP": 0.12, "oks_voc.mAR": 0.13},
        "distance_metrics": {"p50": 1.05, "p90": float("nan")},
    }
    (tmp_path / "metrics.val.0.json").write_text(json.dumps(metrics))
    [result] = results_of("train", [str(tmp_path)])
    assert (result.epochs, result.best_val_loss, result.best_epoch) == (3, 0.0023, 2)
    assert result.metrics == {"mOKS": 0.51, "mAP": 0.12, "mAR": 0.13, "dist.p50": 1.05}


def test_missing_or_broken_files_leave_fields_empty(tmp_path: Path) -> None:
    (tmp_path / "metrics.val.0.json").write_text("{not json")
    [result] = results_of("train", [str(tmp_path / "gone"), str(tmp_path)])[1:]
    assert result == StepResult(output=str(tmp_path))
    [track] = results_of("track", [str(tmp_path / "predictions.analysis.h5")])
    assert track.frames is None and track.kind == "track"


def test_the_summary_line_and_the_next_command() -> None:
    result = StepResult(
        output="/m/run",
        epochs=5,
        best_val_loss=0.000323,
        best_epoch=5,
        metrics={"mOKS": 0.5072, "mAP": 0.115, "dist.p50": 1.0547, "dist.p90": 1.448},
    )
    assert describe(result) == (
        "5 epochs · best val loss 0.000323 (epoch 5) · mOKS 0.507 · mAP 0.115 · "
        "error p50 1.05 px, p90 1.45 px"
    )
    assert describe(StepResult(output="/p.slp", kind="track", frames=1)) == (
        "1 frame with predictions"
    )
    assert duration(65.4) == "0:01:05"
    done = p.JobComplete(job_id="j1", outputs=["/m/a b"], results=[result])
    spec = TrainSpec(config_paths=["/c.yaml"], labels_path="/d/l.slp")
    assert after(["sleap-rtc", "track", "--room", "lab"], spec, done) == [
        "sleap-rtc track --room lab --data-path /d/l.slp --model-paths /m/run"
    ]
    plain = p.JobComplete(job_id="j1", outputs=["/m/a b"])
    assert after(["t"], TrainSpec(config_paths=["/c.yaml"]), plain) == [
        f"t --data-path {DATA_PLACEHOLDER} --model-paths '/m/a b'"
    ]
    assert after(["t"], TrackSpec(data_path="/d.slp", model_paths=["/m"]), plain) == []
