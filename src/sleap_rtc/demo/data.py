"""Synthetic demo data for ``sleap-rtc demo`` and ``sleap-rtc make-demo-data OUT_DIR``.

Why: the demo has to train and run real sleap-nn models offline, on a CPU, in seconds, and
then say how good the predictions are. So we draw our own tiny video instead of downloading
one, and keep the true positions of some frames aside to score predictions against.

What :func:`make_demo_data` writes into ``out_dir`` (created if missing):

``demo.pkg.slp``
    A SLEAP package (images embedded as PNG, ``embed="user+suggestions"``) with one
    ``n_frames``-frame, 128x128 grayscale video of one 3-node animal (``head``, ``thorax``,
    ``tail``) that wanders around and turns. Most frames carry a user-labeled instance
    (training data); every :data:`HELD_OUT_EVERY`-th frame (starting at frame
    :data:`HELD_OUT_OFFSET`) is held out: it has no label, only a suggestion
    (``sio.SuggestionFrame``), so ``sleap-nn track ... --only_suggested_frames`` predicts
    exactly the held-out frames.
``ground_truth.json``
    The true node positions of the held-out frames. Format (version 1)::

        {
          "format": "sleap-rtc-demo-ground-truth",
          "version": 1,
          "labels": "demo.pkg.slp",
          "image_size": [height, width],
          "seed": 0, "n_frames": 80,          # the make_demo_data arguments
          "skeleton": {"nodes": ["head", "thorax", "tail"],
                       "edges": [["head", "thorax"], ["thorax", "tail"]]},
          "frames": [
            {"video_index": 0, "frame_index": 3,
             "points": [[x, y], [x, y], [x, y]]},   # one [x, y] per node, node order
            ...
          ]
        }

    Coordinates are in pixels, in the same convention as the labels in the package
    (x = column, y = row, pixel centers at integer coordinates).
``configs/{single_instance,centroid,centered_instance}.yaml``
    Copies of the packaged, tuned sleap-nn configs. Their ``train_labels_path`` is the
    relative path ``../demo.pkg.slp``, resolved against the config's folder.

Guarantees: the output depends only on ``n_frames`` and ``seed`` (same arguments, same
images and coordinates); the whole animal stays inside the image on every frame; no
temporary files are left behind; it takes about a second for the default 80 frames.

:func:`mean_error_px` scores a predictions ``.slp`` (e.g. from ``sleap-nn track``) against
``ground_truth.json``.

This module needs numpy and sleap-io (the ``worker`` extra): it is only imported on workers
and by the demo commands.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sleap_io as sio

from sleap_rtc.demo import CONFIG_NAMES, packaged_config_path

#: Image size (height, width) of the synthetic video.
IMAGE_SIZE: tuple[int, int] = (128, 128)
#: Skeleton node names, in order.
NODE_NAMES: tuple[str, ...] = ("head", "thorax", "tail")
#: Skeleton edges as (source, destination) node names.
EDGES: tuple[tuple[str, str], ...] = (("head", "thorax"), ("thorax", "tail"))
#: Every HELD_OUT_EVERY-th frame is held out (unlabeled, suggested, scored).
HELD_OUT_EVERY: int = 6
#: Index of the first held-out frame.
HELD_OUT_OFFSET: int = 3
#: Default number of frames in the video.
DEFAULT_N_FRAMES: int = 80

LABELS_FILENAME = "demo.pkg.slp"
GROUND_TRUTH_FILENAME = "ground_truth.json"
GROUND_TRUTH_FORMAT = "sleap-rtc-demo-ground-truth"
GROUND_TRUTH_VERSION = 1

# Geometry (pixels): head ahead of the thorax, tail behind it.
_HEAD_DIST = 11.0
_TAIL_DIST = 17.0
# Thorax stays in [_MARGIN, size - _MARGIN], so every node is at least ~7 px inside.
_MARGIN = 26.0


@dataclass(frozen=True)
class DemoData:
    """Where :func:`make_demo_data` put things (all absolute paths)."""

    labels_path: Path
    ground_truth_path: Path
    configs: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class ErrorReport:
    """Result of :func:`mean_error_px`.

    ``mean_px`` is the mean Euclidean node error in pixels over every scored node of every
    scored frame (``nan`` when nothing could be scored). ``n_frames_scored`` counts held-out
    frames with a usable prediction; ``n_frames_missing`` those without one (excluded from the
    mean). ``n_nodes_missing`` counts NaN predicted nodes in scored frames (also excluded).
    """

    mean_px: float
    n_frames_scored: int
    n_frames_missing: int
    n_nodes_missing: int = 0


def held_out_frame_indices(n_frames: int) -> list[int]:
    """Return the indices of the held-out (unlabeled, suggested) frames for ``n_frames``."""
    return list(range(HELD_OUT_OFFSET, n_frames, HELD_OUT_EVERY))


def _poses(n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Return node coordinates of shape (n_frames, 3, 2) for a smooth, turning walk."""
    h, w = IMAGE_SIZE
    t = np.arange(n_frames, dtype=np.float64) / max(n_frames, 1)
    phase = rng.uniform(0.0, 2.0 * math.pi, size=5)
    fx, fy = rng.uniform(1.0, 2.0, size=2)
    amp_x = (w / 2.0) - _MARGIN
    amp_y = (h / 2.0) - _MARGIN
    cx = w / 2.0 + amp_x * np.sin(2.0 * math.pi * fx * t + phase[0])
    cy = h / 2.0 + amp_y * np.sin(2.0 * math.pi * fy * t + phase[1])
    # Two to three full turns over the video, with some wobble: every heading is seen.
    turns = rng.uniform(2.0, 3.0) * rng.choice([-1.0, 1.0])
    angle = phase[2] + 2.0 * math.pi * turns * t + 0.5 * np.sin(2.0 * math.pi * 5.0 * t + phase[3])
    # The tail bends a little relative to the body axis.
    bend = 0.35 * np.sin(2.0 * math.pi * 7.0 * t + phase[4])
    thorax = np.stack([cx, cy], axis=-1)
    head = thorax + _HEAD_DIST * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    tail_angle = angle + math.pi + bend
    tail = thorax + _TAIL_DIST * np.stack([np.cos(tail_angle), np.sin(tail_angle)], axis=-1)
    return np.stack([head, thorax, tail], axis=1)


def _render(pose: np.ndarray, rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """Draw one frame (uint8, H x W) of the animal at ``pose`` (3 x 2, x/y) on ``background``."""
    h, w = IMAGE_SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    head, thorax, tail = pose
    img = background.copy()

    def blob(center: np.ndarray, sigma: float, value: float) -> np.ndarray:
        d2 = (xx - center[0]) ** 2 + (yy - center[1]) ** 2
        return value * np.exp(-d2 / (2.0 * sigma**2))

    # Tail: a tapering, dimming line from the thorax to the tail tip, plus a small tip dot.
    seg = tail - thorax
    seg_len2 = float(seg @ seg)
    u = np.clip(((xx - thorax[0]) * seg[0] + (yy - thorax[1]) * seg[1]) / seg_len2, 0.0, 1.0)
    px = thorax[0] + u * seg[0]
    py = thorax[1] + u * seg[1]
    d2 = (xx - px) ** 2 + (yy - py) ** 2
    width = 2.2 - 1.2 * u
    tail_img = (150.0 - 60.0 * u) * np.exp(-d2 / (2.0 * width**2))
    tail_img = np.maximum(tail_img, blob(tail, 1.6, 110.0))
    # Thorax: a larger, medium-bright elongated body; head: a small, very bright blob.
    axis = (head - thorax) / _HEAD_DIST
    dx, dy = xx - thorax[0], yy - thorax[1]
    along = dx * axis[0] + dy * axis[1]
    across = -dx * axis[1] + dy * axis[0]
    body = 170.0 * np.exp(-(along**2) / (2.0 * 5.5**2) - across**2 / (2.0 * 3.5**2))
    head_img = blob(head, 2.6, 235.0)
    animal = np.maximum(np.maximum(tail_img, body), head_img)
    img = img + animal + rng.normal(0.0, 5.0, size=(h, w))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _background(rng: np.random.Generator) -> np.ndarray:
    """A dark, smooth, fixed background (so frames differ only by the animal and noise)."""
    h, w = IMAGE_SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    bg = np.full((h, w), 22.0)
    for _ in range(3):
        kx, ky = rng.uniform(0.5, 2.0, size=2) * 2.0 * math.pi / w
        ph = rng.uniform(0.0, 2.0 * math.pi)
        bg += 4.0 * np.sin(kx * xx + ky * yy + ph)
    return bg


def make_demo_data(out_dir: Path, *, n_frames: int = DEFAULT_N_FRAMES, seed: int = 0) -> DemoData:
    """Write the demo dataset, its held-out ground truth and the demo configs to ``out_dir``.

    See the module docstring for the files and the ground-truth format. Existing files of the
    same names are overwritten. ``n_frames`` must leave at least 2 labeled frames and 1
    held-out frame (``n_frames >= 5``). Deterministic for a given ``(n_frames, seed)``.
    """
    import imageio.v3 as iio  # a sleap-io dependency

    if n_frames < HELD_OUT_OFFSET + 2:
        raise ValueError(f"n_frames must be >= {HELD_OUT_OFFSET + 2}, got {n_frames}")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    poses = _poses(n_frames, rng)
    background = _background(rng)
    held_out = set(held_out_frame_indices(n_frames))

    nodes = {name: sio.Node(name) for name in NODE_NAMES}
    skeleton = sio.Skeleton(
        nodes=list(nodes.values()),
        edges=[sio.Edge(nodes[a], nodes[b]) for a, b in EDGES],
        name="demo-animal",
    )

    labels_path = out_dir / LABELS_FILENAME
    with tempfile.TemporaryDirectory(prefix="sleap-rtc-demo-") as tmp:
        frame_paths: list[str] = []
        for i in range(n_frames):
            path = Path(tmp) / f"frame_{i:05d}.png"
            iio.imwrite(path, _render(poses[i], rng, background), extension=".png")
            frame_paths.append(str(path))
        video = sio.Video.from_filename(frame_paths, grayscale=True)
        labeled_frames = [
            sio.LabeledFrame(
                video=video,
                frame_idx=i,
                instances=[sio.Instance.from_numpy(poses[i].copy(), skeleton=skeleton)],
            )
            for i in range(n_frames)
            if i not in held_out
        ]
        suggestions = [sio.SuggestionFrame(video=video, frame_idx=i) for i in sorted(held_out)]
        labels = sio.Labels(
            labeled_frames=labeled_frames,
            videos=[video],
            skeletons=[skeleton],
            suggestions=suggestions,
        )
        # Embedding reads the PNGs, so it must happen before the temp dir goes away.
        labels.save(str(labels_path), embed="user+suggestions", verbose=False)
        video.close()

    ground_truth: dict[str, Any] = {
        "format": GROUND_TRUTH_FORMAT,
        "version": GROUND_TRUTH_VERSION,
        "labels": LABELS_FILENAME,
        "image_size": list(IMAGE_SIZE),
        "seed": seed,
        "n_frames": n_frames,
        "skeleton": {"nodes": list(NODE_NAMES), "edges": [list(e) for e in EDGES]},
        "frames": [
            {
                "video_index": 0,
                "frame_index": i,
                "points": [[float(x), float(y)] for x, y in poses[i]],
            }
            for i in sorted(held_out)
        ],
    }
    ground_truth_path = out_dir / GROUND_TRUTH_FILENAME
    ground_truth_path.write_text(json.dumps(ground_truth, indent=2) + "\n", encoding="utf-8")

    configs_dir = out_dir / "configs"
    configs_dir.mkdir(exist_ok=True)
    configs: dict[str, Path] = {}
    for name in CONFIG_NAMES:
        dest = configs_dir / f"{name}.yaml"
        shutil.copyfile(packaged_config_path(name), dest)
        configs[name] = dest

    return DemoData(labels_path=labels_path, ground_truth_path=ground_truth_path, configs=configs)


def load_ground_truth(ground_truth_path: Path) -> dict[str, Any]:
    """Read and check a ``ground_truth.json`` written by :func:`make_demo_data`."""
    data = json.loads(Path(ground_truth_path).read_text(encoding="utf-8"))
    if data.get("format") != GROUND_TRUTH_FORMAT or data.get("version") != GROUND_TRUTH_VERSION:
        raise ValueError(f"{ground_truth_path} is not a sleap-rtc demo ground-truth file (v1)")
    return data


def _instance_points(instance: Any, node_names: list[str]) -> np.ndarray:
    """Return an instance's (n_nodes, 2) coordinates in ``node_names`` order (NaN if absent)."""
    pts = np.asarray(instance.numpy(), dtype=np.float64)[:, :2]
    names = [n.name for n in instance.skeleton.nodes]
    out = np.full((len(node_names), 2), np.nan)
    for j, name in enumerate(node_names):
        if name in names:
            out[j] = pts[names.index(name)]
    return out


def mean_error_px(predictions_path: Path, ground_truth_path: Path) -> ErrorReport:
    """Mean Euclidean node error (pixels) of the predictions on the held-out frames.

    For each ground-truth frame, the prediction is looked up by (video index in the
    predictions file, frame index); nodes are matched by name. If the frame has several
    instances (predicted or user), the one with the smallest mean error over its non-NaN
    nodes is scored. NaN predicted nodes are missing: they are left out of the mean and
    counted in ``n_nodes_missing``. A frame with no instance, or only all-NaN instances,
    counts in ``n_frames_missing`` and is left out of the mean. ``mean_px`` averages over all
    scored nodes of all scored frames; it is ``nan`` when nothing could be scored.
    """
    gt = load_ground_truth(ground_truth_path)
    node_names: list[str] = list(gt["skeleton"]["nodes"])
    labels = sio.load_slp(str(predictions_path))

    frames_by_key: dict[tuple[int, int], Any] = {}
    for lf in labels.labeled_frames:
        try:
            video_index = labels.videos.index(lf.video)
        except ValueError:
            continue
        frames_by_key[(video_index, int(lf.frame_idx))] = lf

    distances: list[float] = []
    n_scored = n_missing = n_nodes_missing = 0
    for frame in gt["frames"]:
        truth = np.asarray(frame["points"], dtype=np.float64)
        lf = frames_by_key.get((int(frame["video_index"]), int(frame["frame_index"])))
        best: np.ndarray | None = None
        best_mean = math.inf
        for inst in [] if lf is None else lf.instances:
            d = np.linalg.norm(_instance_points(inst, node_names) - truth, axis=-1)
            ok = ~np.isnan(d)
            if ok.any() and float(d[ok].mean()) < best_mean:
                best, best_mean = d, float(d[ok].mean())
        if best is None:
            n_missing += 1
            continue
        n_scored += 1
        ok = ~np.isnan(best)
        n_nodes_missing += int((~ok).sum())
        distances.extend(float(x) for x in best[ok])

    mean = float(np.mean(distances)) if distances else float("nan")
    return ErrorReport(
        mean_px=mean,
        n_frames_scored=n_scored,
        n_frames_missing=n_missing,
        n_nodes_missing=n_nodes_missing,
    )


__all__ = [
    "DEFAULT_N_FRAMES",
    "NODE_NAMES",
    "DemoData",
    "ErrorReport",
    "held_out_frame_indices",
    "load_ground_truth",
    "make_demo_data",
    "mean_error_px",
]
