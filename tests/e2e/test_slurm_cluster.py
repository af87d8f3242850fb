"""The dev SLURM cluster runs jobs, chains them and accounts for them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.slurm import wait_states

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("slurm")]
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY"}


def sbatch(*args: str, cwd: Path) -> str:
    out = subprocess.run(
        ["sbatch", "--parsable", *args], capture_output=True, text=True, check=True, cwd=cwd
    ).stdout
    return out.strip().split(";")[0]


def test_a_failed_stage_cancels_its_dependents(tmp_path: Path) -> None:
    first = sbatch("--wrap", "echo hello > first.txt", cwd=tmp_path)
    failing = sbatch(
        f"--dependency=afterok:{first}",
        "--kill-on-invalid-dep=yes",
        "--wrap",
        "exit 3",
        cwd=tmp_path,
    )
    never = sbatch(
        f"--dependency=afterok:{failing}",
        "--kill-on-invalid-dep=yes",
        "--wrap",
        "touch never",
        cwd=tmp_path,
    )
    states = wait_states([first, failing, never], FINISHED)
    assert states == {first: "COMPLETED", failing: "FAILED", never: "CANCELLED"}
    assert (tmp_path / "first.txt").read_text() == "hello\n"
    assert not (tmp_path / "never").exists()


def test_states_of_50_jobs_take_one_sacct_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from sleap_rtc.engine.backends.slurm.tools import SlurmClient

    ids = [sbatch("--wrap", "true", cwd=tmp_path) for _ in range(50)]
    assert all(ids) and len(set(ids)) == 50
    wait_states(ids, FINISHED, timeout=120)
    # A sacct that counts its calls, in front of the real one.
    shims = tmp_path / "bin"
    shims.mkdir()
    calls = tmp_path / "calls"
    real = shutil.which("sacct")
    (shims / "sacct").write_text(f'#!/bin/sh\necho x >> {calls}\nexec {real} "$@"\n')
    (shims / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}:{__import__('os').environ['PATH']}")
    states = SlurmClient().job_states(ids)
    assert set(states) == set(ids) and set(states.values()) == {"COMPLETED"}
    assert calls.read_text().count("x") == 1


def test_monitor_jobs_follows_until_every_job_finished(tmp_path: Path) -> None:
    from sleap_rtc.engine.backends.slurm.tools import monitor_jobs

    ids = [sbatch("--wrap", "sleep 2", cwd=tmp_path), sbatch("--wrap", "exit 4", cwd=tmp_path)]
    seen: list[dict[str, str]] = []
    final = monitor_jobs(ids, until_done=True, interval=0.5, timeout=60, on_update=seen.append)
    assert final == {ids[0]: "COMPLETED", ids[1]: "FAILED"}
    assert len(seen) >= 2 and seen[-1] == final
