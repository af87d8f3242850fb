"""Frame range strings such as ``"0-100,500-600"``.

Ranges are inclusive on both ends (``"0-100"`` is 101 frames), must be written in
increasing order and may not overlap, so a typo such as ``"500-600,0-100"`` or
``"0-100,50-60"`` is caught before a GPU spends time on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
#: Largest frame number accepted (a video with more frames than this does not exist;
#: sleap-nn and the libraries under it keep frame numbers in 32-bit integers).
MAX_FRAME = 2**31 - 1

#: Upper bound on the number of comma-separated parts, so a hostile string can't
#: make the worker build a huge list.
MAX_PARTS = 1000


class FramesError(ValueError):
    """A frame range string that can't be used; the message says what to fix."""


@dataclass(frozen=True, order=True)
class FrameRange:
    """Frames ``start`` to ``stop``, both included."""

    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start + 1

    def __str__(self) -> str:
        return str(self.start) if self.start == self.stop else f"{self.start}-{self.stop}"


def parse_frames(text: str) -> list[FrameRange]:
    """Parse ``"0-100,500-600"`` into ranges, checking order and overlap.

    >>> parse_frames("0-3,10")
    [FrameRange(start=0, stop=3), FrameRange(start=10, stop=10)]
    """
    if not isinstance(text, str) or not text.strip():
        raise FramesError("frames is empty; write ranges like '0-100' or '0-100,500-600'")
    parts = text.split(",")
    if len(parts) > MAX_PARTS:
        raise FramesError(f"frames has {len(parts)} parts; at most {MAX_PARTS} are allowed")
    ranges: list[FrameRange] = []
    for raw in parts:
        match = _PART.match(raw)
        if not match:
            raise FramesError(
                f"frames part {raw.strip()[:40]!r} is not a frame number or a range like '0-100' "
                "(frame numbers are non-negative integers)"
            )
        numbers = [g for g in match.groups() if g is not None]
        if any(len(g) > len(str(MAX_FRAME)) or int(g) > MAX_FRAME for g in numbers):
            raise FramesError(
                f"frames part {raw.strip()[:40]!r} names a frame past {MAX_FRAME:,}; "
                "frame numbers count from 0 up to the video's length"
            )
        start = int(match.group(1))
        stop = int(match.group(2)) if match.group(2) is not None else start
        if stop < start:
            raise FramesError(
                f"frames range {raw.strip()!r} ends before it starts; write it as '{stop}-{start}'"
            )
        current = FrameRange(start, stop)
        if ranges:
            previous = ranges[-1]
            if current.start <= previous.stop:
                if current.start < previous.start:
                    raise FramesError(
                        f"frames ranges must be in increasing order: {current} comes after "
                        f"{previous}"
                    )
                raise FramesError(f"frames ranges {previous} and {current} overlap")
        ranges.append(current)
    if len(ranges) > 1:
        # Several ranges go to sleap-nn frame by frame; bound that list.
        size = sum(len(r) * (len(str(r.stop)) + 1) for r in ranges)
        if size > MAX_FRAMES_ARG_CHARS:
            raise FramesError(
                f"frames names {sum(len(r) for r in ranges)} frames across {len(ranges)} "
                "ranges, too many to pass to sleap-nn in one run; use a single range "
                "or split the ranges into several jobs"
            )
    return ranges


def sleap_nn_frames_arg(ranges: list[FrameRange]) -> str:
    """The ``--frames`` value sleap-nn understands for ``ranges``.

    sleap-nn takes either one ``"n-m"`` range or a comma list of frame numbers, so
    several ranges are written out frame by frame.
    """
    if len(ranges) == 1:
        return str(ranges[0]) if len(ranges[0]) > 1 else str(ranges[0].start)
    return ",".join(str(i) for r in ranges for i in range(r.start, r.stop + 1))


#: Longest ``--frames`` argument we hand to sleap-nn (Linux caps one argument at
#: 128 KiB); several ranges are written frame by frame, so they must stay below it.
MAX_FRAMES_ARG_CHARS = 100_000


def format_frames(ranges: list[FrameRange]) -> str:
    """The canonical string for ``ranges`` (inverse of :func:`parse_frames`)."""
    return ",".join(str(r) for r in ranges)
