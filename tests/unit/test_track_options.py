"""The sleap-nn inference options of a track job: table, spec, checks and argv."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sleap_rtc.cli.options import click_option
from sleap_rtc.engine.commands import build_track_job
from sleap_rtc.jobs.mounts import Mount, Mounts
from sleap_rtc.jobs.options import job_file_options, option, options_for
from sleap_rtc.jobs.problems import JobRejected, ProblemCode
from sleap_rtc.jobs.specs import TrackSpec
from sleap_rtc.jobs.validation import TRACKER_FIELDS, TrackPlan, check_fields, plan_track
from sleap_rtc.pipeline.extra_args import check_args as _check_args
from tests.labels import write_labels

NEW = (
    "only_labeled_frames",
    "exclude_user_labeled",
    "only_predicted_frames",
    "max_instances",
    "input_scale",
    "video_dataset",
    "video_input_format",
    "output_format",
    "filter_overlapping",
    "filter_overlapping_method",
    "filter_overlapping_threshold",
    "filter_min_visible_nodes",
    "filter_min_visible_node_fraction",
    "filter_min_mean_node_score",
    "filter_min_instance_score",
    "filter_min_centroid_distance",
    *TRACKER_FIELDS,
    "tracking",
)


def _predict_params() -> dict[str, click.Parameter]:
    from sleap_nn.cli import cli

    command = cli.commands["predict"]  # type: ignore[attr-defined]
    return {o.lstrip("-"): p for p in command.params for o in p.opts}


def test_every_new_option_is_a_sleap_nn_predict_option_of_the_same_name() -> None:
    params = _predict_params()
    for name in NEW:
        entry = option("track", name)
        assert entry.flag == "--" + name.replace("_", "-"), name
        assert entry.help and entry.job_file, name
        assert name in params, f"sleap-nn predict has no --{name}"
        if isinstance(params[name].type, click.Choice):
            assert entry.choices == tuple(params[name].type.choices), name
        if params[name].is_flag if isinstance(params[name], click.Option) else False:
            assert entry.value_type is bool, name
    # candidates_method is free text in sleap-nn; its tracker knows these two.
    assert option("track", "candidates_method").choices == ("fixed_window", "local_queues")


def test_job_files_may_set_the_new_options_but_no_path() -> None:
    allowed = job_file_options("track")
    assert set(NEW) <= set(allowed)
    assert not [o.field for o in options_for("track") if o.path and o.job_file]


def test_a_choice_is_a_click_choice_with_its_values_in_help() -> None:
    @click.command()
    @click_option(option("track", "output_format"))
    @click_option(option("track", "candidates_method"))
    def cmd(**kw: object) -> None:
        click.echo(repr(sorted(kw.items())))

    runner = CliRunner()
    shown = runner.invoke(cmd, ["--help"]).output
    assert "slp|analysis_h5" in shown and "fixed_window|local_queues" in shown
    assert "[default: slp]" in shown
    bad = runner.invoke(cmd, ["--output-format", "csv"])
    assert bad.exit_code == 2 and "'csv' is not one of 'slp', 'analysis_h5'" in bad.output
    good = runner.invoke(cmd, ["--output-format", "analysis_h5"])
    assert "('output_format', 'analysis_h5')" in good.output


def _spec(**kw: object) -> TrackSpec:
    return TrackSpec(data_path="/d/x.slp", model_paths=["/m"], **kw)  # type: ignore[arg-type]


def _found(spec: TrackSpec) -> dict[str, tuple[ProblemCode, str]]:
    return {p.field: (p.code, p.message) for p in check_fields(spec)}


def test_choices_and_ranges_are_checked_all_at_once() -> None:
    found = _found(
        _spec(
            output_format="csv",
            video_input_format="nhwc",
            tracking=True,
            candidates_method="window",
            max_tracks=0,
            input_scale=0.0,
            filter_overlapping=True,
            filter_overlapping_threshold=1.5,
            max_instances=-1,
        )
    )
    assert found["output_format"] == (
        ProblemCode.INVALID_VALUE,
        "output_format is 'csv'; it must be one of slp, analysis_h5 (--output-format)",
    )
    assert found["video_input_format"][0] is ProblemCode.INVALID_VALUE
    assert "fixed_window, local_queues" in found["candidates_method"][1]
    assert found["max_tracks"] == (
        ProblemCode.OUT_OF_RANGE,
        "max_tracks is 0; it must be between 1 and 10000",
    )
    assert found["input_scale"][0] is ProblemCode.OUT_OF_RANGE
    assert found["filter_overlapping_threshold"][0] is ProblemCode.OUT_OF_RANGE
    assert found["max_instances"][0] is ProblemCode.OUT_OF_RANGE


def test_tracker_options_without_tracking_are_conflicts_naming_both() -> None:
    found = _found(
        _spec(
            max_tracks=2,
            tracking_window_size=10,
            candidates_method="local_queues",
            track_matching_method="greedy",
            use_flow=True,
            tracking_target_instance_count=2,
            post_connect_single_breaks=True,
        )
    )
    assert set(found) == set(TRACKER_FIELDS)
    for name, (code, message) in found.items():
        assert code is ProblemCode.CONFLICT
        assert message.startswith(f"{name} is a tracker option and tracking is off")
        assert "--tracking" in message
    assert not _found(
        _spec(tracking=True, max_tracks=2, use_flow=True, tracking_target_instance_count=2)
    )


def test_what_sleap_nn_refuses_or_ignores_is_a_conflict() -> None:
    found = _found(
        _spec(
            tracking=True,
            max_tracks=2,
            candidates_method="fixed_window",
            post_connect_single_breaks=True,
            only_labeled_frames=True,
            exclude_user_labeled=True,
            filter_overlapping_method="oks",
        )
    )
    assert "local_queues" in found["candidates_method"][1]
    assert "--tracking-target-instance-count" in found["post_connect_single_breaks"][1]
    assert "leave no frames" in found["exclude_user_labeled"][1]
    assert "--filter-overlapping" in found["filter_overlapping_method"][1]
    assert all(code is ProblemCode.CONFLICT for code, _ in found.values())
    two = _found(_spec(only_suggested_frames=True, only_predicted_frames=True))
    assert "applies only one (only_suggested_frames" in two["only_predicted_frames"][1]
    # max_instances gives sleap-nn the count post_connect_single_breaks needs.
    assert not _found(_spec(tracking=True, post_connect_single_breaks=True, max_instances=2))


def _plan(spec: TrackSpec, output: str = "/d/out.slp") -> TrackPlan:
    return TrackPlan(
        spec=spec,
        data_path=Path(spec.data_path),
        model_paths=[Path(m) for m in spec.model_paths],
        output_path=Path(output),
        frames=None,
    )


def test_set_options_reach_sleap_nn_predict_under_its_names() -> None:
    spec = _spec(
        tracking=True,
        max_tracks=3,
        tracking_window_size=7,
        candidates_method="local_queues",
        use_flow=True,
        post_connect_single_breaks=True,
        max_instances=3,
        filter_overlapping=True,
        filter_overlapping_method="oks",
        filter_overlapping_threshold=0.5,
        input_scale=0.25,
        only_labeled_frames=True,
    )
    [step] = build_track_job(_plan(spec), job_id="j", sleap_nn=["sleap-nn"]).steps
    argv = step.argv
    assert argv[:2] == ["sleap-nn", "predict"] and "--gui" in argv
    for flag in ("--tracking", "--use_flow", "--post_connect_single_breaks"):
        after = argv[argv.index(flag) + 1 :]
        assert not after or after[0].startswith("--"), flag
    pairs = {argv[i]: argv[i + 1] for i in range(len(argv) - 1)}
    assert pairs["--max_tracks"] == "3" and pairs["--tracking_window_size"] == "7"
    assert pairs["--candidates_method"] == "local_queues"
    assert pairs["--filter_overlapping_method"] == "oks"
    assert pairs["--filter_overlapping_threshold"] == "0.5"
    assert pairs["--input_scale"] == "0.25" and pairs["--max_instances"] == "3"
    assert "--only_labeled_frames" in argv and "--output_format" not in argv
    assert "--exclude_user_labeled" not in argv and "--track_matching_method" not in argv
    # Every flag given is one sleap-nn predict knows.
    params = _predict_params()
    assert all(a[2:] in params for a in argv[2:] if a.startswith("--"))


def test_analysis_h5_output_is_the_file_sleap_nn_writes() -> None:
    spec = _spec(output_format="analysis_h5")
    plan = _plan(spec, "/d/mice.analysis.h5")
    [step] = build_track_job(plan, job_id="j", sleap_nn=["sleap-nn"]).steps
    argv = step.argv
    assert argv[argv.index("--output_format") + 1] == "analysis_h5"
    # sleap-nn strips ".predictions.slp" and adds ".analysis.h5".
    assert argv[argv.index("--output_path") + 1] == "/d/mice.predictions.slp"
    assert step.output == Path("/d/mice.analysis.h5")


@pytest.fixture()
def mount(tmp_path: Path) -> Path:
    root = tmp_path / "mount"
    write_labels(root / "data.slp", frames=20)
    (root / "model").mkdir()
    (root / "model" / "training_config.yaml").write_text("x: 1\n")
    (root / "model" / "best.ckpt").write_bytes(b"x")
    return root


def _track(mount: Path, **kw: object) -> TrackPlan:
    fields: dict[str, object] = {"data_path": str(mount / "data.slp"), **kw}
    spec = TrackSpec(model_paths=[str(mount / "model")], **fields)  # type: ignore[arg-type]
    return plan_track(spec, Mounts([Mount.create(mount, "data")]))


def _rejected(mount: Path, **kw: object) -> dict[str, tuple[ProblemCode, str]]:
    with pytest.raises(JobRejected) as caught:
        _track(mount, **kw)
    return {p.field: (p.code, p.message) for p in caught.value.problems}


@pytest.mark.parametrize(
    ("output", "written"),
    [
        ("predictions.slp", "predictions.analysis.h5"),
        ("mice.predictions.slp", "mice.analysis.h5"),
        ("mice.analysis.h5", "mice.analysis.h5"),
    ],
)
def test_analysis_h5_output_lands_beside_the_data(mount: Path, output: str, written: str) -> None:
    plan = _track(mount, output_format="analysis_h5", output_path=output)
    assert plan.output_path == mount / written


def test_output_rules_hold_for_the_analysis_file(mount: Path) -> None:
    (mount / "predictions.slp").write_bytes(b"x")  # not what analysis_h5 writes
    assert _track(mount, output_format="analysis_h5").output_path.name == (
        "predictions.analysis.h5"
    )
    (mount / "predictions.analysis.h5").write_bytes(b"x")
    found = _rejected(mount, output_format="analysis_h5")
    assert found["output_path"][0] is ProblemCode.OUTPUT_EXISTS
    assert "predictions.analysis.h5 already exists" in found["output_path"][1]
    assert _track(mount, output_format="analysis_h5", overwrite=True).output_path.is_file()
    (mount / "linked.analysis.h5").symlink_to(mount / "predictions.analysis.h5")
    found = _rejected(mount, output_format="analysis_h5", output_path="linked.slp", overwrite=True)
    assert found["output_path"][0] is ProblemCode.INVALID_PATH
    found = _rejected(mount, output_format="analysis_h5", output_path="mice.csv")
    assert "must end in .slp or .analysis.h5" in found["output_path"][1]
    assert "must end in .slp" in _rejected(mount, output_path="x.analysis.h5")["output_path"][1]


def test_label_filters_and_hdf5_options_need_the_right_data(mount: Path) -> None:
    video = str(mount / "data.mp4")
    found = _rejected(
        mount,
        data_path=video,
        only_labeled_frames=True,
        only_predicted_frames=True,
        video_dataset="/box",
    )
    for name in ("only_labeled_frames", "only_predicted_frames", "video_dataset"):
        assert found[name][0] is ProblemCode.CONFLICT, name
    assert "is a video (give the .slp" in found["only_labeled_frames"][1]
    assert "HDF5 videos" in found["video_dataset"][1]
    # On a labels file the filters are fine.
    assert _track(mount, exclude_user_labeled=True, tracking=True, max_tracks=2).spec.tracking


def test_a_job_file_s_choice_is_checked_against_the_table() -> None:
    allowed = job_file_options("track")
    found = {
        p.field: p
        for p in _check_args(
            {"output_format": "csv", "tracking": True, "max_tracks": "2"}, allowed, "extra_args"
        )
    }
    assert found["extra_args.output_format"].code is ProblemCode.INVALID_VALUE
    assert "must be one of slp, analysis_h5" in found["extra_args.output_format"].message
    assert found["extra_args.max_tracks"].code is ProblemCode.INVALID_TYPE
    assert "extra_args.tracking" not in found
