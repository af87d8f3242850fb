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


def _shim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> None:
    """Put ``name`` (a shell script ``body``) before the real tools on PATH."""
    import os

    shims = tmp_path / "bin"
    shims.mkdir(exist_ok=True)
    (shims / name).write_text("#!/bin/sh\n" + body)
    (shims / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")


def test_states_without_accounting_come_from_squeue_even_for_forgotten_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster without accounting: sacct refuses, and squeue refuses a query naming an
    id it has forgotten. The ids it still knows are answered; the rest are missing."""
    from sleap_rtc.engine.backends.slurm.tools import SlurmClient

    known = sbatch("--wrap", "sleep 30", cwd=tmp_path)
    forgotten = "99999990"  # no such job: squeue answers "Invalid job id specified"
    _shim(
        tmp_path,
        monkeypatch,
        "sacct",
        'echo "sacct: error: Slurm accounting storage is disabled" >&2\nexit 1\n',
    )
    try:
        states = SlurmClient().job_states([known, forgotten])
        assert states.get(known) in {"PENDING", "RUNNING"} and forgotten not in states
    finally:
        subprocess.run(["scancel", known], check=False)


def test_a_job_slurm_forgot_ends_lost_instead_of_being_waited_for_forever() -> None:
    from sleap_rtc.engine.backends.slurm.tools import LOST, monitor_jobs

    final = monitor_jobs(["99999991"], until_done=True, interval=0.2, timeout=30, lost_after_s=1.0)
    assert final == {"99999991": LOST}


def test_a_chatty_sbatch_still_gives_the_job_id_and_a_silent_one_is_found_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some sites' sbatch prints notes before the id; one that prints no id at all
    still queued the job, which squeue finds by the script's job name."""
    import shutil

    from sleap_rtc.engine.backends.slurm.tools import SlurmClient

    real = shutil.which("sbatch")
    script = tmp_path / "job.sbatch"
    script.write_text(f"#!/bin/bash\n#SBATCH --job-name=chatty-{tmp_path.name}\nsleep 30\n")
    noisy = f'echo "NOTE: your fairshare is low"\nexec {real} "$@"\n'
    _shim(tmp_path, monkeypatch, "sbatch", noisy)
    ids = []
    try:
        ids.append(SlurmClient().sbatch(script, cwd=tmp_path))
        assert ids[0].isdigit()
        _shim(tmp_path, monkeypatch, "sbatch", f'{real} "$@" > /dev/null\necho "queued."\n')
        ids.append(SlurmClient().sbatch(script, cwd=tmp_path))
        assert ids[1].isdigit() and int(ids[1]) > int(ids[0])
        listed = subprocess.run(
            ["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], capture_output=True, text=True
        ).stdout.split()
        assert sorted(listed) == sorted(ids)
    finally:
        subprocess.run(["scancel", *ids], check=False)
