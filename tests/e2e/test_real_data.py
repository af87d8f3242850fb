"""Labels made on another machine, through ``sleap-rtc local`` with real sleap-nn.

The labels store a Windows path for their video; the worker refuses them naming the
file it found by name and the ``--path-map`` that uses it; with that map (on the
command line, or in ``worker.toml``) the same labels train and track, with
``--set`` reaching sleap-nn, and the user's labels file is never changed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.labels import labels_from_elsewhere

pytestmark = pytest.mark.slow

STORED = "C:\\Users\\ana\\mice\\demo.mp4"


def _local(root: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLEAP_RTC_HOME": str(home), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "sleap_rtc", "local", *args, "--mount", f"{root}:lab"]
    argv += ["--models-dir", str(root / "models"), "--device", "cpu"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def test_labels_from_another_machine_train_and_track_with_a_path_map(
    demo_root: Path, tmp_path: Path
) -> None:
    project = demo_root / "elsewhere"
    video = project / "videos" / "demo.mp4"
    labels = labels_from_elsewhere(
        next(demo_root.glob("*/demo.pkg.slp")), project / "laptop.slp", stored=STORED, video=video
    )
    before = labels.read_bytes()
    config = next(demo_root.glob("*/configs/single_instance.yaml"))
    home = tmp_path / "home"
    train = ["train", "--config", str(config), "--labels", str(labels), "--max-epochs", "1"]

    refused = _local(demo_root, *train, home=home)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    out = " ".join(refused.stdout.split())  # lines joined: the terminal wraps them
    assert f"labels_path.videos[0]: video 0 of {labels} is C:/Users/ana/mice/demo.mp4" in out
    assert f"found by name on this worker: {video}" in out
    assert f"add --path-map C:/Users/ana/mice {project / 'videos'}" in out

    mapped = _local(
        demo_root,
        *train,
        "--run-name",
        "mapped",
        "--path-map",
        "C:\\Users\\ana\\mice",
        str(project / "videos"),
        "--set",
        "trainer_config.train_steps_per_epoch=3",
        home=home,
    )
    assert mapped.returncode == 0, mapped.stdout + mapped.stderr
    model = demo_root / "models" / "mapped"
    # Quiet by default: the accepted line, the bar, and a summary with the next command.
    lines = mapped.stdout.splitlines()
    assert len(lines) <= 15, mapped.stdout
    assert re.search(r"^job \w+ complete in \d+:\d\d:\d\d$", mapped.stdout, re.M)
    assert f"  model: {model}" in lines
    assert any(re.match(r"    1 epoch · best val loss [\d.e-]+ \(epoch 1\)", x) for x in lines)
    assert (
        f"  next: sleap-rtc local track --mount {demo_root}:lab --data-path {labels} "
        f"--model-paths {model}"
    ) in lines
    assert (model / "best.ckpt").is_file()
    saved = yaml.safe_load((model / "training_config.yaml").read_text())
    assert saved["trainer_config"]["train_steps_per_epoch"] == 3
    assert labels.read_bytes() == before

    # The worker's own map serves every job; tracking reads the same labels through it.
    worker_toml = tmp_path / "worker.toml"
    worker_toml.write_text(
        f"[[path_maps]]\nfrom = 'C:/Users/ana/mice'\nto = '{project / 'videos'}'\n",
        encoding="utf-8",
    )
    output = project / "predictions.slp"
    tracked = _local(
        demo_root,
        "track",
        "--worker-config",
        str(worker_toml),
        "--data-path",
        str(labels),
        "--model-paths",
        str(model),
        "--output",
        str(output),
        "--frames",
        "0-7",
        "--peak-threshold",
        "0",  # the 3-step model is weak: keep every peak, so each frame has an instance
        home=home,
    )
    assert tracked.returncode == 0, tracked.stdout + tracked.stderr
    import sleap_io as sio

    predictions = sio.load_slp(str(output), open_videos=False)
    assert predictions.videos[0].filename == str(video)
    assert len(predictions.labeled_frames) == 8
    assert labels.read_bytes() == before
