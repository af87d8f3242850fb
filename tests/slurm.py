"""The dev SLURM cluster for tests (``scripts/slurm-dev-cluster.sh``).

Tests use a cluster that is already running (``.ci/run`` starts it and stops it on
exit); without one they skip, or fail when ``SLEAP_RTC_REQUIRE_SLURM=1``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REQUIRE_ENV = "SLEAP_RTC_REQUIRE_SLURM"


def slurm_unavailable_reason() -> str | None:
    if shutil.which("sbatch") is None:
        return "SLURM is not installed (scripts/slurm-dev-cluster.sh start installs and starts it)"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return "no SLURM controller answers (scripts/slurm-dev-cluster.sh start)"
    return None


@pytest.fixture(scope="session")
def slurm() -> None:
    """A running SLURM cluster, or a skip (a failure with SLEAP_RTC_REQUIRE_SLURM=1)."""
    reason = slurm_unavailable_reason()
    if reason:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
        pytest.skip(reason)


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.partition("|")
        states[job_id] = state.split()[0] if state else ""
    return states


def wait_states(job_ids: list[str], done: set[str], timeout: float = 60) -> dict[str, str]:
    """Poll sacct until every job is in one of ``done``; the states."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = sacct_states(job_ids)
        if len(states) == len(job_ids) and all(s in done for s in states.values()):
            return states
        time.sleep(0.5)
    raise AssertionError(f"jobs {job_ids} not finished after {timeout} s: {states}")


def cancel_jobs_under(folder: Path) -> list[str]:
    """Cancel every queued or running job whose working folder is under ``folder``.

    For fixtures whose jobs were submitted by another process (a worker), so that a
    failing test leaves nothing on the cluster.
    """
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i|%Z"], capture_output=True, text=True, timeout=30
    ).stdout
    ids = []
    for line in out.splitlines():
        job_id, _, workdir = line.partition("|")
        if workdir and Path(workdir).is_relative_to(folder):
            ids.append(job_id)
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)
    return ids
