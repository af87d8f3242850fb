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


def test_the_option_table_names_every_spec_field_with_its_type() -> None:
    """Flags, job-file keys and ranges come from one table: it must match the specs."""
    from types import UnionType
    from typing import get_args, get_origin

    from sleap_rtc.jobs.options import options_for

    for model in (TrainSpec, TrackSpec):
        kind = model.model_fields["kind"].default
        table = {o.field: o for o in options_for(kind)}
        assert set(table) == set(model.model_fields) - {"kind", "version"}
        for name, option in table.items():
            info = model.model_fields[name]
            annotation = info.annotation
            if isinstance(annotation, UnionType):  # "int | None": the type is the other one
                (annotation,) = [t for t in get_args(annotation) if t is not type(None)]
            if option.multiple:
                assert get_origin(annotation) is list, name
                (annotation,) = get_args(annotation)
            if option.nargs > 1:  # a tuple of nargs values
                assert get_args(annotation) == (option.value_type,) * option.nargs, name
                annotation = option.value_type
            assert annotation is option.value_type, name
            assert option.required == info.is_required(), name


def test_a_spec_file_s_relative_paths_are_anchored_to_its_folder() -> None:
    from pathlib import Path

    from sleap_rtc.jobs.specs import anchored

    spec = TrackSpec(
        data_path="/vast/d.slp",
        model_paths=["../centroid/model", "/vast/m"],
        output_path="predictions.slp",
        frames="0-9",
    )
    moved = anchored(spec, Path("/runs/topdown/mice/track"))
    assert moved.model_paths == ["/runs/topdown/mice/centroid/model", "/vast/m"]
    assert moved.output_path == "/runs/topdown/mice/track/predictions.slp"
    assert moved.data_path == "/vast/d.slp" and moved.frames == "0-9"
