"""Real SLEAP labels files for tests, made with sleap-io (the worker opens every one)."""

from __future__ import annotations

import os
from pathlib import Path


def write_labels(
    path: Path,
    *,
    video: str | None = None,
    frames: int = 12,
    suggestions: int = 0,
) -> Path:
    """A labels file at ``path`` with one labeled frame of a two-node skeleton.

    Its one video is ``video`` as stored (it need not exist), else a small real
    ``.mp4`` of ``frames`` frames written beside the labels.
    """
    import imageio.v3 as iio
    import numpy as np
    import sleap_io as sio

    path.parent.mkdir(parents=True, exist_ok=True)
    if video is None:
        movie = path.with_suffix(".mp4")
        iio.imwrite(movie, np.zeros((frames, 16, 16, 3), np.uint8), fps=10)
        clip = sio.load_video(str(movie))
    else:
        clip = sio.Video(filename=video, open_backend=False)
    skeleton = sio.Skeleton(["head", "tail"])
    instance = sio.Instance.from_numpy(np.array([[1.0, 2.0], [3.0, 4.0]]), skeleton=skeleton)
    labels = sio.Labels(
        labeled_frames=[sio.LabeledFrame(video=clip, frame_idx=0, instances=[instance])],
        videos=[clip],
        skeletons=[skeleton],
    )
    for index in range(suggestions):
        labels.suggestions.append(sio.SuggestionFrame(video=clip, frame_idx=index))
    sio.save_slp(labels, os.fspath(path))
    return path


def labels_from_elsewhere(pkg: Path, out: Path, *, stored: str, video: Path) -> Path:
    """The labels of ``pkg`` (a ``.pkg.slp``) as if saved on another machine: a plain
    ``.slp`` at ``out`` whose one video is stored as ``stored``, with the frames written
    as a real ``.mp4`` at ``video`` (where that machine's video is on this one)."""
    import imageio.v3 as iio
    import numpy as np
    import sleap_io as sio

    labels = sio.load_slp(os.fspath(pkg))
    [source] = labels.videos
    frames = np.stack([source[i] for i in range(source.shape[0])])
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    video.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(video, frames, fps=10, codec="libx264", quality=10)
    elsewhere = sio.Video(filename=stored, open_backend=False)
    labels.replace_videos(old_videos=[source], new_videos=[elsewhere])
    labels.suggestions.clear()
    out.parent.mkdir(parents=True, exist_ok=True)
    sio.save_slp(labels, os.fspath(out), embed=False)
    return out
