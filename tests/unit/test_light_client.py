"""A client-only install stays light: no torch, sleap-nn or zmq on the import path."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

HEAVY = ("torch", "sleap_nn", "sleap_io", "zmq", "lightning", "numpy")


def test_core_dependencies_exclude_the_ml_stack() -> None:
    meta = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    core = " ".join(meta["project"]["dependencies"]).lower()
    assert not any(name.replace("_", "-") in core for name in HEAVY)
    worker = " ".join(meta["project"]["optional-dependencies"]["worker"]).lower()
    assert "sleap-nn" in worker and "pyzmq" in worker


def test_cli_and_jobs_import_without_heavy_modules() -> None:
    code = (
        "import sys, sleap_rtc, sleap_rtc.jobs, sleap_rtc.jobs.validation, sleap_rtc.cli, "
        "sleap_rtc.worker, sleap_rtc.engine.local;"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
