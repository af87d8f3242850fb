import pytest
from hypothesis import given
from hypothesis import strategies as st

from sleap_rtc.jobs.frames import (
    FrameRange,
    FramesError,
    format_frames,
    parse_frames,
    sleap_nn_frames_arg,
)


def test_parses_seed_example() -> None:
    assert parse_frames("0-100,500-600") == [FrameRange(0, 100), FrameRange(500, 600)]


def test_single_frames_and_spaces() -> None:
    assert parse_frames(" 3 , 5-7 ") == [FrameRange(3, 3), FrameRange(5, 7)]
    assert len(FrameRange(5, 7)) == 3


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("500-600,0-100", "increasing order"),
        ("0-100,50-60", "overlap"),
        ("0-100,100-200", "overlap"),
        ("100-0", "ends before it starts"),
        ("-5-10", "not a frame number"),
        ("a-b", "not a frame number"),
        ("1.5", "not a frame number"),
        ("0-10,", "not a frame number"),
        ("0--10", "not a frame number"),
    ],
)
def test_rejects_bad_ranges(text: str, fragment: str) -> None:
    with pytest.raises(FramesError, match=fragment):
        parse_frames(text)


def test_sleap_nn_argument() -> None:
    assert sleap_nn_frames_arg(parse_frames("5-9")) == "5-9"
    assert sleap_nn_frames_arg(parse_frames("7")) == "7"
    assert sleap_nn_frames_arg(parse_frames("0-2,10,12-13")) == "0,1,2,10,12,13"
    with pytest.raises(FramesError, match="too many"):
        parse_frames("0-100000,200000-300000")
    assert len(parse_frames("0-10000000")) == 1  # one range stays "n-m", any size


def test_too_many_parts() -> None:
    with pytest.raises(FramesError, match="at most"):
        parse_frames(",".join(str(i) for i in range(0, 4000, 2)))


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=20))
def test_round_trip(pairs: list[tuple[int, int]]) -> None:
    # Build non-overlapping increasing ranges from gaps and lengths.
    ranges, cursor = [], 0
    for gap, length in pairs:
        start = cursor + gap
        ranges.append(FrameRange(start, start + length))
        cursor = start + length + 1
    assert parse_frames(format_frames(ranges)) == ranges


@pytest.mark.parametrize("text", ["0-99999999999999999999999999", "9" * 5000, "2147483648"])
def test_frame_numbers_past_any_video_are_refused_not_crashing(text: str) -> None:
    with pytest.raises(FramesError, match="names a frame past"):
        parse_frames(text)
    assert parse_frames("0-2147483647")[0].stop == 2**31 - 1
