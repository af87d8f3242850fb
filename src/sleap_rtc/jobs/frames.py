"""Frame range strings such as ``"0-100,500-600"``.

Ranges are inclusive on both ends (``"0-100"`` is 101 frames), must be written in
increasing order and may not overlap, so a typo such as ``"500-600,0-100"`` or
``"0-100,50-60"`` is caught before a GPU spends time on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")

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
                f"frames part {raw.strip()!r} is not a frame number or a range like '0-100' "
                "(frame numbers are non-negative integers)"
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
    return ranges


def format_frames(ranges: list[FrameRange]) -> str:
    """The canonical string for ``ranges`` (inverse of :func:`parse_frames`)."""
    return ",".join(str(r) for r in ranges)
