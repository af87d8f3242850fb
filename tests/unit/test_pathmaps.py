"""Video path maps: the pure rules (which map applies, what it makes of a path)."""

from __future__ import annotations

import pytest

from sleap_rtc.jobs.pathmaps import PathMap, check_pairs, implied_map, mapped, normalized


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("/Volumes/lab/mice/m1.mp4", "/data/mice/m1.mp4"),
        ("/Volumes/lab/mice/deep/m1.mp4", "/fast/m1.mp4"),  # the longer prefix wins
        ("/Volumes/lab", "/data"),
        ("/Volumes/lab2/m1.mp4", None),  # whole components only
        ("/Volumes/LAB/m1.mp4", None),  # POSIX paths keep their case
        ("C:\\Users\\ana\\m1.mp4", "/win/m1.mp4"),
        ("c:/users/ANA/m1.mp4", "/win/m1.mp4"),  # Windows paths don't
        ("\\\\nas\\share\\v\\m1.mp4", "/nas/v/m1.mp4"),
    ],
)
def test_the_longest_matching_prefix_maps_a_path(stored: str, expected: str | None) -> None:
    maps = [
        PathMap("/Volumes/lab", "/data"),
        PathMap("/Volumes/lab/mice/deep/", "/fast"),
        PathMap("C:\\Users\\ana", "/win/"),
        PathMap("\\\\nas\\share", "/nas"),
    ]
    found = mapped(maps, stored)
    assert (found[0] if found else None) == expected


def test_a_jobs_map_comes_before_the_workers() -> None:
    maps = [PathMap("/Volumes/lab/mice", "/worker", "worker"), PathMap("/Volumes", "/job")]
    target, used = mapped(maps, "/Volumes/lab/mice/m1.mp4") or ("", None)
    assert (target, used and used.source) == ("/job/lab/mice/m1.mp4", "job")


def test_implied_map_keeps_the_shared_tail_out() -> None:
    assert implied_map("C:\\lab\\mice\\m1.mp4", "/data/mice/m1.mp4") == ("C:/lab", "/data")
    assert implied_map("/Volumes/x/m1.mp4", "/data/other.mp4") == (
        "/Volumes/x/m1.mp4",
        "/data/other.mp4",
    )
    old, new = implied_map("/Volumes/lab/a/m1.mp4", "/srv/lab/a/m1.mp4")
    assert mapped([PathMap(old, new)], "/Volumes/lab/a/m2.mp4") == (
        "/srv/lab/a/m2.mp4",
        PathMap(old, new),
    )


def test_normalized_forms() -> None:
    assert normalized("C:\\Users\\\\ana\\") == "C:/Users/ana"
    assert normalized("C:\\") == "C:/"
    assert normalized("//nas/share/") == "//nas/share"
    assert normalized("/a//b/") == "/a/b"


def test_check_pairs_names_each_bad_map() -> None:
    problems = check_pairs(
        "path_map", [("/Volumes/lab", "data/lab"), ("", "/x"), ("/a", "C:/y"), ("/ok", "/ok2")]
    )
    assert [p.field for p in problems] == ["path_map[0]", "path_map[1]", "path_map[2]"]
    assert "absolute folder on the worker" in problems[0].message
    assert check_pairs("path_map", [("/a", "/b")] * 40)[0].field == "path_map"
