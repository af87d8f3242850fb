"""The README's demo, run as a user would: the installed console script."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.servers import Proc, wait_for

pytestmark = pytest.mark.slow


def _sleap_rtc() -> str:
    beside = Path(sys.executable).with_name("sleap-rtc")
    return str(beside) if beside.exists() else (shutil.which("sleap-rtc") or "sleap-rtc")


def test_demo_trains_tracks_and_scores_with_its_run_on_the_dashboard(tmp_path: Path) -> None:
    """The README's demo with ``--keep``: the dashboard shows the training while it runs,
    the demo scores the predictions, and the server stays up until Ctrl-C."""
    env = {**os.environ, "SLEAP_RTC_HOME": str(tmp_path / "home")}
    proc = Proc([_sleap_rtc(), "demo", "--keep"], env, "demo")
    try:
        found = proc.wait_line(r"dashboard: (\S+)  \(log in as (\S+), password (\S+)\)", 120)
        url, user, password = found.groups()
        base = url.split("/rooms/")[0]
        assert url == f"{base}/rooms/demo/jobs"
        http = httpx.Client(base_url=base, timeout=10)
        login = http.post("/v1/auth/web/login", json={"username": user, "password": password})
        assert login.status_code == 200, login.text

        def training_shown() -> bool:
            jobs = http.get("/v1/rooms/demo/jobs").json()["jobs"]
            return any(j["kind"] == "train" and j["state"] == "RUNNING" for j in jobs)

        wait_for(training_shown, 300, "the demo's training RUNNING on the dashboard", 0.5)
        last = proc.wait_line(r"^demo (ok|FAILED): ", 600).string
        match = re.fullmatch(
            r"demo ok: train=(\d+\.\d)s track=(\d+\.\d)s mean_error_px=(\d+\.\d\d)", last
        )
        assert match, proc.output()
        assert float(match.group(3)) < 5.0
        proc.wait_line(r"Ctrl-C stops them", 10)

        # Still up: both jobs are on the dashboard, finished.
        jobs = http.get("/v1/rooms/demo/jobs").json()["jobs"]
        assert sorted((j["kind"], j["state"]) for j in jobs) == [
            ("track", "COMPLETE"),
            ("train", "COMPLETE"),
        ]
        assert http.get(url).status_code == 200
        proc.signal(signal.SIGINT)
        assert proc.process.wait(30) == 0, proc.output()
        assert "stopped" in proc.stdout
    finally:
        proc.stop()
    # Everything landed under SLEAP_RTC_HOME, in a fresh demo folder.
    [workdir] = (tmp_path / "home" / "cache" / "demo").iterdir()
    assert (workdir / "data" / "predictions.slp").is_file()
    assert (workdir / "models" / "demo" / "best.ckpt").is_file()
    assert f"predictions: {workdir / 'data' / 'predictions.slp'}" in proc.stdout


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
