"""Track over several files as one array job: the registry's lists and globs, the
array's shape under MaxArraySize, per-file outputs and reruns, per-task states.

The real-SLURM proof (a 3-file array with ``%2``, chunking, a rerun of one file) is
in ``tests/e2e/test_pipeline_arrays.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sleap_rtc.engine.backends.slurm.tools import (
    SlurmClient,
    parse_max_array_size,
    parse_sacct_details,
    parse_squeue_details,
    task_counts,
)
from sleap_rtc.jobs.problems import JobRejected
from sleap_rtc.pipeline.inputs import changes, file_inputs, inputs_key
from sleap_rtc.pipeline.manifest import write_manifest
from sleap_rtc.pipeline.run import plan, submit
from sleap_rtc.pipeline.sbatch import ArrayShape, Layout, file_folders
from sleap_rtc.pipeline.scripts import generate
from sleap_rtc.pipeline.spec import load_job
from tests.labels import write_labels
from tests.unit.test_pipeline_driver import FakeSlurm

FILES = ("videos/a/s1.slp", "videos/a/s2.slp", "videos/b/s1.slp")


class SmallArrays(FakeSlurm):
    """A cluster whose MaxArraySize is ``size``."""

    def __init__(self, size: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.size = size

    def max_array_size(self) -> int:
        return self.size


def array_lab(root: Path) -> Path:
    """Labels, the three files of :data:`FILES` for track (a glob in the registry), and
    a pinned model for it to use (its weights a stand-in: nothing here loads them)."""
    write_labels(root / "labels.slp")
    for name in FILES:
        write_labels(root / name)
    model = root / "pinned" / "model"
    model.mkdir(parents=True)
    (model / "best.ckpt").write_text("weights")
    write_manifest(root / "pinned", job="old", dataset="mice", stage="centroid", models=["model"])
    registry = {"mice": {"labels": "labels.slp", "track": ["videos/*/*.slp"]}}
    (root / "datasets.json").write_text(json.dumps(registry))
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return array_lab(tmp_path)


def job(project: Path, **extra: Any) -> Path:
    spec = {
        "name": "arr",
        "datasets": ["mice"],
        "training_types": ["track"],
        "dependency_manifests": {"track": "pinned/manifest.json"},
        "array_parallelism": 2,
        **extra,
    }
    (project / "job.json").write_text(json.dumps(spec))
    return project / "job.json"


def test_a_registry_track_list_or_glob_names_the_files_in_order(project: Path) -> None:
    stage = load_job(job(project)).by_key()["mice/track"]
    assert stage.files == tuple((project / f).resolve() for f in FILES)
    assert stage.array_parallelism == 2
    # A list keeps its order, each file once; a glob that matches nothing is a problem.
    registry = {
        "mice": {"labels": "labels.slp", "track": ["videos/b/s1.slp", "videos/*/*.slp"]},
        "flies": {"labels": "labels.slp", "track": ["videos/*.mp4", "nowhere.slp"]},
    }
    (project / "datasets.json").write_text(json.dumps(registry))
    with pytest.raises(JobRejected) as caught:
        load_job(job(project, datasets=["mice", "flies"]))
    found = {p.field: p.message for p in caught.value.problems}
    assert "matches no file" in found["datasets_registry.flies.track[0]"]
    assert "Path not found" in found["datasets_registry.flies.track[1]"]
    stage = load_job(job(project)).by_key()["mice/track"]
    assert [f.relative_to(project).as_posix() for f in stage.files] == [
        "videos/b/s1.slp",
        "videos/a/s1.slp",
        "videos/a/s2.slp",
    ]


def test_array_parallelism_is_for_track_only_and_an_array_is_not_retried(project: Path) -> None:
    with pytest.raises(JobRejected) as caught:
        load_job(job(project, stages={"centroid": {"array_parallelism": 4}}))
    fields = {p.field for p in caught.value.problems}
    assert "stages.centroid.array_parallelism" in fields
    with pytest.raises(JobRejected) as caught:
        load_job(job(project, stages={"track": {"retries": 2}}))
    (problem,) = caught.value.problems
    assert problem.field == "stages.track.retries" and "dataset 'mice'" in problem.message


def test_the_array_fits_under_max_array_size_and_names_its_tasks() -> None:
    assert ArrayShape.fit(3, 1001) == ArrayShape(3, 1)
    small = ArrayShape.fit(5, 2)  # task ids 0, 1 only: three files per task
    assert (small.per_task, small.tasks, small.task_of(4)) == (3, 2, 1)
    assert ArrayShape(10, 1).option(parallelism=4) == "--array=0-9%4"
    assert ArrayShape(10, 1).option([7, 1, 2, 3, 9]) == "--array=1-3,7,9"
    assert parse_max_array_size("MaxArraySize            = 40\nMaxJobCount = 9") == 40
    assert parse_max_array_size("nothing here") == 1001
    paths = [Path("/a/s1.mp4"), Path("/b/s1.mp4"), Path("/c/my video.mp4"), Path("/d/s1.slp")]
    assert file_folders(paths) == ["a_s1", "b_s1", "my_video", "d_s1"]
    assert file_folders([Path("/x/a/s1.mp4"), Path("/y/a/s1.mp4")]) == ["a_s1", "a_s1-2"]


def test_the_script_is_one_array_job_each_task_tracking_its_files(project: Path) -> None:
    pipeline = load_job(job(project))
    (item,) = generate(pipeline, Layout.under(project / "run"), slurm=SmallArrays(2))
    text = item.script.read_text()
    assert "#SBATCH --array=0-1%2" in text  # 3 files over 2 tasks: 2, then 1
    assert "PER_TASK=2" in text and "track-%A_%a.out" in text
    for file in FILES:
        assert str((project / file).resolve()) in text
    assert '--file "$i"' in text and '"$ARTIFACTS"/spec.json."$TASK"' in text
    assert item.shape == ArrayShape(3, 2)


def finish_files(project: Path, indices: list[int], stage_name: str = "track") -> None:
    """What the array's tasks leave for these files: outputs and a manifest."""
    pipeline = load_job(project / "job.json")
    layout = Layout.under(project / "run")
    stage = pipeline.by_key()[f"mice/{stage_name}"]
    meta = json.loads(layout.meta(stage).read_text())
    folders = layout.file_dirs(stage)
    output = "predictions.slp" if stage_name == "track" else "size.txt"
    for index in indices:
        folders[index].mkdir(parents=True, exist_ok=True)
        (folders[index] / output).write_text("made")
        write_manifest(
            folders[index],
            job="arr",
            dataset="mice",
            stage=stage_name,
            models=[],
            outputs=[output],
            inputs=file_inputs(meta["inputs"], index),
        )


def test_a_rerun_submits_only_the_tasks_whose_files_are_not_current(project: Path) -> None:
    path = job(project)
    layout = Layout.under(project / "run")
    fake = FakeSlurm(polls=0, dependencies=True)
    (first,) = submit(load_job(path), layout, slurm=fake)
    assert first.action == "submitted" and fake.options[str(first.job_id)] == []
    finish_files(project, [0, 1, 2])
    (step,) = plan(load_job(path), layout, slurm=fake)
    assert (step.action, step.reason) == ("skip", "its outputs are current (3 files)")

    # One file changes: its task alone runs; the others' outputs stay current.
    write_labels(project / FILES[2], frames=14)
    (step,) = plan(load_job(path), layout, slurm=fake)
    assert step.action == "run" and step.tasks == (2,)
    assert step.reason == "1 of 3 files: s1.slp: data changed (s1.slp)"
    (again,) = submit(load_job(path), layout, slurm=fake)
    assert fake.options[str(again.job_id)] == ["--array=2%2"]

    # A file added to the list: only it is new (the others keep their folders).
    write_labels(project / "videos" / "b" / "s3.slp")
    finish_files(project, [2])
    (step,) = plan(load_job(path), layout, slurm=fake)
    assert step.tasks == (3,) and step.reason == "1 of 4 files: s3.slp: not run yet"


def test_a_file_s_inputs_do_not_depend_on_its_place_in_the_list(project: Path) -> None:
    inputs = {
        "version": 1,
        "job": {"data_path": "/a", "batch_size": 4},
        "files": {"data[0]": {"path": "/a", "id": "1"}, "data[1]": {"path": "/b", "id": "2"}},
        "pinned": None,
        "parents": {},
    }
    moved = {**inputs, "files": {"data[0]": inputs["files"]["data[1]"]}}
    assert inputs_key(file_inputs(inputs, 1)) == inputs_key(file_inputs(moved, 0))
    assert file_inputs(inputs, 1)["job"] == {"data_path": "/b", "batch_size": 4}
    assert file_inputs(inputs, 1)["files"] == {"data": {"path": "/b", "id": "2"}}


def test_what_changed_among_the_tracked_files_is_said_by_path() -> None:
    def files(*pairs: tuple[str, str]) -> dict[str, Any]:
        return {f"data[{i}]": {"path": p, "id": v} for i, (p, v) in enumerate(pairs)}

    def said(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
        base = {"version": 1, "job": {}, "pinned": None, "parents": {}}
        return changes({**base, "files": old}, {**base, "files": new})

    one = {"data": {"path": "/v/labels.slp", "id": "1"}}
    three = files(("/v/a.mp4", "1"), ("/v/b.mp4", "2"), ("/v/c.mp4", "3"))
    assert said(one, three) == [
        "3 file(s) to track added (a.mp4, b.mp4, c.mp4)",
        "1 file(s) to track removed (labels.slp)",
    ]
    moved = files(("/v/new.mp4", "9"), ("/v/a.mp4", "1"), ("/v/b.mp4", "5"), ("/v/c.mp4", "3"))
    assert said(three, moved) == ["1 file(s) to track added (new.mp4)", "data changed (b.mp4)"]
    assert said(one, {"data": {"path": "/v/labels.slp", "id": "2"}}) == [
        "data changed (labels.slp)"
    ]


SACCT_ARRAY = """\
41_0|COMPLETED|0:0|None|00:00:03|00:05:00|100M
41_1|FAILED|3:0|NonZeroExitCode|00:00:02|00:05:00|100M
41_2|RUNNING|0:0|None|00:00:01|00:05:00|100M
41_[3-5%2]|PENDING|0:0|JobArrayTaskLimit|00:00:00|00:05:00|100M
42|COMPLETED|0:0|None|00:00:09|00:05:00|100M
"""


def test_an_array_s_tasks_fold_into_one_state_with_each_task_kept() -> None:
    found = parse_sacct_details(SACCT_ARRAY, ["41", "42"])
    assert found["41"].state == "RUNNING"  # a task still runs: the array is on its way
    assert found["41"].tasks == {
        "0": "COMPLETED",
        "1": "FAILED",
        "2": "RUNNING",
        "[3-5%2]": "PENDING",
    }
    assert task_counts(found["41"].tasks) == {
        "COMPLETED": 1,
        "FAILED": 1,
        "RUNNING": 1,
        "PENDING": 3,
    }
    assert found["42"].state == "COMPLETED" and not found["42"].tasks
    ended = (
        "41_0|COMPLETED|0:0|None|||\n41_1|OUT_OF_MEMORY|0:125|None|||\n41_2|COMPLETED|0:0|None|||"
    )
    done = parse_sacct_details(ended, ["41"])["41"]
    assert (done.state, done.exit_code) == ("OUT_OF_MEMORY", 0)  # its first task that didn't
    squeue = "41_2|RUNNING|None|0:05|5:00\n41_[3-4%2]|PENDING|JobArrayTaskLimit|0:00|5:00"
    assert parse_squeue_details(squeue, ["41"])["41"].tasks == {
        "2": "RUNNING",
        "[3-4%2]": "PENDING",
    }


def test_status_shows_an_array_s_tasks(project: Path) -> None:
    path = job(project)
    layout = Layout.under(project / "run")
    from sleap_rtc.engine.backends.slurm.tools import JobInfo
    from sleap_rtc.pipeline.run import status

    class Tasks(FakeSlurm):
        def job_details(self, job_ids: Any, *, arrays: Any = ()) -> dict[str, JobInfo]:
            self.arrays.append(set(arrays))
            return parse_sacct_details(SACCT_ARRAY.replace("41", str(job_ids[0])), job_ids)

    fake = Tasks(dependencies=True)
    (run,) = submit(load_job(path), layout, slurm=fake)
    (shown,) = status(load_job(path), layout, slurm=fake)
    assert fake.arrays[-1] == {str(run.job_id)}  # squeue is asked about it too
    assert shown.state == "RUNNING" and shown.tasks["1"] == "FAILED"
    assert shown.reason == "tasks: 1 COMPLETED, 1 FAILED, 1 RUNNING, 3 PENDING"
    assert shown.log == str(layout.log_folder(shown_stage(path)) / f"track-{run.job_id}_1.out")


def shown_stage(path: Path) -> Any:
    return load_job(path).by_key()["mice/track"]


def test_squeue_wins_over_lagging_accounting_for_an_array(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a real sacct says for a moment after an array's first task ended: the array
    # job COMPLETED, no task rows; squeue still has a task running.
    tools = tmp_path / "bin"
    tools.mkdir()
    for name, lines in (
        ("sacct", ["345|COMPLETED|0:0|None|00:00:01|00:05:00|100M"]),
        ("squeue", ["345_1|COMPLETED|None|0:01|5:00", "345_0|RUNNING|None|0:03|5:00"]),
    ):
        echo = "".join(f"echo '{line}'\n" for line in lines)
        (tools / name).write_text(f"#!/bin/sh\n{echo}")
        (tools / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin")
    client = SlurmClient()
    assert client.job_details(["345"])["345"].state == "COMPLETED"  # sacct alone is wrong
    found = client.job_details(["345"], arrays={"345"})["345"]
    assert found.state == "RUNNING" and found.tasks == {"0": "RUNNING", "1": "COMPLETED"}


POST = {
    "command": 'wc -c < "$SLEAP_RTC_PREDICTIONS" > size.txt',
    "needs": ["track"],
    "dependency": "aftercorr",
    "outputs": ["size.txt"],
}


def test_aftercorr_is_for_a_command_stage_that_follows_track(project: Path) -> None:
    wrong = {
        "post": {**POST, "needs": ["centroid"]},
        "again": {**POST, "retries": 1},
        "whole": {**POST, "scope": "pipeline"},
    }
    with pytest.raises(JobRejected) as caught:
        load_job(job(project, stages=wrong))
    fields = [p.field for p in caught.value.problems if "aftercorr" in p.message]
    assert sorted(fields) == [f"stages.{k}.dependency" for k in ("again", "post", "whole")]
    # A dataset that tracks one file has no array to follow: it waits for the whole track.
    registry = {"mice": {"labels": "labels.slp", "track": FILES[0]}}
    (project / "datasets.json").write_text(json.dumps(registry))
    post = load_job(job(project, stages={"post": POST})).by_key()["mice/post"]
    assert post.dependency == "afterok" and post.files == ()


def test_a_stage_follows_track_file_by_file_and_reruns_only_what_a_file_reaches(
    project: Path,
) -> None:
    path = job(project, stages={"post": POST})
    layout = Layout.under(project / "run")
    fake = FakeSlurm(polls=0, dependencies=True)
    runs = {r.stage: r for r in submit(load_job(path), layout, slurm=fake, chain=True)}
    assert fake.dependency["mice/post"] == "aftercorr"
    assert fake.after["mice/post"] == [str(runs["track"].job_id)]
    text = layout.script(load_job(path).by_key()["mice/post"]).read_text()
    assert "#SBATCH --array=0-2%2" in text
    assert 'export SLEAP_RTC_PREDICTIONS="$SLEAP_RTC_EXPERIMENT"/mice/track/"${NAMES[$i]}"' in text
    finish_files(project, [0, 1, 2])
    finish_files(project, [0, 1, 2], "post")
    assert {s.action for s in plan(load_job(path), layout, slurm=fake)} == {"skip"}

    # One tracked file changes: its task reruns in both, task by task.
    write_labels(project / FILES[1], frames=14)
    steps = {s.stage.name: s for s in plan(load_job(path), layout, slurm=fake)}
    assert (steps["track"].tasks, steps["post"].tasks) == ((1,), (1,))
    assert steps["post"].reason == "it follows mice/track file by file, which runs"
    submit(load_job(path), layout, slurm=fake, chain=True)
    assert fake.dependency["mice/post"] == "aftercorr"
    assert [o for o in fake.options.values()][-2:] == [["--array=1%2"], ["--array=1%2"]]

    # Its own output of another file gone too: more tasks than track runs, so it waits
    # for the whole of track's job.
    finish_files(project, [1])
    finish_files(project, [1], "post")
    (layout.file_dirs(load_job(path).by_key()["mice/post"])[0] / "size.txt").unlink()
    write_labels(project / FILES[2], frames=15)
    steps = {s.stage.name: s for s in plan(load_job(path), layout, slurm=fake)}
    assert (steps["track"].tasks, steps["post"].tasks) == ((2,), (0, 2))
    submit(load_job(path), layout, slurm=fake, chain=True)
    assert fake.dependency["mice/post"] == "afterok"
