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
