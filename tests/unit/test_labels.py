"""The worker reads what is inside labels and videos before it accepts a job."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sleap_rtc.jobs.mounts import Mount, Mounts
from sleap_rtc.jobs.problems import JobRejected, Problem, ProblemCode
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.jobs.validation import plan_track, plan_train
from tests.labels import write_labels

CONFIG = """\
data_config:
  train_labels_path: [{labels}]
model_config: {{backbone_config: {{unet: {{}}}}, head_configs: {{single_instance: {{}}}}}}
trainer_config:
  max_epochs: 1
"""


@pytest.fixture()
def mount(tmp_path: Path) -> Path:
    folder = tmp_path / "mount"
    folder.mkdir()
    return folder


@pytest.fixture()
def mounts(mount: Path) -> Mounts:
    return Mounts([Mount.create(mount, "data")])


def _model(mount: Path) -> str:
    model = mount / "model"
    model.mkdir()
    (model / "training_config.yaml").write_text("x: 1\n")
    (model / "best.ckpt").write_bytes(b"x")
    return str(model)


def _rejected(fn, spec, mounts: Mounts) -> list[Problem]:  # type: ignore[no-untyped-def]
    with pytest.raises(JobRejected) as info:
        fn(spec, mounts)
    return info.value.problems


def _config(mount: Path, labels: Path) -> str:
    config = mount / "config.yaml"
    config.write_text(CONFIG.format(labels=labels))
    return str(config)


@pytest.mark.parametrize("stored", ["/Volumes/lab/session1.mp4", "C:\\Users\\ana\\s1.mp4"])
def test_labels_made_on_another_machine_name_the_missing_video(
    mount: Path, mounts: Mounts, stored: str
) -> None:
    labels = write_labels(mount / "laptop.slp", video=stored)
    [problem] = _rejected(plan_train, TrainSpec(config_paths=[_config(mount, labels)]), mounts)
    assert problem.code is ProblemCode.VIDEO_NOT_FOUND
    # sleap-io reads Windows paths with forward slashes.
    shown = stored.replace("\\", "/")
    assert problem.field == "labels_path.videos[0]" and problem.value == shown
    assert f"video 0 of {labels} is {shown}" in problem.message


def test_a_video_outside_the_mounts_is_refused(tmp_path: Path, mount: Path, mounts: Mounts) -> None:
    elsewhere = write_labels(tmp_path / "elsewhere" / "x.slp")
    labels = mount / "labels.slp"
    shutil.copy(elsewhere, labels)  # its video stays outside the mount
    [problem] = _rejected(plan_train, TrainSpec(config_paths=[_config(mount, labels)]), mounts)
    assert problem.code is ProblemCode.VIDEO_NOT_FOUND
    assert "not in any folder this worker mounts" in problem.message


def test_a_corrupt_file_and_a_video_as_labels(mount: Path, mounts: Mounts) -> None:
    corrupt = mount / "corrupt.slp"
    corrupt.write_bytes(b"\x89HDF\r\n" + b"\0" * 64)
    video = write_labels(mount / "v.slp").with_suffix(".mp4")
    spec = TrainSpec(
        config_paths=[_config(mount, corrupt)], labels_path=str(corrupt), val_labels_path=str(video)
    )
    problems = _rejected(plan_train, spec, mounts)
    assert [(p.field, p.code) for p in problems] == [
        ("labels_path", ProblemCode.LABELS_INVALID),
        ("val_labels_path", ProblemCode.WRONG_FILE_TYPE),
    ]
    assert "is not a SLEAP labels file sleap-io can read" in problems[0].message


def test_a_labels_file_shared_by_two_configs_is_reported_once(mount: Path, mounts: Mounts) -> None:
    labels = write_labels(mount / "laptop.slp", video="/Volumes/lab/s1.mp4")
    config = _config(mount, labels)
    second = mount / "second.yaml"
    shutil.copy(config, second)
    problems = _rejected(plan_train, TrainSpec(config_paths=[config, str(second)]), mounts)
    assert [p.code for p in problems] == [ProblemCode.VIDEO_NOT_FOUND]


def test_track_frames_video_index_and_suggestions_fit_the_data(mount: Path, mounts: Mounts) -> None:
    data = write_labels(mount / "session.slp", frames=166)
    spec = TrackSpec(data_path=str(data), model_paths=[_model(mount)], frames="0-10,160-400")
    [frames] = _rejected(plan_track, spec, mounts)
    assert (frames.field, frames.code) == ("frames", ProblemCode.FRAMES_INVALID)
    assert "160-400 go past the end of video 0" in frames.message
    assert "which has 166 frames (0-165)" in frames.message
    [index] = _rejected(plan_track, spec.model_copy(update={"video_index": 3}), mounts)
    assert index.field == "video_index" and "it has 1 video(s)" in index.message
    assert plan_track(spec.model_copy(update={"frames": "0-165"}), mounts).frames is not None
    suggested_only = spec.model_copy(update={"frames": None, "only_suggested_frames": True})
    [none] = _rejected(plan_track, suggested_only, mounts)
    assert none.field == "only_suggested_frames" and "has no suggested frames" in none.message
    suggested = write_labels(mount / "suggested.slp", suggestions=2)
    assert plan_track(suggested_only.model_copy(update={"data_path": str(suggested)}), mounts)


def test_track_on_a_raw_video_checks_frames_and_refuses_labels_options(
    mount: Path, mounts: Mounts
) -> None:
    video = write_labels(mount / "clip.slp", frames=20).with_suffix(".mp4")
    spec = TrackSpec(
        data_path=str(video), model_paths=[_model(mount)], frames="15-25", video_index=0
    )
    problems = _rejected(plan_track, spec, mounts)
    assert [(p.field, p.code) for p in problems] == [
        ("video_index", ProblemCode.CONFLICT),
        ("frames", ProblemCode.FRAMES_INVALID),
    ]
    assert "which has 20 frames" in problems[1].message
    suggested = spec.model_copy(update={"frames": None, "video_index": None})
    [only] = _rejected(
        plan_track, suggested.model_copy(update={"only_suggested_frames": True}), mounts
    )
    assert only.field == "only_suggested_frames" and "is a video" in only.message
    assert plan_track(suggested, mounts)


def test_a_long_stored_video_path_is_echoed_cut_short(mount: Path, mounts: Mounts) -> None:
    stored = "/Volumes/" + "x" * 5000 + ".mp4"
    labels = write_labels(mount / "long.slp", video=stored)
    [problem] = _rejected(plan_train, TrainSpec(config_paths=[_config(mount, labels)]), mounts)
    assert problem.code is ProblemCode.VIDEO_NOT_FOUND
    assert problem.value is not None and len(problem.value) == 1024
    assert len(problem.message) < 1600


# -- video path maps ------------------------------------------------------------------


def _video(folder: Path, name: str = "s1.mp4") -> Path:
    """A real video at ``folder/name`` (made as the labels' neighbour, then kept)."""
    made = write_labels(folder / "made.slp")
    video = folder / name
    made.with_suffix(".mp4").rename(video)
    made.unlink()
    return video


@pytest.mark.parametrize(
    ("stored", "old"),
    [
        ("/Volumes/lab/mice/s1.mp4", "/Volumes/lab"),
        ("C:\\Users\\ana\\mice\\s1.mp4", "C:\\Users\\ana"),
        ("C:\\Users\\ana\\mice\\s1.mp4", "c:/users/ana/"),
    ],
)
@pytest.mark.parametrize("given_by", ["job", "worker"])
def test_a_path_map_finds_the_videos_of_labels_made_elsewhere(
    mount: Path, mounts: Mounts, stored: str, old: str, given_by: str
) -> None:
    from sleap_rtc.jobs.labels import read_labels, write_remapped
    from sleap_rtc.jobs.pathmaps import PathMap

    video = _video(mount / "data" / "mice")
    labels = write_labels(mount / "laptop.slp", video=stored)
    before = labels.read_bytes()
    pair = (old, str(mount / "data"))
    spec = TrainSpec(
        config_paths=[_config(mount, labels)], path_map=[pair] if given_by == "job" else []
    )
    plan = plan_train(spec, mounts, [PathMap(*pair, "worker")] if given_by == "worker" else [])
    assert plan.video_maps == {labels: {stored.replace("\\", "/"): str(video)}}
    copy = mount / "work" / "copy.slp"
    write_remapped(labels, plan.video_maps[labels], copy)
    assert read_labels(copy).videos[0].stored == str(video)
    assert labels.read_bytes() == before  # the user's file is never changed


def test_a_map_to_nowhere_names_the_map_and_a_map_out_of_the_mounts_is_refused(
    tmp_path: Path, mount: Path, mounts: Mounts
) -> None:
    outside = _video(tmp_path / "outside")
    labels = write_labels(mount / "laptop.slp", video="/Volumes/lab/s1.mp4")
    for target in (str(mount / "nothing"), str(outside.parent)):
        spec = TrainSpec(config_paths=[_config(mount, labels)], path_map=[("/Volumes/lab", target)])
        [problem] = _rejected(plan_train, spec, mounts)
        assert problem.code is ProblemCode.VIDEO_NOT_FOUND
        assert f"the path map /Volumes/lab → {target} makes {target}/s1.mp4" in problem.message
        assert "not a file in any folder this worker mounts" in problem.message


def test_bad_maps_are_refused_with_the_rest(mount: Path, mounts: Mounts) -> None:
    labels = write_labels(mount / "laptop.slp", video="/Volumes/lab/s1.mp4")
    spec = TrainSpec(config_paths=[_config(mount, labels)], path_map=[("/Volumes/lab", "rel")])
    problems = _rejected(plan_train, spec, mounts)
    assert [p.code for p in problems] == [ProblemCode.INVALID_VALUE, ProblemCode.VIDEO_NOT_FOUND]
    assert problems[0].field == "path_map[0]"


def test_a_video_beside_the_labels_or_relative_to_them_is_read_at_its_checked_path(
    mount: Path, mounts: Mounts
) -> None:
    beside = _video(mount)
    nested = _video(mount / "videos", "s2.mp4")
    foreign = write_labels(mount / "a.slp", video="C:\\Users\\ana\\s1.mp4")
    relative = write_labels(mount / "b.slp", video="videos/s2.mp4")
    plan = plan_train(
        TrainSpec(config_paths=[_config(mount, foreign)], val_labels_path=str(relative)), mounts
    )
    assert plan.video_maps == {
        foreign: {"C:/Users/ana/s1.mp4": str(beside)},
        relative: {"videos/s2.mp4": str(nested)},
    }


def test_track_reads_a_remapped_copy_in_the_jobs_folder(mount: Path, mounts: Mounts) -> None:
    from sleap_rtc.engine.commands import build_track_job
    from sleap_rtc.jobs.labels import read_labels

    video = _video(mount / "data")
    labels = write_labels(mount / "laptop.slp", video="/Volumes/lab/s1.mp4")
    spec = TrackSpec(
        data_path=str(labels),
        model_paths=[_model(mount)],
        path_map=[("/Volumes/lab", str(mount / "data"))],
    )
    plan = plan_track(spec, mounts)
    work = mount / "work"
    job = build_track_job(plan, job_id="j1", work_dir=work)
    argv = job.steps[0].argv
    copy = Path(argv[argv.index("--data_path") + 1])
    assert copy.parent == work / "labels" and copy.name.endswith("laptop.slp")
    assert read_labels(copy).videos[0].stored == str(video)
    # The output stays beside the user's labels, not the copy.
    assert argv[argv.index("--output_path") + 1] == str(mount / "predictions.slp")


def test_train_reads_a_remapped_copy_and_a_dry_run_writes_none(mount: Path, mounts: Mounts) -> None:
    from sleap_rtc.engine.commands import build_train_job

    _video(mount / "data")
    labels = write_labels(mount / "laptop.slp", video="/Volumes/lab/s1.mp4")
    spec = TrainSpec(
        config_paths=[_config(mount, labels)], path_map=[("/Volumes/lab", str(mount / "data"))]
    )
    plan = plan_train(spec, mounts)
    dry = build_train_job(plan, job_id="j1", models_dir=mount / "models")
    assert dry.steps[0].config["data_config"]["train_labels_path"] == ["<work>/labels/1-laptop.slp"]
    work = mount / "work"
    job = build_train_job(plan, job_id="j1", models_dir=mount / "models", work_dir=work)
    [copy] = job.steps[0].config["data_config"]["train_labels_path"]
    assert copy == str(work / "labels" / "1-laptop.slp") and Path(copy).is_file()


def test_the_worker_names_a_missing_video_found_by_name_and_the_map_that_uses_it(
    tmp_path: Path, mount: Path
) -> None:
    import shlex

    from sleap_rtc.worker.config import WorkerConfig
    from sleap_rtc.worker.planning import JobPlanner

    video = _video(mount / "lab videos" / "mice")
    labels = write_labels(mount / "laptop.slp", video="C:\\Users\\ana\\mice\\s1.mp4")
    planner = JobPlanner(
        WorkerConfig(mounts=[{"path": str(mount), "label": "data"}], state_dir=tmp_path / "s")
    )
    spec = TrainSpec(config_paths=[_config(mount, labels)])
    with pytest.raises(JobRejected) as info:
        planner.plan(spec, None)
    [problem] = info.value.problems
    new = str(mount / "lab videos")
    assert problem.message.endswith(
        f"found by name on this worker: {video} — to use it, add --path-map "
        f"C:/Users/ana {shlex.quote(new)}"
    )
    fixed = spec.model_copy(update={"path_map": [("C:/Users/ana", new)]})
    plan = planner.plan(fixed, None)
    assert plan.video_maps == {
        labels: {"C:/Users/ana/s1.mp4".replace("ana/", "ana/mice/"): str(video)}
    }
