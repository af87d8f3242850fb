"""Real sleap-nn jobs started warm (forked from the warm engine) against the same jobs cold.

One cold runner and one warm runner train the same config for the same epochs and
track the same labels: the model folders hold the same files, the runners report
the same states and epochs, and the predictions cover the same frames. A warm
training job is then stopped early and another cancelled mid-epoch; a warm engine
killed between jobs is replaced by the next one.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from sleap_rtc.engine.backends.local.backend import LocalBackend
from sleap_rtc.jobs.events import NOTE_PREFIX, TrackProgress, TrainProgress
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.jobs.states import JobState
from sleap_rtc.worker.runner import JobRunner, LogEvent, ProgressEvent, StateEvent
from tests.e2e.conftest import worker_config

pytestmark = pytest.mark.slow


@pytest.fixture
async def warm_runner(demo_root: Path, tmp_path: Path) -> AsyncIterator[JobRunner]:
    runner = JobRunner(
        worker_config(demo_root, tmp_path / "warm-state"), LocalBackend(warm_engine=True)
    )
    await runner.start()
    try:
        yield runner
    finally:
        await runner.close()


def engine_pid(runner: JobRunner) -> int | None:
    warm = getattr(runner.backend, "warm", None)
    return warm.pid if warm is not None else None


async def run_job(runner: JobRunner, spec: TrainSpec | TrackSpec) -> tuple[Any, list[Any]]:
    record = runner.submit(spec)
    events = [event async for event in runner.watch(record.id)]
    return runner.store.get(record.id), events


def signature(events: list[Any]) -> list[tuple[str, object]]:
    """What a job's watcher saw, without what depends on timing or wording of logs."""
    seen: list[tuple[str, object]] = []
    for event in events:
        if isinstance(event, StateEvent):
            seen.append(("state", event.record.state))
        elif isinstance(event, ProgressEvent) and isinstance(event.progress, TrainProgress):
            if event.progress.epoch_done:
                seen.append(("epoch", event.progress.epoch))
        elif isinstance(event, LogEvent) and event.line.startswith(NOTE_PREFIX):
            seen.append(("note", event.line))
    frames = [
        e.progress
        for e in events
        if isinstance(e, ProgressEvent) and isinstance(e.progress, TrackProgress)
    ]
    if frames:
        seen.append(("frames", (frames[-1].n_processed, frames[-1].n_total)))
    return seen


def files_of(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


async def test_a_warm_job_is_indistinguishable_from_a_cold_one(
    runner: JobRunner, warm_runner: JobRunner, demo_dir: Path
) -> None:
    import sleap_io as sio

    config = str(demo_dir / "configs" / "single_instance.yaml")
    results = {}
    for name, which in (("cold", runner), ("warm", warm_runner)):
        trained, train_events = await run_job(
            which, TrainSpec(config_paths=[config], max_epochs=2, run_name=f"same-{name}")
        )
        assert trained.state is JobState.COMPLETE, trained.reason
        tracked, track_events = await run_job(
            which,
            TrackSpec(
                data_path=str(demo_dir / "demo.pkg.slp"),
                model_paths=[trained.outputs[0]],
                output_path=f"same-{name}.slp",
                frames="0-9",
                overwrite=True,
            ),
        )
        assert tracked.state is JobState.COMPLETE, tracked.reason
        predicted = sio.load_slp(tracked.outputs[0])
        results[name] = {
            "files": files_of(Path(trained.outputs[0])),
            "train": signature(train_events),
            "track": signature(track_events),
            "frames": sorted(lf.frame_idx for lf in predicted.labeled_frames),
            "native": trained.native_id,
        }
    cold, warm = results["cold"], results["warm"]
    assert warm["files"] == cold["files"] and "best.ckpt" in warm["files"]
    assert warm["train"] == cold["train"]
    assert [e for e in warm["train"] if e[0] == "epoch"] == [("epoch", 1), ("epoch", 2)]
    assert warm["track"] == cold["track"] and warm["frames"] == cold["frames"] == list(range(10))
    assert engine_pid(warm_runner) is not None and engine_pid(runner) is None

    # A warm engine killed between jobs is replaced by the next job, which starts warm.
    engine = engine_pid(warm_runner)
    assert engine is not None
    os.kill(engine, signal.SIGKILL)
    tracked, events = await run_job(
        warm_runner,
        TrackSpec(
            data_path=str(demo_dir / "demo.pkg.slp"),
            model_paths=[str(demo_dir.parent / "models" / "same-warm")],
            output_path="after-kill.slp",
            frames="0-3",
            overwrite=True,
        ),
    )
    assert tracked.state is JobState.COMPLETE, tracked.reason
    replaced = engine_pid(warm_runner)
    assert replaced is not None and replaced != engine
    assert not [e for e in events if isinstance(e, LogEvent) and "starts cold" in e.line]


async def _first_epoch(runner: JobRunner, job_id: str) -> None:
    async for event in runner.watch(job_id):
        if isinstance(event, ProgressEvent) and getattr(event.progress, "epoch_done", False):
            return


async def test_warm_training_stops_early_and_cancels_mid_epoch(
    warm_runner: JobRunner, demo_dir: Path
) -> None:
    config = str(demo_dir / "configs" / "single_instance.yaml")
    stopped = warm_runner.submit(TrainSpec(config_paths=[config], max_epochs=200))
    await asyncio.wait_for(_first_epoch(warm_runner, stopped.id), 120)
    assert await warm_runner.stop_early(stopped.id)
    final = await asyncio.wait_for(warm_runner.wait(stopped.id), 120)
    assert final.state is JobState.COMPLETE and final.stopped_early, final.reason
    assert (Path(final.outputs[0]) / "best.ckpt").is_file()

    cancelled = warm_runner.submit(TrainSpec(config_paths=[config], max_epochs=200))
    await asyncio.wait_for(_first_epoch(warm_runner, cancelled.id), 120)
    record = warm_runner.store.get(cancelled.id)
    pid = int(record.native_id.split("@")[0])  # type: ignore[union-attr]
    engine = engine_pid(warm_runner)
    assert engine is not None and psutil.Process(pid).ppid() == engine
    final = await asyncio.wait_for(warm_runner.cancel(cancelled.id), 60)
    assert final.state is JobState.CANCELLED and final.reason == "cancelled by the user"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert psutil.Process(engine).children() == []  # nothing of the step is left
