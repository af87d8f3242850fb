"""The README's demo, run as a user would: the installed console script."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _sleap_rtc() -> str:
    beside = Path(sys.executable).with_name("sleap-rtc")
    return str(beside) if beside.exists() else (shutil.which("sleap-rtc") or "sleap-rtc")


def test_demo_trains_tracks_and_scores(tmp_path: Path) -> None:
    env = {**os.environ, "SLEAP_RTC_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [_sleap_rtc(), "demo"], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(
        r"demo ok: train=(\d+\.\d)s track=(\d+\.\d)s mean_error_px=(\d+\.\d\d)", last
    )
    assert match, last
    assert float(match.group(3)) < 5.0
    # Everything landed under SLEAP_RTC_HOME, in a fresh demo folder.
    [workdir] = (tmp_path / "home" / "cache" / "demo").iterdir()
    assert (workdir / "data" / "predictions.slp").is_file()
    assert (workdir / "models" / "demo" / "best.ckpt").is_file()
    assert f"predictions: {workdir / 'data' / 'predictions.slp'}" in result.stdout


def test_make_demo_data_cli(tmp_path: Path) -> None:
    out = tmp_path / "demo data"
    result = subprocess.run(
        [_sleap_rtc(), "make-demo-data", str(out)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    for name in (
        "demo.pkg.slp",
        "ground_truth.json",
        "configs/single_instance.yaml",
        "configs/centroid.yaml",
        "configs/centered_instance.yaml",
    ):
        assert (out / name).is_file(), name
        assert str(out / name) in result.stdout or name.startswith("configs/")
