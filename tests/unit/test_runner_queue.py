"""Queue and cancel logic of the runner, with a stand-in process for sleap-nn.

The real sleap-nn versions of these paths are in tests/e2e; here a sleeping
Python process keeps the runner busy so the queue itself can be exercised fast.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from pathlib import Path

import psutil
import pytest

from sleap_rtc.engine.backends.local.backend import LocalBackend
from sleap_rtc.jobs.problems import JobRejected, ProblemCode
from sleap_rtc.jobs.specs import TrainSpec
from sleap_rtc.jobs.states import JobState
from sleap_rtc.worker.config import MountConfig, WorkerConfig
from sleap_rtc.worker.runner import JobRunner, QueueEvent
from tests.configs import MODEL_CONFIG
from tests.labels import write_labels

CONFIG = "data_config:\n  train_labels_path: [l.slp]\n" + MODEL_CONFIG + "trainer_config: {}\n"
SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _runner(tmp_path: Path) -> tuple[JobRunner, TrainSpec]:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "c.yaml").write_text(CONFIG)
    write_labels(tmp_path / "m" / "l.slp")
    config = WorkerConfig(
        mounts=[MountConfig(path=str(tmp_path / "m"))],
        models_dir=tmp_path / "models",
        state_dir=tmp_path / "state",
        sleap_nn_command=SLEEPER,
        cancel_grace_s=2.0,
    )
    spec = TrainSpec(config_paths=[str(tmp_path / "m" / "c.yaml")])
    return JobRunner(config, LocalBackend(cancel_grace_s=2.0)), spec


async def _pid_of(runner: JobRunner, job_id: str) -> int:
    for _ in range(200):
        record = runner.store.get(job_id)
        if record and record.native_id:
            return int(record.native_id.split("@")[0])
        await asyncio.sleep(0.05)
    raise AssertionError("job never started a process")


async def test_queued_job_cancels_at_once_and_slots_are_respected(tmp_path: Path) -> None:
    runner, spec = _runner(tmp_path)
    try:
        first = runner.submit(spec)
        second = runner.submit(spec)
        pid = await _pid_of(runner, first.id)
        assert runner.store.get(second.id).state is JobState.QUEUED  # type: ignore[union-attr]
        cancelled = await asyncio.wait_for(runner.cancel(second.id), 2)
        assert cancelled.state is JobState.CANCELLED
        assert cancelled.reason == "cancelled by the user before it started"
        assert runner.store.get(first.id).state is JobState.RUNNING  # type: ignore[union-attr]
        final = await asyncio.wait_for(runner.cancel(first.id), 10)
        assert final.state is JobState.CANCELLED
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    finally:
        await runner.close()


async def test_a_queued_job_hears_its_place_in_the_line_as_it_moves_up(tmp_path: Path) -> None:
    runner, spec = _runner(tmp_path)
    try:
        first, second, third = (runner.submit(spec) for _ in range(3))
        await _pid_of(runner, first.id)
        assert runner.queue_position(first.id) is None  # it has its slot
        assert (runner.queue_position(second.id), runner.queue_position(third.id)) == (1, 2)
        heard: list[object] = []

        async def watch() -> None:
            async for event in runner.watch(third.id):
                heard.append(event)
                if isinstance(event, QueueEvent) and event.position == 1:
                    return

        watching = asyncio.create_task(watch())
        await asyncio.sleep(0.1)
        await runner.cancel(second.id)  # the one ahead leaves the line
        await asyncio.wait_for(watching, 5)
        positions = [e.position for e in heard if isinstance(e, QueueEvent)]
        assert positions == [2, 1]
        await runner.cancel(first.id)
        await _pid_of(runner, third.id)
        assert runner.queue_position(third.id) is None
    finally:
        await runner.close()


async def test_the_worker_console_says_when_a_job_runs_and_how_it_ended(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runner, spec = _runner(tmp_path)
    caplog.set_level(logging.INFO, logger="sleap_rtc.worker.runner")
    try:
        record = runner.submit(spec)
        await _pid_of(runner, record.id)
        await asyncio.wait_for(runner.cancel(record.id), 10)
    finally:
        await runner.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "sleap_rtc.worker.runner"]
    assert f"job {record.id} (train) running" in lines
    assert any(
        re.fullmatch(rf"job {record.id} \(train\) cancelled after \d+ s: .+", line)
        for line in lines
    ), lines


async def test_cancel_right_after_submit_leaves_no_process(tmp_path: Path) -> None:
    runner, spec = _runner(tmp_path)
    try:
        record = runner.submit(spec)
        await asyncio.sleep(0)  # let the job take its slot and start launching
        final = await asyncio.wait_for(runner.cancel(record.id), 10)
        assert final.state is JobState.CANCELLED
        native = final.native_id
        if native:
            pid = int(native.split("@")[0])
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    finally:
        await runner.close()


async def test_close_marks_running_job_failed_with_reason(tmp_path: Path) -> None:
    runner, spec = _runner(tmp_path)
    record = runner.submit(spec)
    pid = await _pid_of(runner, record.id)
    store_dir = runner.config.resolved_state_dir()
    await asyncio.wait_for(runner.close(), 15)
    from sleap_rtc.worker.store import JobStore

    store = JobStore(store_dir)
    final = store.get(record.id)
    assert final is not None and final.state is JobState.FAILED
    assert final.reason == "the worker shut down before the job finished"
    store.close()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


async def test_a_job_that_ran_removes_the_uploads_it_used_and_nothing_else(
    tmp_path: Path,
) -> None:
    config = WorkerConfig(
        models_dir=tmp_path / "models",
        state_dir=tmp_path / "state",
        sleap_nn_command=[sys.executable, "-c", "raise SystemExit(1)"],
    )
    runner = JobRunner(config, LocalBackend(cancel_grace_s=2.0))
    mine = config.resolved_upload_dir() / "alice"
    used = mine / "0123456789abcdef-pkg-unpacked"
    used.mkdir(parents=True)
    (used / "c.yaml").write_text(CONFIG)
    write_labels(used / "l.slp")
    (mine / "0123456789abcdef-pkg.zip").write_bytes(b"zip")
    other = mine / "fedcba9876543210-other.slp"
    other.write_bytes(b"x")
    await runner.start()
    try:
        record = runner.submit(TrainSpec(config_paths=[str(used / "c.yaml")]), owner="alice")
        final = await asyncio.wait_for(runner.wait(record.id), 60)
    finally:
        await runner.close()
    assert final.state is JobState.FAILED
    assert sorted(p.name for p in mine.iterdir()) == [other.name]


async def test_another_users_upload_is_not_theirs_to_name(tmp_path: Path) -> None:
    config = WorkerConfig(models_dir=tmp_path / "models", state_dir=tmp_path / "state")
    runner = JobRunner(config, LocalBackend())
    theirs = config.resolved_upload_dir() / "bob" / "0123456789abcdef-c.yaml"
    theirs.parent.mkdir(parents=True)
    theirs.write_text(CONFIG)
    try:
        runner.validate(TrainSpec(config_paths=[str(theirs)]), "alice")
    except JobRejected as exc:
        assert [p.code for p in exc.problems] == [ProblemCode.ACCESS_DENIED]
    else:
        raise AssertionError("alice could name bob's upload")
    finally:
        runner.store.close()


async def test_preview_shows_what_a_submit_would_run_and_writes_nothing(tmp_path: Path) -> None:
    runner, spec = _runner(tmp_path)
    work_root = runner.planner.work_root
    try:
        preview = runner.preview(spec.model_copy(update={"max_epochs": 4}))
        (step,) = preview.job.steps
        assert step.argv[: len(SLEEPER)] == SLEEPER and step.argv[-2] == "--config"
        assert step.config is not None and step.config["trainer_config"]["max_epochs"] == 4
        assert preview.work_dir.parent == work_root and preview.sandbox == runner.sandbox_note
        assert runner.store.jobs() == [] and not work_root.exists()
        bad = spec.model_copy(update={"config_paths": [str(tmp_path / "m" / "nope.yaml")]})
        try:
            runner.preview(bad)
        except JobRejected as exc:
            assert exc.job_id is None and exc.problems[0].code is ProblemCode.PATH_NOT_FOUND
        else:
            raise AssertionError("an invalid spec previewed")
        assert runner.store.jobs() == []
    finally:
        await runner.close()


async def test_a_rejected_submit_names_the_record_it_was_kept_under(tmp_path: Path) -> None:
    runner, spec = _runner(tmp_path)
    try:
        bad = spec.model_copy(update={"max_epochs": 0})
        try:
            runner.submit(bad)
        except JobRejected as exc:
            record = runner.store.get(exc.job_id or "")
            assert record is not None and record.state is JobState.REJECTED
        else:
            raise AssertionError("max_epochs=0 was accepted")
    finally:
        await runner.close()
