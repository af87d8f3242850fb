import json

import pytest

from sleap_rtc.jobs.problems import JobRejected, ProblemCode
from sleap_rtc.jobs.specs import MAX_SPEC_BYTES, TrackSpec, TrainSpec, parse_spec


def test_train_round_trip() -> None:
    spec = TrainSpec(
        config_paths=["/vast/a.yaml", "/vast/b.yaml"],
        labels_path="/vast/l.slp",
        val_labels_path="/vast/v.slp",
        max_epochs=100,
        batch_size=8,
        learning_rate=1e-4,
        run_name="experiment-1",
        resume_ckpt_path="/vast/m/best.ckpt",
    )
    again = parse_spec(spec.model_dump_json())
    assert again == spec and isinstance(again, TrainSpec)


def test_track_round_trip_and_defaults() -> None:
    spec = TrackSpec(
        data_path="/vast/d.slp",
        model_paths=["/vast/m1", "/vast/m2"],
        frames="0-100,500-600",
        peak_threshold=0.3,
    )
    assert spec.output_path == "predictions.slp"
    assert parse_spec(json.loads(spec.model_dump_json())) == spec


def test_every_structural_problem_is_reported() -> None:
    with pytest.raises(JobRejected) as info:
        parse_spec({"kind": "train", "config_paths": [], "max_epoch": 3, "batch_size": "big"})
    by_field = {p.field: p for p in info.value.problems}
    assert by_field["config_paths"].code is ProblemCode.OUT_OF_RANGE
    assert by_field["max_epoch"].code is ProblemCode.UNKNOWN_FIELD
    assert by_field["batch_size"].code is ProblemCode.INVALID_TYPE
    assert by_field["batch_size"].value == "big"


def test_missing_required_and_bad_kind() -> None:
    with pytest.raises(JobRejected) as info:
        parse_spec({"kind": "track"})
    fields = {p.field: p.code for p in info.value.problems}
    assert fields == {
        "data_path": ProblemCode.MISSING_FIELD,
        "model_paths": ProblemCode.MISSING_FIELD,
    }
    with pytest.raises(JobRejected) as info:
        parse_spec({"kind": "predict"})
    assert info.value.problems[0].field == "kind"
    assert "train" in info.value.problems[0].message


@pytest.mark.parametrize("payload", ["not json", "[1, 2]", "x" * (MAX_SPEC_BYTES + 1)])
def test_garbage_is_rejected_cleanly(payload: str) -> None:
    with pytest.raises(JobRejected) as info:
        parse_spec(payload)
    assert info.value.problems[0].field == "spec"
