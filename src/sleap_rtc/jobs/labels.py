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
import dataclasses
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sleap_rtc.jobs.frames import FrameRange
from sleap_rtc.jobs.mounts import Mounts
from sleap_rtc.jobs.pathmaps import PathMap, is_windows, mapped, normalized
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
    #: Every stored name (an image sequence has one per image), as sleap-io reads them.
    filenames: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelsInfo:
    """What a job needs to know about a labels file."""

    videos: list[VideoInfo]
    suggestions: int
    tracks: int
    labeled_frames: int
    #: Stored video name → the checked path on this worker, for each name that is not
    #: read as stored (a path map, a relative name, a video found beside the labels).
    remap: dict[str, str] = field(default_factory=dict)


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
        names = tuple(str(f) for f in filename) if isinstance(filename, list) else (str(filename),)
        embedded = bool(metadata.get("has_embedded_images"))
        videos.append(
            VideoInfo(
                stored=names[0] if names else "",
                embedded=embedded,
                frames=_frames(metadata),
                filenames=names,
            )
        )
    return LabelsInfo(
        videos=videos,
        suggestions=len(labels.suggestions),
        tracks=len(labels.tracks),
        labeled_frames=len(labels.labeled_frames),
    )


def write_remapped(source: Path, remap: dict[str, str], dest: Path) -> None:
    """A copy of the labels ``source`` at ``dest`` whose videos have the paths in ``remap``.

    The copy keeps embedded frames where they are (it refers to ``source`` for them),
    so it is small whatever the labels hold.
    """
    import sleap_io as sio

    labels = sio.load_slp(str(source), open_videos=False)
    labels.replace_filenames(filename_map=dict(remap), open_videos=False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    labels.save(str(dest), embed=False, restore_original_videos=False)


def video_frames(path: Path, **options: str) -> int | None:
    """How many frames the video at ``path`` has (None if sleap-io can't open it);
    ``options`` are sleap-io's for the video (an HDF5 video's ``dataset``…)."""
    import sleap_io as sio

    try:
        video = sio.load_video(str(path), **options)
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


def check_labels(
    field: str,
    raw: str,
    real: Path,
    mounts: Mounts,
    problems: list[Problem],
    maps: Sequence[PathMap] = (),
) -> LabelsInfo | None:
    """Open the labels file ``real`` (named ``raw`` in ``field``) and check its videos.

    A video given where labels are wanted is ``WRONG_FILE_TYPE``; a file sleap-io
    can't read is ``LABELS_INVALID``; each referenced video that is not embedded
    must be a file inside the mounts, where ``maps`` say it is if one applies
    (``VIDEO_NOT_FOUND``, field ``<field>.videos[i]``, the stored path as the value).
    Returns what the file holds, with the checked path of every video that is not
    read as stored in ``remap``; None when the file could not be read.
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
    remap: dict[str, str] = {}
    for index, video in enumerate(info.videos):
        if video.embedded:
            continue
        found, why = _locate(mounts, video, real, maps)
        if why is not None:
            shown = video.stored[:_STORED_CHARS]
            problems.append(
                Problem(
                    field=f"{field}.videos[{index}]",
                    value=shown,
                    code=ProblemCode.VIDEO_NOT_FOUND,
                    message=f"video {index} of {raw} is {shown}, {why}",
                )
            )
            continue
        remap.update({old: new for old, new in found.items() if old != new})
    return dataclasses.replace(info, remap=remap)


class LabelsReader:
    """Reads each labels file of a job once (several configs often share one), so its
    problems are reported once too."""

    def __init__(
        self, mounts: Mounts, problems: list[Problem], maps: Sequence[PathMap] = ()
    ) -> None:
        self.mounts = mounts
        self.problems = problems
        self.maps = maps
        self.seen: dict[Path, LabelsInfo | None] = {}

    def __call__(self, real: Path | None, field: str, raw: str) -> LabelsInfo | None:
        if real is None:
            return None
        if real not in self.seen:
            self.seen[real] = check_labels(field, raw, real, self.mounts, self.problems, self.maps)
        return self.seen[real]

    def remaps(self) -> dict[Path, dict[str, str]]:
        """Each labels file whose videos are not all read as stored, with their paths."""
        return {path: info.remap for path, info in self.seen.items() if info and info.remap}


#: Images of one image-sequence video checked one by one (beyond, only the first is).
_MAX_IMAGES_CHECKED = 100_000

_NOT_MOUNTED = (
    "which is not in any folder this worker mounts (were the labels made on another machine?)"
)
_NOT_HERE = "which does not exist on this worker (were the labels made on another machine?)"
_FOREIGN = "a path on another kind of machine (the labels were made elsewhere)"
#: What to do about a missing video, ending its problem's message.
VIDEO_ADVICE = (
    "; give --path-map OLD NEW with the folder the videos are in on this worker "
    "(e.g. --path-map C:/Users/lab/videos /data/videos), or save the labels with "
    "the videos' paths there"
)


def _checked(mounts: Mounts, path: str, base: Path | None = None) -> Path | None:
    """``path`` resolved inside the mounts, when it is an existing file or folder there."""
    real, problem = mounts.resolve("video", path, base=base)
    if problem is not None or real is None:
        return None
    return real if real.is_file() or real.is_dir() else None


def _locate(
    mounts: Mounts, video: VideoInfo, labels: Path, maps: Sequence[PathMap]
) -> tuple[dict[str, str], str | None]:
    """Where each stored name of ``video`` is on this worker, or why it can't be read.

    In order: a path map that applies; the stored path itself (a relative one against
    the labels' folder); the same file name beside the labels (sleap-io looks there
    too). Whether a path outside the mounts exists is never said: that would let a
    peer probe the disk.
    """
    names = video.filenames or (video.stored,)
    hit = mapped(maps, video.stored)
    if hit is not None:
        path_map = hit[1]
        found: dict[str, str] = {}
        for name in names[:_MAX_IMAGES_CHECKED]:
            each = mapped([path_map], name)
            real = _checked(mounts, each[0]) if each else None
            if real is None:
                where = each[0] if each else name
                return {}, (
                    f"which the path map {path_map} makes {where[:_STORED_CHARS]}; that is "
                    "not a file in any folder this worker mounts (check the map's NEW folder)"
                )
            found[name] = str(real)
        return found, None
    foreign = is_windows(video.stored)
    if not foreign:
        base = None if Path(video.stored).is_absolute() else labels.parent
        found = {}
        for name in names[:_MAX_IMAGES_CHECKED]:
            real = _checked(mounts, name, base)
            if real is None:
                break
            found[name] = str(real)
        else:
            return found, None
    if len(names) == 1:
        beside = _checked(mounts, posixpath.basename(normalized(video.stored)), labels.parent)
        if beside is not None and beside.is_file():
            return {video.stored: str(beside)}, None
    if foreign:
        return {}, _FOREIGN + VIDEO_ADVICE
    real, problem = mounts.resolve("video", video.stored, base=labels.parent)
    why = _NOT_MOUNTED if problem is not None or real is None else _NOT_HERE
    return {}, why + VIDEO_ADVICE


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
    maps: Sequence[PathMap] = (),
) -> dict[str, str]:
    """What is inside the data: its videos, and whether ``video_index``, ``frames`` and
    ``only_suggested_frames`` fit it. Returns the data's video paths that are not read
    as stored (:attr:`LabelsInfo.remap`)."""

    def problem(field: str, value: object, code: ProblemCode, message: str) -> None:
        problems.append(Problem(field=field, value=str(value), code=code, message=message))

    hdf5 = data.suffix.lower() in (".h5", ".hdf5")
    for name in ("video_dataset", "video_input_format"):
        if getattr(spec, name) is not None and not hdf5:
            problem(
                name,
                getattr(spec, name),
                ProblemCode.CONFLICT,
                f"{name} is for HDF5 videos (.h5); {spec.data_path} is not one (leave it out)",
            )
    if data.suffix.lower() != ".slp":
        options = {"dataset": spec.video_dataset, "input_format": spec.video_input_format}
        total = video_frames(data, **{k: v for k, v in options.items() if v and hdf5})
        if total is None:
            problem(
                "data_path",
                spec.data_path,
                ProblemCode.WRONG_FILE_TYPE,
                f"{spec.data_path} can't be opened as a video here",
            )
            return {}
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
        for name in ("only_labeled_frames", "exclude_user_labeled", "only_predicted_frames"):
            if getattr(spec, name):
                problem(
                    name,
                    True,
                    ProblemCode.CONFLICT,
                    f"{name} filters the frames of a labels file by their labels; "
                    f"{spec.data_path} is a video (give the .slp, or use --frames)",
                )
        check_frames(frames or [], total, spec.data_path, problems)
        return {}
    info = check_labels("data_path", spec.data_path, data, mounts, problems, maps)
    if info is None:
        return {}
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
    if (
        spec.output_format == "analysis_h5"
        and count > 1
        and spec.video_index is None
        and not frames
    ):
        problem(
            "output_format",
            spec.output_format,
            ProblemCode.CONFLICT,
            f"an analysis_h5 file holds one video and {spec.data_path} has {count}; "
            "add --video-index N (0 to {}) to predict one of them".format(count - 1),
        )
    if spec.only_suggested_frames and info.suggestions == 0:
        problem(
            "only_suggested_frames",
            True,
            ProblemCode.CONFLICT,
            f"{spec.data_path} has no suggested frames; add suggestions in SLEAP, or use --frames",
        )
    return info.remap
