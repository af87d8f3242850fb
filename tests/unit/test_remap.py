"""Correcting a missing video: the pick becomes a path map on the job."""

from __future__ import annotations

from sleap_rtc.client.remap import covered, labels_folder, video_filter, video_problems, with_video
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.protocol import jobs as p


def _missing(field: str, stored: str) -> p.ProblemView:
    return p.ProblemView(field=field, path=stored, code="VIDEO_NOT_FOUND", message="…")


def test_a_picked_video_becomes_the_first_path_map_and_covers_its_neighbours() -> None:
    spec = TrainSpec(
        config_paths=["/data/c.yaml"], labels_path="/data/l.slp", path_map=[("/x", "/y")]
    )
    first = _missing("labels_path.videos[0]", "C:/Users/ana/mice/a.mp4")
    second = _missing("labels_path.videos[1]", "C:/Users/ana/mice/b.mp4")
    other = _missing("labels_path.videos[2]", "D:/flies/c.mp4")
    updated, pair = with_video(spec, first, "/data/lab/mice/a.mp4")
    assert pair == ("C:/Users/ana", "/data/lab") and updated.path_map[0] == pair
    assert updated.path_map[1:] == [("/x", "/y")]
    assert covered(second, [pair]) and not covered(other, [pair])
    assert labels_folder(updated) == "/data" and video_filter(first) == "*.mp4"


def test_only_missing_videos_with_a_stored_path_are_picked() -> None:
    errors = [
        _missing("labels_path.videos[0]", "/Volumes/a.avi"),
        _missing("labels_path", "/x.slp"),
        p.ProblemView(field="data_path.videos[0]", path=None, code="VIDEO_NOT_FOUND", message=""),
    ]
    assert [e.field for e in video_problems(errors)] == ["labels_path.videos[0]"]
    track = TrackSpec(data_path="rel.slp", model_paths=["/m"])
    assert labels_folder(track) is None and video_filter(errors[0]) == "*.avi"
