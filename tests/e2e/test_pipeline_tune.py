"""`sleap-rtc pipeline tune-batch-size` with real sleap-nn trials on the demo data (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sleap_rtc.demo.data import DemoData, make_demo_data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    return make_demo_data(tmp_path_factory.mktemp("tune") / "demo data")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Home, sleap-rtc state and temporary files all under this test's folder."""
    for name in ("home", "state", "tmp"):
        (tmp_path / name).mkdir()
    return {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "SLEAP_RTC_HOME": str(tmp_path / "state"),
        "TMPDIR": str(tmp_path / "tmp"),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "disabled",
    }


def tune(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sleap_rtc", "pipeline", "tune-batch-size", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_forced_on_a_cpu_it_climbs_to_the_cap(demo: DemoData, env: dict[str, str]) -> None:
    config, labels = demo.configs["single_instance"], demo.labels_path
    ran = tune(
        env,
        *("--config", config, "--labels", labels, "--device", "cpu", "--force"),
        *("--start", "2", "--max-batch-size", "8", "--json"),
    )
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert result["batch_size"] == 8 and result["tuned"] is True and result["error"] is None
    assert [(t["batch_size"], t["outcome"]) for t in result["trials"]] == [
        (2, "fits"),
        (4, "fits"),
        (8, "fits"),
    ]
    assert all(t["seconds"] > 0 for t in result["trials"])
    assert "batch size 4: fits" in ran.stderr
    assert ran.stdout.count("\n") == 1  # the JSON object, on stdout alone
    # The trials' checkpoint folders are gone.
    assert list(Path(env["TMPDIR"]).glob("sleap-rtc-tune-*")) == []


def test_without_a_gpu_it_keeps_the_starting_size(demo: DemoData, env: dict[str, str]) -> None:
    config, labels = demo.configs["single_instance"], demo.labels_path
    on_cpu = tune(env, "--config", config, "--labels", labels, "--device", "cpu", "--start", "6")
    assert on_cpu.returncode == 0, on_cpu.stderr
    assert on_cpu.stdout == "6\n"
    assert "keeping batch size 6; tuning needs a GPU's memory limit" in on_cpu.stderr
    assert "training" not in on_cpu.stderr  # no trial ran

    # auto: without a GPU the config's own batch size (4) is kept; with one, it is
    # probed (at most one trial here).
    auto = tune(env, "--config", config, "--labels", labels, "--max-trials", "1", "--json")
    assert auto.returncode == 0, auto.stderr
    result = json.loads(auto.stdout)
    if result["tuned"]:
        assert [t["batch_size"] for t in result["trials"]] == [4]
    else:
        assert result["batch_size"] == 4 and result["trials"] == []
        assert "no GPU: keeping batch size 4" in auto.stderr


def test_a_broken_trial_exits_1_with_its_reason(
    demo: DemoData, env: dict[str, str], tmp_path: Path
) -> None:
    config = yaml.safe_load(demo.configs["single_instance"].read_text())
    config["trainer_config"]["optimizer_name"] = "NotAnOptimizer"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(config))
    ran = tune(
        env,
        *("--config", broken, "--labels", demo.labels_path),
        *("--device", "cpu", "--force", "--start", "2", "--json"),
    )
    assert ran.returncode == 1
    assert "failed, not for lack of memory" in ran.stderr
    assert "ValueError: optimizer_name must be one of" in ran.stderr
    # Not a batch size: the JSON says why, with the one trial that ran.
    result = json.loads(ran.stdout)
    assert result["batch_size"] is None and "optimizer_name" in result["error"]
    assert [(t["batch_size"], t["outcome"]) for t in result["trials"]] == [(2, "error")]


def test_missing_labels_exit_1_before_any_trial(demo: DemoData, env: dict[str, str]) -> None:
    missing = demo.labels_path.with_name("missing.slp")
    config = demo.configs["single_instance"]
    ran = tune(env, "--config", config, "--labels", missing, "--device", "cpu", "--force")
    assert ran.returncode == 1 and ran.stdout == ""
    assert f"labels not found: {missing}" in ran.stderr
