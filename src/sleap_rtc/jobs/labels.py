"""What is inside the labels and videos a job names, read before the job is accepted.

Labels made on another machine keep the video paths of that machine
(``/Volumes/lab/...``, ``C:\\Users\\...``); a corrupt or foreign file is not a SLEAP
file at all. sleap-nn finds out minutes into a job; the worker finds out here, by
opening each labels file with sleap-io (without opening its videos: the frame counts
SLEAP stores are read instead), so every such problem comes back with the others,
before anything runs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any

from sleap_rtc.jobs.frames import FrameRange
from sleap_rtc.jobs.mounts import Mounts
from sleap_rtc.jobs.problems import Problem, ProblemCode
from sleap_rtc.jobs.specs import TrackSpec

#: Files sleap-io reads as videos (a job that wants labels gets WRONG_FILE_TYPE for them).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".h5", ".hdf5")
#: Longest reason from sleap-io or h5py quoted in a problem.
_REASON_CHARS = 300
#: Longest video path from inside a labels file quoted in a problem (the file is the
#: peer's: what it says is echoed back cut short).
_STORED_CHARS = 1024


@dataclass(frozen=True)
class VideoInfo:
    """One video a labels file references."""

    #: The path stored in the file (for an image sequence, its first image).
    stored: str
    #: The frames are inside the labels file itself (a ``.pkg.slp``).
    embedded: bool
    #: Frames, as SLEAP stored them; None when the file doesn't say.
    frames: int | None


@dataclass(frozen=True)
class LabelsInfo:
    """What a job needs to know about a labels file."""

    videos: list[VideoInfo]
    suggestions: int
    tracks: int
    labeled_frames: int


class LabelsError(ValueError):
    """The file is not a labels file sleap-io can read; the message says why."""


def _frames(metadata: dict[str, Any]) -> int | None:
    shape = metadata.get("shape")
    if isinstance(shape, list | tuple) and shape and isinstance(shape[0], int):
        return shape[0]
    return None


def read_labels(path: Path) -> LabelsInfo:
    """Open ``path`` with sleap-io (videos left closed) and say what it holds."""
    import sleap_io as sio

    try:
        labels = sio.load_slp(str(path), open_videos=False)
    except Exception as exc:  # h5py, sleap-io and json errors alike: not a labels file
        reason = f"{type(exc).__name__}: {exc}"[:_REASON_CHARS]
        raise LabelsError(reason) from None
    videos = []
    for video in labels.videos:
        metadata = dict(video.backend_metadata or {})
        filename = video.filename
        stored = filename[0] if isinstance(filename, list) and filename else str(filename)
        embedded = bool(metadata.get("has_embedded_images"))
        videos.append(VideoInfo(stored=stored, embedded=embedded, frames=_frames(metadata)))
    return LabelsInfo(
        videos=videos,
        suggestions=len(labels.suggestions),
        tracks=len(labels.tracks),
        labeled_frames=len(labels.labeled_frames),
    )


def video_frames(path: Path) -> int | None:
    """How many frames the video at ``path`` has (None if sleap-io can't open it)."""
    import sleap_io as sio

    try:
        video = sio.load_video(str(path))
    except Exception:
        return None
    try:
        shape = video.shape
        return int(shape[0]) if shape else None
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            video.close()


def _looks_foreign(stored: str) -> bool:
    """A path written on another kind of machine (``C:\\...``, ``\\\\server\\share``)."""
    return bool(PureWindowsPath(stored).drive) or stored.startswith("\\\\")


def check_labels(
    field: str, raw: str, real: Path, mounts: Mounts, problems: list[Problem]
) -> LabelsInfo | None:
    """Open the labels file ``real`` (named ``raw`` in ``field``) and check its videos.

    A video given where labels are wanted is ``WRONG_FILE_TYPE``; a file sleap-io
    can't read is ``LABELS_INVALID``; each referenced video that is not embedded
    must be a file inside the mounts (``VIDEO_NOT_FOUND``, field
    ``<field>.videos[i]``, the stored path as the value). Returns what the file
    holds, or None when it could not be read.
    """
    if real.suffix.lower() in VIDEO_SUFFIXES:
        problems.append(
            Problem(
                field=field,
                value=raw,
                code=ProblemCode.WRONG_FILE_TYPE,
                message=f"{raw} is a video; {field} takes a SLEAP labels file (.slp)",
            )
        )
        return None
    try:
        info = read_labels(real)
    except LabelsError as exc:
        problems.append(
            Problem(
                field=field,
                value=raw,
                code=ProblemCode.LABELS_INVALID,
                message=f"{raw} is not a SLEAP labels file sleap-io can read ({exc})",
            )
        )
        return None
    for index, video in enumerate(info.videos):
        if video.embedded:
            continue
        name = f"{field}.videos[{index}]"
        where = _video_problem(mounts, video.stored, real)
        if where is not None:
            shown = video.stored[:_STORED_CHARS]
            problems.append(
                Problem(
                    field=name,
                    value=shown,
                    code=ProblemCode.VIDEO_NOT_FOUND,
                    message=f"video {index} of {raw} is {shown}, {where}",
                )
            )
    return info


class LabelsReader:
    """Reads each labels file of a job once (several configs often share one), so its
    problems are reported once too."""

    def __init__(self, mounts: Mounts, problems: list[Problem]) -> None:
        self.mounts = mounts
        self.problems = problems
        self.seen: dict[Path, LabelsInfo | None] = {}

    def __call__(self, real: Path | None, field: str, raw: str) -> LabelsInfo | None:
        if real is None:
            return None
        if real not in self.seen:
            self.seen[real] = check_labels(field, raw, real, self.mounts, self.problems)
        return self.seen[real]


def _video_problem(mounts: Mounts, stored: str, labels: Path) -> str | None:
    """Why the video stored as ``stored`` can't be read here (None: it can)."""
    if _looks_foreign(stored):
        return (
            "a path on another kind of machine (the labels were made elsewhere); put the "
            "video on storage this worker mounts and save the labels with its path here"
        )
    # sleap-io and sleap-nn resolve a relative video path against the labels' folder.
    base = labels.parent if not Path(stored).is_absolute() else None
    real, problem = mounts.resolve("video", stored, base=base)
    if problem is not None or real is None:
        # Whether it exists out there is not said: that would let a peer probe the disk.
        return (
            "which is not in any folder this worker mounts (were the labels made on another "
            "machine?); put the video in a mounted folder and save the labels with its path "
            "on this worker"
        )
    if not real.is_file() and not real.is_dir():
        return (
            "which does not exist on this worker (labels made on another machine?); put "
            "the video there or save the labels with the video's path on this worker"
        )
    return None


def check_frames(
    ranges: list[FrameRange], total: int | None, source: str, problems: list[Problem]
) -> None:
    """``frames`` must lie inside the video's ``total`` frames (0 to total - 1)."""
    if total is None or not ranges:
        return
    beyond = [r for r in ranges if r.stop >= total]
    if beyond:
        shown = ", ".join(str(r) for r in beyond[:5])
        problems.append(
            Problem(
                field="frames",
                value=shown,
                code=ProblemCode.FRAMES_INVALID,
                message=(
                    f"frames {shown} go past the end of {source}, which has {total} frames "
                    f"(0-{total - 1})"
                ),
            )
        )


def check_track_data(
    spec: TrackSpec,
    data: Path,
    frames: list[FrameRange] | None,
    mounts: Mounts,
    problems: list[Problem],
) -> None:
    """What is inside the data: its videos, and whether ``video_index``, ``frames`` and
    ``only_suggested_frames`` fit it."""

    def problem(field: str, value: object, code: ProblemCode, message: str) -> None:
        problems.append(Problem(field=field, value=str(value), code=code, message=message))

    if data.suffix.lower() != ".slp":
        total = video_frames(data)
        if total is None:
            problem(
                "data_path",
                spec.data_path,
                ProblemCode.WRONG_FILE_TYPE,
                f"{spec.data_path} can't be opened as a video here",
            )
            return
        if spec.video_index is not None:
            problem(
                "video_index",
                spec.video_index,
                ProblemCode.CONFLICT,
                "video_index picks a video of a labels file; "
                f"{spec.data_path} is a video itself (leave video_index out)",
            )
        if spec.only_suggested_frames:
            problem(
                "only_suggested_frames",
                True,
                ProblemCode.CONFLICT,
                "only_suggested_frames uses a labels file's suggestions; "
                f"{spec.data_path} is a video (give the .slp, or use --frames)",
            )
        check_frames(frames or [], total, spec.data_path, problems)
        return
    info = check_labels("data_path", spec.data_path, data, mounts, problems)
    if info is None:
        return
    count = len(info.videos)
    if spec.video_index is not None and spec.video_index >= count:
        problem(
            "video_index",
            spec.video_index,
            ProblemCode.OUT_OF_RANGE,
            f"video_index {spec.video_index} is past the videos of {spec.data_path}: it has "
            f"{count} video(s), numbered 0 to {count - 1}",
        )
    elif frames:
        index = spec.video_index if spec.video_index is not None else 0 if count == 1 else None
        if index is not None:
            video = info.videos[index]
            check_frames(frames, video.frames, f"video {index} of {spec.data_path}", problems)
    if spec.only_suggested_frames and info.suggestions == 0:
        problem(
            "only_suggested_frames",
            True,
            ProblemCode.CONFLICT,
            f"{spec.data_path} has no suggested frames; add suggestions in SLEAP, or use --frames",
        )
