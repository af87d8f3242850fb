"""Tests for the demo data generator, its ground truth, scoring and the packaged configs.

Fast (a few seconds): they write the demo data with sleap-io but never run sleap-nn.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

sio = pytest.importorskip("sleap_io")

from sleap_rtc.demo import CONFIG_NAMES, packaged_config_path  # noqa: E402
from sleap_rtc.demo.data import (  # noqa: E402
    DEFAULT_N_FRAMES,
    NODE_NAMES,
    DemoData,
    held_out_frame_indices,
    make_demo_data,
    mean_error_px,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    return make_demo_data(tmp_path_factory.mktemp("demo") / "out", seed=0)


@pytest.fixture(scope="module")
def ground_truth(demo: DemoData) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(demo.ground_truth_path.read_text())
    return data


def test_writes_expected_files(demo: DemoData) -> None:
    out = demo.labels_path.parent
    assert demo.labels_path == out / "demo.pkg.slp"
    assert demo.ground_truth_path == out / "ground_truth.json"
    assert set(demo.configs) == set(CONFIG_NAMES)
    for name, path in demo.configs.items():
        assert path == out / "configs" / f"{name}.yaml"
        assert path.read_bytes() == packaged_config_path(name).read_bytes()
    # Nothing else (no stray PNGs) in the output folder.
    assert sorted(p.name for p in out.iterdir()) == ["configs", "demo.pkg.slp", "ground_truth.json"]


def test_no_temporary_files_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    make_demo_data(tmp_path / "out", n_frames=12, seed=3)
    assert list(scratch.iterdir()) == []


def test_package_has_labels_suggestions_and_embedded_images(
    demo: DemoData, ground_truth: dict[str, Any]
) -> None:
    labels = sio.load_slp(str(demo.labels_path))
    held_out = held_out_frame_indices(DEFAULT_N_FRAMES)
    assert 0.1 <= len(held_out) / DEFAULT_N_FRAMES <= 0.2
    assert len(labels.videos) == 1
    assert [n.name for n in labels.skeleton.nodes] == list(NODE_NAMES)
    assert len(labels.labeled_frames) == DEFAULT_N_FRAMES - len(held_out)
    assert len(labels.suggestions) == len(held_out)
    for lf in labels.labeled_frames:
        assert len(lf.user_instances) == 1
        assert not np.isnan(lf.user_instances[0].numpy()).any()

    # Images are embedded in the package itself, for labeled and suggested frames alike.
    video = labels.videos[0]
    assert Path(video.filename).resolve() == demo.labels_path
    assert video.shape == (DEFAULT_N_FRAMES, 128, 128, 1)
    for idx in (labels.labeled_frames[0].frame_idx, held_out[0]):
        img = video[idx]
        assert img.shape == (128, 128, 1)
        assert img.dtype == np.uint8
        assert img.max() > 150  # the animal is there
        assert np.median(img) < 60  # on a dark background


def test_ground_truth_frames_are_exactly_the_unlabeled_suggestions(
    demo: DemoData, ground_truth: dict[str, Any]
) -> None:
    labels = sio.load_slp(str(demo.labels_path))
    assert ground_truth["skeleton"]["nodes"] == list(NODE_NAMES)
    gt_frames = {(f["video_index"], f["frame_index"]) for f in ground_truth["frames"]}
    suggested = {(labels.videos.index(s.video), s.frame_idx) for s in labels.suggestions}
    labeled = {(labels.videos.index(lf.video), lf.frame_idx) for lf in labels.labeled_frames}
    assert gt_frames == suggested
    assert not gt_frames & labeled
    h, w = ground_truth["image_size"]
    for frame in ground_truth["frames"]:
        assert len(frame["points"]) == len(NODE_NAMES)
        for x, y in frame["points"]:
            assert 0 <= x < w and 0 <= y < h


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = make_demo_data(tmp_path / "a", n_frames=12, seed=5)
    b = make_demo_data(tmp_path / "b", n_frames=12, seed=5)
    c = make_demo_data(tmp_path / "c", n_frames=12, seed=6)
    assert a.ground_truth_path.read_text() == b.ground_truth_path.read_text()
    assert a.ground_truth_path.read_text() != c.ground_truth_path.read_text()
    va = sio.load_slp(str(a.labels_path)).videos[0]
    vb = sio.load_slp(str(b.labels_path)).videos[0]
    assert np.array_equal(va[0], vb[0])


def test_rejects_too_few_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_demo_data(tmp_path, n_frames=2)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_configs_are_tiny_sleap_nn_configs(name: str) -> None:
    cfg = yaml.safe_load(packaged_config_path(name).read_text())
    assert set(cfg) == {"data_config", "model_config", "trainer_config"}
    data, trainer = cfg["data_config"], cfg["trainer_config"]
    assert data["train_labels_path"] == ["../demo.pkg.slp"]
    assert data["val_labels_path"] is None
    assert 0 < data["validation_fraction"] < 1
    assert trainer["trainer_accelerator"] == "auto"
    assert trainer["save_ckpt"] is True
    assert trainer["use_wandb"] is False
    assert trainer["min_train_steps_per_epoch"] == 1
    assert trainer["train_steps_per_epoch"] >= 1
    assert trainer["train_data_loader"]["num_workers"] == 0
    assert trainer["online_hard_keypoint_mining"] == {"online_mining": False}
    assert trainer["visualize_preds_during_training"] is False
    heads = {k for k, v in cfg["model_config"]["head_configs"].items() if v is not None}
    assert heads == {name}


def test_top_down_pair_shares_the_anchor() -> None:
    centroid = yaml.safe_load(packaged_config_path("centroid").read_text())
    centered = yaml.safe_load(packaged_config_path("centered_instance").read_text())
    a = centroid["model_config"]["head_configs"]["centroid"]["confmaps"]["anchor_part"]
    b = centered["model_config"]["head_configs"]["centered_instance"]["confmaps"]["anchor_part"]
    assert a == b
    assert a in NODE_NAMES


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_example_configs_equal_packaged_configs(name: str) -> None:
    example = REPO_ROOT / "examples" / "configs" / f"{name}.yaml"
    assert example.read_bytes() == packaged_config_path(name).read_bytes()


# --- mean_error_px ---------------------------------------------------------------------------


def _write_predictions(
    demo: DemoData,
    ground_truth: dict[str, Any],
    path: Path,
    *,
    shift: tuple[float, float] = (0.0, 0.0),
    skip_frames: int = 0,
    nan_node: bool = False,
    decoy: bool = False,
) -> Path:
    """Write a predictions .slp whose instances are the ground truth, altered as asked."""
    labels = sio.load_slp(str(demo.labels_path))
    skeleton = labels.skeleton
    frames = []
    for i, frame in enumerate(ground_truth["frames"][skip_frames:]):
        pts = np.asarray(frame["points"], dtype=np.float64) + np.asarray(shift)
        if nan_node and i == 0:
            pts[1] = np.nan
        instances = [sio.PredictedInstance.from_numpy(pts, skeleton=skeleton, score=1.0)]
        if decoy:
            far = np.full((len(NODE_NAMES), 2), 500.0)
            instances.insert(0, sio.PredictedInstance.from_numpy(far, skeleton=skeleton))
        frames.append(
            sio.LabeledFrame(
                video=labels.videos[frame["video_index"]],
                frame_idx=frame["frame_index"],
                instances=instances,
            )
        )
    sio.Labels(labeled_frames=frames, videos=labels.videos, skeletons=[skeleton]).save(
        str(path), verbose=False
    )
    return path


def test_mean_error_zero_for_ground_truth(
    demo: DemoData, ground_truth: dict[str, Any], tmp_path: Path
) -> None:
    pred = _write_predictions(demo, ground_truth, tmp_path / "pred.slp")
    report = mean_error_px(pred, demo.ground_truth_path)
    assert report.mean_px == pytest.approx(0.0, abs=1e-4)
    assert report.n_frames_scored == len(ground_truth["frames"])
    assert report.n_frames_missing == 0
    assert report.n_nodes_missing == 0


def test_mean_error_of_a_3_4_shift_is_5(
    demo: DemoData, ground_truth: dict[str, Any], tmp_path: Path
) -> None:
    pred = _write_predictions(demo, ground_truth, tmp_path / "pred.slp", shift=(3.0, 4.0))
    report = mean_error_px(pred, demo.ground_truth_path)
    assert report.mean_px == pytest.approx(5.0, abs=1e-4)
    assert report.n_frames_scored == len(ground_truth["frames"])


def test_mean_error_missing_frames_nan_nodes_and_decoys(
    demo: DemoData, ground_truth: dict[str, Any], tmp_path: Path
) -> None:
    pred = _write_predictions(
        demo,
        ground_truth,
        tmp_path / "pred.slp",
        shift=(3.0, 4.0),
        skip_frames=2,
        nan_node=True,
        decoy=True,
    )
    report = mean_error_px(pred, demo.ground_truth_path)
    assert report.mean_px == pytest.approx(5.0, abs=1e-4)  # the decoy is never chosen
    assert report.n_frames_missing == 2
    assert report.n_frames_scored == len(ground_truth["frames"]) - 2
    assert report.n_nodes_missing == 1


def test_mean_error_is_nan_when_nothing_scored(
    demo: DemoData, ground_truth: dict[str, Any], tmp_path: Path
) -> None:
    n = len(ground_truth["frames"])
    pred = _write_predictions(demo, ground_truth, tmp_path / "pred.slp", skip_frames=n)
    report = mean_error_px(pred, demo.ground_truth_path)
    assert math.isnan(report.mean_px)
    assert report.n_frames_scored == 0
    assert report.n_frames_missing == n


def test_mean_error_rejects_other_json(tmp_path: Path, demo: DemoData) -> None:
    bogus = tmp_path / "gt.json"
    bogus.write_text(json.dumps({"frames": []}))
    with pytest.raises(ValueError):
        mean_error_px(demo.labels_path, bogus)
