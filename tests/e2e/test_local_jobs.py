"""Real sleap-nn jobs through validation → engine → local backend → job store."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import psutil
import pytest

from sleap_rtc.engine.backends.local.backend import LocalBackend
from sleap_rtc.jobs.events import TrackProgress, TrainProgress
from sleap_rtc.jobs.problems import JobRejected, ProblemCode
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.jobs.states import JobState
from sleap_rtc.worker.runner import JobRunner, ProgressEvent, StateEvent
from tests.e2e.conftest import worker_config

pytestmark = pytest.mark.slow


def _epochs_logged(model_dir: Path) -> int:
    with open(model_dir / "training_log.csv") as handle:
        return sum(1 for _ in csv.DictReader(handle))


async def _collect(runner: JobRunner, job_id: str) -> list[object]:
    return [event async for event in runner.watch(job_id)]


def _sleap_nn_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(part.endswith("sleap-nn") for part in cmdline[:2]):
            found.append(proc)
    return found


@pytest.fixture(scope="module")
def trained_model(
    demo_root: Path,
    demo_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, object]:
    """Train the single-instance demo model once, recording what the runner emitted."""

    async def go() -> dict[str, object]:
        state = tmp_path_factory.mktemp("state")
        runner = JobRunner(worker_config(demo_root, state), LocalBackend())
        try:
            record = runner.submit(
                TrainSpec(config_paths=[str(demo_dir / "configs" / "single_instance.yaml")])
            )
            events = await _collect(runner, record.id)
            final = await runner.wait(record.id)
            history = [h.state for h in runner.store.history(record.id)]
            log = runner.store.read_log(record.id)
        finally:
            await runner.close()
        return {"record": final, "events": events, "history": history, "log": log}

    return asyncio.run(go())


def test_train_completes_with_rising_epochs(trained_model: dict[str, object]) -> None:
    record = trained_model["record"]
    assert record.state is JobState.COMPLETE, record.reason  # type: ignore[attr-defined]
    model_dir = Path(record.outputs[0])  # type: ignore[attr-defined]
    assert (model_dir / "best.ckpt").is_file()
    assert (model_dir / "training_config.yaml").is_file()
    assert trained_model["history"] == [JobState.QUEUED, JobState.RUNNING, JobState.COMPLETE]
    progress = [
        e.progress
        for e in trained_model["events"]  # type: ignore[attr-defined]
        if isinstance(e, ProgressEvent)
    ]
    epochs_done = [p.epoch for p in progress if isinstance(p, TrainProgress) and p.epoch_done]
    assert epochs_done == sorted(epochs_done) and len(epochs_done) >= 2
    assert epochs_done[-1] == progress[-1].total_epochs == _epochs_logged(model_dir)
    assert all(p.loss is not None for p in progress if p.epoch_done)
    assert any(p.eta_s is not None for p in progress)
    assert any("step 1/1: train single_instance" in line for line in trained_model["log"])  # type: ignore[attr-defined]


async def test_track_predicts_requested_frames(
    runner: JobRunner, demo_dir: Path, trained_model: dict[str, object]
) -> None:
    import sleap_io as sio

    model_dir = trained_model["record"].outputs[0]  # type: ignore[attr-defined]
    output = demo_dir / "frames-pred.slp"
    record = runner.submit(
        TrackSpec(
            data_path=str(demo_dir / "demo.pkg.slp"),
            model_paths=[model_dir],
            output_path=output.name,
            frames="0-3,10-11",
            overwrite=True,
        )
    )
    events = await _collect(runner, record.id)
    final = runner.store.get(record.id)
    assert final is not None and final.state is JobState.COMPLETE, final.reason
    assert final.outputs == [str(output)]
    predicted = sio.load_slp(str(output))
    assert sorted(lf.frame_idx for lf in predicted.labeled_frames) == [0, 1, 2, 3, 10, 11]
    frames = [e.progress for e in events if isinstance(e, ProgressEvent)]
    assert frames and isinstance(frames[-1], TrackProgress)
    assert frames[-1].n_processed == frames[-1].n_total == 6


async def test_track_suggested_frames_scores_well(
    runner: JobRunner, demo_dir: Path, trained_model: dict[str, object]
) -> None:
    from sleap_rtc.demo.data import mean_error_px

    model_dir = trained_model["record"].outputs[0]  # type: ignore[attr-defined]
    output = demo_dir / "suggested-pred.slp"
    record = runner.submit(
        TrackSpec(
            data_path=str(demo_dir / "demo.pkg.slp"),
            model_paths=[model_dir],
            output_path=str(output),
            only_suggested_frames=True,
            overwrite=True,
        )
    )
    final = await runner.wait(record.id)
    assert final.state is JobState.COMPLETE, final.reason
    report = mean_error_px(output, demo_dir / "ground_truth.json")
    assert report.n_frames_missing == 0 and report.n_frames_scored > 0
    assert report.mean_px < 5.0


async def test_topdown_two_models_then_track(runner: JobRunner, demo_dir: Path) -> None:
    configs = [str(demo_dir / "configs" / f"{n}.yaml") for n in ("centroid", "centered_instance")]
    record = runner.submit(TrainSpec(config_paths=configs, run_name="topdown"))
    events = await _collect(runner, record.id)
    final = runner.store.get(record.id)
    assert final is not None and final.state is JobState.COMPLETE, final.reason
    assert [Path(p).name for p in final.outputs] == [
        "topdown-centroid",
        "topdown-centered_instance",
    ]
    models = {
        p.model_index
        for e in events
        if isinstance(e, ProgressEvent)
        for p in [e.progress]
        if isinstance(p, TrainProgress)
    }
    assert models == {1, 2}
    output = demo_dir / "topdown-pred.slp"
    track = runner.submit(
        TrackSpec(
            data_path=str(demo_dir / "demo.pkg.slp"),
            model_paths=final.outputs,
            output_path=str(output),
            only_suggested_frames=True,
            overwrite=True,
        )
    )
    tracked = await runner.wait(track.id)
    assert tracked.state is JobState.COMPLETE, tracked.reason
    assert output.is_file()


async def _wait_for_epoch(runner: JobRunner, job_id: str, epoch: int) -> None:
    async for event in runner.watch(job_id):
        if (
            isinstance(event, ProgressEvent)
            and isinstance(event.progress, TrainProgress)
            and event.progress.epoch >= epoch
        ):
            return
        if isinstance(event, StateEvent) and event.record.finished:
            raise AssertionError(f"job ended early: {event.record.reason}")


async def test_cancel_mid_training_leaves_no_process(runner: JobRunner, demo_dir: Path) -> None:
    record = runner.submit(
        TrainSpec(config_paths=[str(demo_dir / "configs" / "single_instance.yaml")], max_epochs=200)
    )
    await asyncio.wait_for(_wait_for_epoch(runner, record.id, 1), 120)
    native = runner.store.get(record.id).native_id  # type: ignore[union-attr]
    pid = int(native.split("@")[0])  # type: ignore[union-attr]
    assert psutil.pid_exists(pid)
    final = await asyncio.wait_for(runner.cancel(record.id), 60)
    assert final.state is JobState.CANCELLED
    assert final.reason == "cancelled by the user"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert _sleap_nn_processes() == []


async def test_stop_early_keeps_model_with_fewer_epochs(runner: JobRunner, demo_dir: Path) -> None:
    record = runner.submit(
        TrainSpec(
            config_paths=[str(demo_dir / "configs" / "single_instance.yaml")],
            max_epochs=200,
            run_name="stopped",
        )
    )
    await asyncio.wait_for(_wait_for_epoch(runner, record.id, 2), 120)
    assert await runner.stop_early(record.id)
    final = await asyncio.wait_for(runner.wait(record.id), 120)
    assert final.state is JobState.COMPLETE, final.reason
    assert final.stopped_early
    model_dir = Path(final.outputs[0])
    assert (model_dir / "best.ckpt").is_file()
    assert 1 <= _epochs_logged(model_dir) < 200


async def test_three_bad_paths_rejected_and_recorded(runner: JobRunner, demo_dir: Path) -> None:
    spec = TrainSpec(
        config_paths=["/vast/wrong/path.yaml"],
        labels_path=str(demo_dir / "missing.slp"),
        val_labels_path="/etc/passwd",
    )
    with pytest.raises(JobRejected) as info:
        runner.submit(spec)
    codes = [(p.field, p.code) for p in info.value.problems]
    assert codes == [
        ("labels_path", ProblemCode.PATH_NOT_FOUND),
        ("val_labels_path", ProblemCode.ACCESS_DENIED),
        ("config_path", ProblemCode.ACCESS_DENIED),
    ]
    record = runner.store.get(info.value.job_id)
    assert record is not None and record.state is JobState.REJECTED
    assert len(record.problems) == 3
    assert not list((runner.models_dir).glob("path-*"))


async def test_stop_early_off_leaves_training_alone(
    demo_root: Path, demo_dir: Path, tmp_path: Path
) -> None:
    runner = JobRunner(
        worker_config(demo_root, tmp_path / "state", stop_early=False), LocalBackend()
    )
    try:
        record = runner.submit(
            TrainSpec(
                config_paths=[str(demo_dir / "configs" / "single_instance.yaml")], max_epochs=200
            )
        )
        await asyncio.wait_for(_wait_for_epoch(runner, record.id, 1), 120)
        assert await runner.stop_early(record.id) is False
        final = await asyncio.wait_for(runner.cancel(record.id), 60)
        assert final.state is JobState.CANCELLED and not final.stopped_early
    finally:
        await runner.close()
