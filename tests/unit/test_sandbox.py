"""The job sandbox: what a launched command can open, its environment, the start-up checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sleap_rtc.engine import sandbox
from sleap_rtc.engine.sandbox import SandboxPolicy, job_environment, wrap
from sleap_rtc.worker.config import MountConfig, WorkerConfig, WorkerConfigError

needs_landlock = pytest.mark.skipif(
    sandbox.unavailable_reason() is not None, reason=str(sandbox.unavailable_reason())
)

PROBE = """
import os, sys
for path in sys.argv[1:]:
    try:
        with open(path, "a" if path.endswith(".new") else "r"):
            pass
        print(path, "ok")
    except OSError as exc:
        print(path, type(exc).__name__)
"""


@needs_landlock
def test_a_sandboxed_command_opens_only_what_its_policy_names(tmp_path: Path) -> None:
    shared, readonly, private = tmp_path / "rw", tmp_path / "ro", tmp_path / "private"
    for folder in (shared, readonly, private):
        folder.mkdir()
        (folder / "f").write_text("x")
    policy = SandboxPolicy(read=(str(readonly),), write=(str(shared),))
    argv = [
        *wrap([sys.executable, "-c", PROBE], policy),
        str(shared / "f"),
        str(shared / "g.new"),
        str(readonly / "f"),
        str(readonly / "g.new"),
        str(private / "f"),
        "/etc/hostname",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    seen = dict(line.rsplit(" ", 1) for line in result.stdout.splitlines())
    assert seen == {
        str(shared / "f"): "ok",
        str(shared / "g.new"): "ok",
        str(readonly / "f"): "ok",
        str(readonly / "g.new"): "PermissionError",
        str(private / "f"): "PermissionError",
        "/etc/hostname": "PermissionError",
    }


def test_the_launcher_reports_a_bad_policy_and_a_missing_command() -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "sleap_rtc.engine.sandbox", "--policy", "{", "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 126 and "sleap-rtc sandbox:" in bad.stderr
    if sandbox.unavailable_reason() is None:
        missing = subprocess.run(
            wrap(["/no/such/program"], SandboxPolicy()), capture_output=True, text=True
        )
        assert missing.returncode == 127 and "can't run /no/such/program" in missing.stderr


def test_job_environment_keeps_allowed_names_and_never_secrets(tmp_path: Path) -> None:
    base = {
        "PATH": "/usr/bin",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "1",
        "SLEAP_RTC_WORKER_KEY": "srk_secret",
        "SLEAP_RTC_DATABASE_URL": "postgresql://u:p@h/db",
        "AWS_SECRET_ACCESS_KEY": "x",
        "GITHUB_TOKEN": "x",
        "MY_LAB_SETTING": "on",
        "MY_LAB_API_KEY": "x",
        "HOME": "/root",
        "RANDOM_THING": "x",
    }
    env = job_environment(
        base, allow=["MY_LAB_*"], work_dir=tmp_path, extra={"EXTRA_TOKEN": "x", "A": "b"}
    )
    assert env["PATH"] == "/usr/bin" and env["OMP_NUM_THREADS"] == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["MY_LAB_SETTING"] == "on"
    assert env["HOME"] == str(tmp_path) and env["TMPDIR"] == str(tmp_path / "tmp")
    assert env["A"] == "b"
    for gone in (
        "SLEAP_RTC_WORKER_KEY",
        "SLEAP_RTC_DATABASE_URL",
        "AWS_SECRET_ACCESS_KEY",
        "GITHUB_TOKEN",
        "MY_LAB_API_KEY",
        "RANDOM_THING",
        "EXTRA_TOKEN",
    ):
        assert gone not in env


def _config(tmp_path: Path, mount: Path, **kw: object) -> WorkerConfig:
    mount.mkdir(parents=True, exist_ok=True)
    return WorkerConfig(
        mounts=[MountConfig(path=str(mount), label="data")],
        models_dir=tmp_path / "models",
        state_dir=tmp_path / "state",
        **kw,
    )  # type: ignore[arg-type]


@needs_landlock
def test_a_shared_worker_refuses_a_mount_that_holds_its_state(tmp_path: Path) -> None:
    config = _config(tmp_path, tmp_path)  # the whole folder, state included
    with pytest.raises(WorkerConfigError, match=r"mount 'data'.*holds the worker's"):
        config.check_sandbox(config.build_mounts())
    assert "sandboxed" in config.check_sandbox(config.build_mounts(), shared=False)
    fine = _config(tmp_path, tmp_path / "data")
    assert fine.check_sandbox(fine.build_mounts()).startswith("jobs run sandboxed (landlock")


def test_no_landlock_means_no_start_unless_the_sandbox_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "unavailable_reason", lambda: "this kernel has no Landlock")
    config = _config(tmp_path, tmp_path / "data")
    with pytest.raises(WorkerConfigError, match=r'no Landlock.*sandbox = "off"'):
        config.check_sandbox(config.build_mounts())
    off = _config(tmp_path, tmp_path / "data", sandbox="off")
    assert off.check_sandbox(off.build_mounts()).startswith('WARNING: sandbox = "off"')


@needs_landlock
def test_the_launcher_starts_light_and_quiet() -> None:
    """It runs before every job step: no pydantic, torch or yaml, and nothing on stderr
    (a job's log would show it)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *wrap(["/bin/true"], SandboxPolicy())[1:]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert not {"pydantic", "yaml", "torch"} & imported
    noise = [line for line in result.stderr.splitlines() if not line.startswith("import time")]
    assert noise == []
