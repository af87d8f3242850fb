"""The SLURM backend on a real single-node SLURM: jobs become sbatch jobs whose
events come back through the spool folder, and SLURM's own verdicts (a failed
setup line, a job cancelled while pending or running, an scancel from outside)
reach the job's result."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sleap_rtc.engine.backend import (
    BackendEvent,
    EngineJob,
    Finished,
    LogLine,
    Step,
    StepStarted,
    Submitted,
)
from sleap_rtc.engine.backends.slurm.backend import SlurmBackend, SlurmJob
from sleap_rtc.engine.backends.slurm.settings import SlurmSettings
from sleap_rtc.jobs.states import JobState
from tests.slurm import sacct_states, wait_states

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("slurm")]


def _job(tmp_path: Path, *scripts: str, name: str = "job") -> EngineJob:
    steps = [
        Step(
            name=f"step{i + 1}",
            kind="track",
            argv=[sys.executable, "-c", code],
            index=i + 1,
            total=len(scripts),
        )
        for i, code in enumerate(scripts)
    ]
    return EngineJob(job_id=f"{name}-{tmp_path.name[-8:]}", kind="track", steps=steps, cwd=tmp_path)


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[SlurmBackend]:
    made = SlurmBackend(
        SlurmSettings(poll_interval_s=0.5, keep_spool=True),
        spool_dir=tmp_path / "spool",
        cancel_grace_s=2,
    )
    submitted: list[SlurmJob] = []
    original = made.submit

    async def tracked(job: EngineJob) -> SlurmJob:
        handle = await original(job)
        submitted.append(handle)
        return handle

    made.submit = tracked  # type: ignore[method-assign]
    yield made
    ids = [h.slurm_id for h in submitted]
    if ids:  # nothing is left queued or running, also when a test fails
        subprocess.run(["scancel", *ids], capture_output=True, check=False)


async def _collect(handle: SlurmJob, timeout: float = 120) -> list[BackendEvent]:
    async def run() -> list[BackendEvent]:
        return [event async for event in handle.events()]

    return await asyncio.wait_for(run(), timeout)


async def test_steps_run_as_one_sbatch_job_and_report_back(
    backend: SlurmBackend, tmp_path: Path
) -> None:
    job = _job(
        tmp_path,
        "import os; print('hello from', os.environ['SLURM_JOB_ID'])",
        "print('second step'); open('made.txt', 'w').write('x')",
    )
    handle = await backend.submit(job)
    events = await _collect(handle)
    first = events[0]
    assert isinstance(first, Submitted) and first.native_id == f"slurm:{handle.slurm_id}"
    lines = [e.text for e in events if isinstance(e, LogLine)]
    assert f"hello from {handle.slurm_id}" in lines
    assert "second step" in lines
    started = [e.step.index for e in events if isinstance(e, StepStarted)]
    assert started == [1, 2]
    final = events[-1]
    assert isinstance(final, Finished) and final.state is JobState.COMPLETE, final
    assert (tmp_path / "made.txt").read_text() == "x"  # ran in the job's folder
    assert wait_states([handle.slurm_id], {"COMPLETED"})[handle.slurm_id] == "COMPLETED"
    script = (tmp_path / "spool" / job.job_id / "job.sbatch").read_text()
    assert "set -euo pipefail" in script and "sleap_rtc.engine.backends.slurm.node" in script


async def test_steps_of_one_batch_job_share_one_warm_engine(
    backend: SlurmBackend, tmp_path: Path
) -> None:
    from sleap_rtc.engine.warm_client import sleap_nn_script

    steps = [
        Step(name=f"v{i}", kind="track", argv=[sleap_nn_script(), "--version"], index=i, total=2)
        for i in (1, 2)
    ]
    job = EngineJob(job_id=f"warm-{tmp_path.name[-8:]}", kind="track", steps=steps, cwd=tmp_path)
    handle = await backend.submit(job)
    events = await _collect(handle, timeout=300)
    final = events[-1]
    assert isinstance(final, Finished) and final.state is JobState.COMPLETE, final
    lines = [e.text for e in events if isinstance(e, LogLine)]
    assert any(
        line.endswith("2 steps start from one warm engine on " + socket.gethostname())
        for line in lines
    ), lines
    assert not [line for line in lines if "starts cold" in line], lines
    assert len([line for line in lines if line.startswith("sleap-nn ")]) == 2, lines
    spool = tmp_path / "spool" / job.job_id
    assert "--warm-engine" in (spool / "job.sbatch").read_text()
    # Once the batch job has ended, the engine's folder is gone with it.
    assert wait_states([handle.slurm_id], {"COMPLETED"})[handle.slurm_id] == "COMPLETED"
    assert not list(spool.glob("sleap-rtc-warm-*"))


async def test_a_failing_step_fails_the_job_and_slurm_agrees(
    backend: SlurmBackend, tmp_path: Path
) -> None:
    handle = await backend.submit(
        _job(tmp_path, "raise SystemExit('ValueError: bad input')", "print('never')")
    )
    events = await _collect(handle)
    final = events[-1]
    assert isinstance(final, Finished) and final.state is JobState.FAILED
    assert final.exit_code == 1 and "ValueError: bad input" in (final.reason or ""), final
    assert "never" not in [e.text for e in events if isinstance(e, LogLine)]
    assert wait_states([handle.slurm_id], {"FAILED"})[handle.slurm_id] == "FAILED"


async def test_a_failing_setup_line_fails_the_job_with_its_output(tmp_path: Path) -> None:
    backend = SlurmBackend(
        SlurmSettings(poll_interval_s=0.5, setup=["echo loading; no-such-module-cmd cuda/12"]),
        spool_dir=tmp_path / "spool",
    )
    handle = await backend.submit(_job(tmp_path, "print('never')"))
    events = await _collect(handle)
    final = events[-1]
    assert isinstance(final, Finished) and final.state is JobState.FAILED
    reason = final.reason or ""
    assert f"SLURM job {handle.slurm_id} ended FAILED" in reason, reason
    assert "no-such-module-cmd" in reason, reason
    lines = [e.text for e in events if isinstance(e, LogLine)]
    assert "loading" in lines and "never" not in lines
    assert not (tmp_path / "spool" / handle.job_id).exists()  # spool removed after the end


async def test_cancel_while_running_and_while_pending(
    backend: SlurmBackend, tmp_path: Path
) -> None:
    # The dev node has 2 CPUs: hold both so the next job has to wait.
    blocker = await backend.submit(
        _job(tmp_path, "print('holding', flush=True); import time; time.sleep(120)", name="hold")
    )
    other = await backend.submit(_job(tmp_path, "import time; time.sleep(120)", name="hold2"))
    pending = await backend.submit(_job(tmp_path, "print('never')", name="pending"))
    for _ in range(200):
        states = sacct_states([blocker.slurm_id, other.slurm_id, pending.slurm_id])
        if states.get(blocker.slurm_id) == "RUNNING" and states.get(pending.slurm_id) == "PENDING":
            break
        await asyncio.sleep(0.2)
    assert states[pending.slurm_id] == "PENDING", states

    await pending.cancel()
    final = (await _collect(pending))[-1]
    assert isinstance(final, Finished) and final.state is JobState.CANCELLED
    assert final.reason == "cancelled by the user"

    events: list[BackendEvent] = []
    reader = asyncio.create_task(_gather(blocker, events))
    for _ in range(200):  # wait until the step runs
        if any(isinstance(e, LogLine) and e.text == "holding" for e in events):
            break
        await asyncio.sleep(0.1)
    await blocker.cancel()
    await asyncio.wait_for(reader, 60)
    final = events[-1]
    assert isinstance(final, Finished) and final.state is JobState.CANCELLED, final

    # Cancelled by someone else: the user is told it didn't come from sleap-rtc.
    subprocess.run(["scancel", other.slurm_id], check=True)
    final = (await _collect(other))[-1]
    assert isinstance(final, Finished) and final.state is JobState.CANCELLED
    assert "outside sleap-rtc" in (final.reason or ""), final
    states = wait_states(
        [blocker.slurm_id, other.slurm_id, pending.slurm_id], {"CANCELLED"}, timeout=60
    )
    assert set(states.values()) == {"CANCELLED"}


async def _gather(handle: SlurmJob, into: list[BackendEvent]) -> None:
    async for event in handle.events():
        into.append(event)


async def test_reap_cancels_a_job_left_by_a_previous_worker(
    backend: SlurmBackend, tmp_path: Path
) -> None:
    handle = await backend.submit(_job(tmp_path, "import time; time.sleep(120)", name="left"))
    reason = await backend.reap(f"slurm:{handle.slurm_id}")
    assert f"SLURM job {handle.slurm_id}" in reason and "was cancelled" in reason, reason
    assert wait_states([handle.slurm_id], {"CANCELLED"})[handle.slurm_id] == "CANCELLED"
    await _collect(handle)
