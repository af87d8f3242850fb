"""A worker process killed mid-job: the record, log and reason survive the restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from sleap_rtc.engine.backends.local.backend import LocalBackend
from sleap_rtc.jobs.states import JobState
from sleap_rtc.worker.runner import JobRunner
from sleap_rtc.worker.store import JobStore
from tests.e2e.conftest import worker_config

pytestmark = pytest.mark.slow

WORKER_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from sleap_rtc.engine.backends.local.backend import LocalBackend
from sleap_rtc.jobs.specs import TrainSpec
from sleap_rtc.worker.config import MountConfig, WorkerConfig
from sleap_rtc.worker.runner import JobRunner

args = json.loads(sys.argv[1])
async def main():
    config = WorkerConfig(mounts=[MountConfig(path=args["root"])], device="cpu",
                          models_dir=Path(args["root"]) / "models", state_dir=args["state"])
    runner = JobRunner(config, LocalBackend())
    record = runner.submit(TrainSpec(config_paths=[args["config"]], max_epochs=200))
    print(record.id, flush=True)
    await runner.wait(record.id)
asyncio.run(main())
"""


def test_killed_worker_marks_job_failed_and_ends_its_process(
    demo_root: Path, demo_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    args = {
        "root": str(demo_root),
        "state": str(state),
        "config": str(demo_dir / "configs" / "single_instance.yaml"),
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, json.dumps(args)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    sleap_pid = None
    try:
        assert worker.stdout is not None
        job_id = worker.stdout.readline().strip()
        assert job_id, "worker printed no job id"
        store = JobStore(state)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            record = store.get(job_id)
            if record and record.native_id and record.progress:
                break
            time.sleep(0.5)
        else:
            pytest.fail("job never reported progress")
        sleap_pid = int(record.native_id.split("@")[0])  # type: ignore[union-attr]
        store.close()
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert psutil.pid_exists(sleap_pid), "sleap-nn should outlive a killed worker"

        async def restart() -> None:
            runner = JobRunner(worker_config(demo_root, state), LocalBackend())
            changed = await runner.start()
            assert [r.id for r in changed] == [job_id]
            record = runner.store.get(job_id)
            assert record is not None and record.state is JobState.FAILED
            assert "worker stopped while the job was running" in (record.reason or "")
            assert "leftover sleap-nn process was ended" in (record.reason or "")
            assert record.progress is not None and record.spec["max_epochs"] == 200
            assert any("step 1/1" in line for line in runner.store.read_log(job_id))
            await runner.close()

        asyncio.run(restart())
        proc_gone = (
            not psutil.pid_exists(sleap_pid)
            or psutil.Process(sleap_pid).status() == psutil.STATUS_ZOMBIE
        )
        assert proc_gone
    finally:
        if worker.poll() is None:
            worker.kill()
        if sleap_pid and psutil.pid_exists(sleap_pid):
            os.killpg(sleap_pid, signal.SIGKILL)
