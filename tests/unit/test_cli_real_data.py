"""Real lab data through ``sleap-rtc local ... --dry-run``: each mistake labs hit first is
refused before anything runs, with its field, code and what to do (exit 2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from sleap_rtc.cli import cli
from tests.configs import MODEL_CONFIG
from tests.labels import write_labels

CONFIG = "data_config:\n  train_labels_path: [labels.slp]\n{model}trainer_config: {{}}\n"


@pytest.fixture()
def proj(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    write_labels(folder / "labels.slp", frames=12)
    (folder / "config.yaml").write_text(CONFIG.format(model=MODEL_CONFIG))
    model = folder / "model"
    model.mkdir()
    (model / "training_config.yaml").write_text(CONFIG.format(model=MODEL_CONFIG))
    (model / "best.ckpt").write_bytes(b"weights")
    return folder


def _local(proj: Path, *args: str) -> tuple[int, str]:
    argv = ["local", *args, "--mount", f"{proj}:proj", "--models-dir", str(proj / "m")]
    result = CliRunner().invoke(cli, [*argv, "--dry-run"])
    return result.exit_code, " ".join(result.output.split())


def _corrupt(proj: Path) -> list[str]:
    (proj / "corrupt.slp").write_bytes(b"not an HDF5 file at all")
    return ["train", "--config", str(proj / "config.yaml"), "--labels", str(proj / "corrupt.slp")]


def _typo(proj: Path) -> list[str]:
    typo = MODEL_CONFIG.replace("unet: {}", "unet: {filtres: 16}")
    (proj / "typo.yaml").write_text(CONFIG.format(model=typo))
    return ["train", "--config", str(proj / "typo.yaml")]


def _id_model(proj: Path) -> list[str]:
    (proj / "id.yaml").write_text(
        CONFIG.format(model=MODEL_CONFIG.replace("single_instance", "multi_class_bottomup"))
    )
    return ["train", "--config", str(proj / "id.yaml")]


def _last_only(proj: Path) -> list[str]:
    (proj / "model" / "best.ckpt").rename(proj / "model" / "last.ckpt")
    return ["track", "-d", str(proj / "labels.slp"), "-m", str(proj / "model")]


def _track(*extra: str) -> Callable[[Path], list[str]]:
    return lambda proj: ["track", "-d", str(proj / "labels.slp"), "-m", str(proj / "model"), *extra]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_corrupt, "labels_path: {proj}/corrupt.slp is not a SLEAP labels file sleap-io can read"),
        (
            lambda proj: [
                "train",
                "--config",
                str(proj / "config.yaml"),
                "--labels",
                str(proj / "labels.mp4"),
            ],
            "labels_path: {proj}/labels.mp4 is a video; labels_path takes a SLEAP labels file",
        ),
        (_typo, "config[0].model_config.backbone_config.unet.filtres: "),
        (_id_model, "trains an ID model (multi_class_bottomup)"),
        (_last_only, "model_paths: {proj}/model: "),
        (
            _track("--frames", "5-40"),
            "frames: frames 5-40 go past the end of video 0 of {proj}/labels.slp, "
            "which has 12 frames",
        ),
        (_track("--video-index", "3"), "video_index: video_index 3 is past the videos of"),
        (_track("--only-suggested-frames"), "has no suggested frames"),
    ],
)
def test_a_mistake_in_real_data_is_refused_before_anything_runs(
    proj: Path, make: Callable[[Path], list[str]], expected: str
) -> None:
    code, output = _local(proj, *make(proj))
    assert code == 2, output
    assert expected.format(proj=proj) in output, output


def test_a_path_to_best_ckpt_is_taken_as_its_model_folder(proj: Path) -> None:
    code, output = _local(
        proj, "track", "-d", str(proj / "labels.slp"), "-m", str(proj / "model" / "best.ckpt")
    )
    assert code == 0, output
    assert f"--model_paths {proj / 'model'} " in output
