"""A room's jobs on a SLURM-backed worker: real server, real `sleap-rtc worker
--backend slurm`, real SLURM, real sleap-nn. The client uses the same session API
as for a local worker and must see the same things: progress per epoch, log
lines, the final result, stop-early and cancel."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from sleap_rtc.client import ServerClient
from sleap_rtc.client.jobs import WorkerSession
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.protocol import jobs as p
from tests.servers import Room, open_room
from tests.slurm import cancel_jobs_under, wait_states

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("slurm", "loopback_candidates")]

_SUBMITTED = re.compile(r"\[sleap-rtc\] submitted as SLURM job (\d+) on partition debug")


@pytest.fixture(scope="module")
def room(slurm: None, demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    root = tmp_path_factory.mktemp("slurm-worker")
    toml = root / "worker.toml"
    toml.write_text(
        'backend = "slurm"\n'
        "[slurm]\n"
        'partition = "debug"\n'
        "cpus = 1\n"
        "poll_interval_s = 1\n"
        'setup = ["echo setting up on $(hostname)"]\n'
    )
    worker_args = ("--worker-config", str(toml), "--max-concurrent-jobs", "2")
    try:
        with open_room(root, demo_root, worker_name="lab-slurm", worker_args=worker_args) as opened:
            yield opened
    finally:
        # A stopped worker leaves its SLURM jobs running (by design): end them here.
        cancel_jobs_under(root)


def _config(demo_dir: Path) -> str:
    return str(demo_dir / "configs" / "single_instance.yaml")


def _slurm_id(lines: list[str]) -> str:
    for line in lines:
        match = _SUBMITTED.search(line)
        if match:
            return match.group(1)
    raise AssertionError(f"no SLURM submission in the log: {lines[:10]}")


def test_the_worker_says_it_runs_jobs_on_slurm(room: Room) -> None:
    listed = room.users.json("alice", "rooms", "workers", "--room", "lab")
    assert listed[0]["name"] == "lab-slurm"
    assert listed[0]["backends"] == ["slurm"], listed[0]
    assert "SLURM jobs on debug" in room.worker.output()


async def test_train_then_track_run_as_slurm_jobs_with_live_progress(
    room: Room, alice: ServerClient, demo_dir: Path
) -> None:
    async with await WorkerSession.open(alice, "lab", room.worker_id, transport="webrtc") as s:
        job = await s.submit(
            TrainSpec(config_paths=[_config(demo_dir)], max_epochs=3, run_name="slurm-si")
        )
        epochs: list[int] = []
        lines: list[str] = []
        states: list[str] = []
        async for event in job.events():
            if isinstance(event, p.JobProgress):
                lines += event.lines
                if event.state:
                    states.append(event.state)
                if event.progress is not None and event.progress.kind == "train":
                    epochs.append(event.progress.epoch)
        result = job.result
        assert isinstance(result, p.JobComplete), (result, lines[-20:])
        assert epochs and epochs == sorted(epochs) and max(epochs) == 3, epochs
        model = Path(result.outputs[0])
        assert model.name == "slurm-si" and (model / "best.ckpt").is_file()
        train_id = _slurm_id(lines)
        assert any(line.startswith("setting up on ") for line in lines), lines[:10]
        assert "[sleap-rtc] step 1/1: train single_instance" in lines

        output = demo_dir / "slurm-predictions.slp"
        track = await s.submit(
            TrackSpec(
                data_path=str(demo_dir / "demo.pkg.slp"),
                model_paths=[str(model)],
                output_path=str(output),
                frames="0-9",
            )
        )
        frames: list[int] = []
        track_lines: list[str] = []
        async for event in track.events():
            if isinstance(event, p.JobProgress):
                track_lines += event.lines
                if event.progress is not None and event.progress.kind == "track":
                    frames.append(event.progress.n_processed)
        assert isinstance(track.result, p.JobComplete), (track.result, track_lines[-20:])
        assert output.is_file() and str(output) in track.result.outputs
        assert frames and frames[-1] >= 1
        track_id = _slurm_id(track_lines)
        summary = await s.status(job.job_id)
        assert summary.state == "COMPLETE"

    done = wait_states([train_id, track_id], {"COMPLETED"})
    assert done == {train_id: "COMPLETED", track_id: "COMPLETED"}


async def test_stop_early_and_cancel_reach_the_slurm_jobs(
    room: Room, alice: ServerClient, demo_dir: Path
) -> None:
    async with await WorkerSession.open(alice, "lab", room.worker_id, transport="relay") as s:
        stopping = await s.submit(TrainSpec(config_paths=[_config(demo_dir)], max_epochs=200))
        cancelling = await s.submit(TrainSpec(config_paths=[_config(demo_dir)], max_epochs=200))
        stop_lines: list[str] = []
        async for event in stopping.events():
            if isinstance(event, p.JobProgress):
                stop_lines += event.lines
                if event.progress is not None and event.progress.kind == "train":
                    break  # training runs on the node
        await stopping.stop()
        async for event in stopping.events():
            if isinstance(event, p.JobProgress):
                stop_lines += event.lines
        result = stopping.result
        assert isinstance(result, p.JobComplete) and result.stopped_early, result
        assert (Path(result.outputs[0]) / "best.ckpt").is_file()

        cancel_lines: list[str] = []
        async for event in cancelling.events():
            if isinstance(event, p.JobProgress):
                cancel_lines += event.lines
                if event.progress is not None:
                    break
        summary = await cancelling.cancel()
        assert summary.state == "CANCELLED", summary
        assert isinstance(await cancelling.wait(), p.JobFailed)
        assert cancelling.result.state == "CANCELLED"

    stopped_id, cancelled_id = _slurm_id(stop_lines), _slurm_id(cancel_lines)
    states = wait_states([stopped_id, cancelled_id], {"COMPLETED", "CANCELLED"})
    assert states == {stopped_id: "COMPLETED", cancelled_id: "CANCELLED"}


async def test_a_worker_restart_leaves_the_slurm_job_running_and_follows_it_again(
    room: Room, alice: ServerClient, demo_dir: Path
) -> None:
    async with await WorkerSession.open(alice, "lab", room.worker_id, transport="relay") as s:
        job = await s.submit(TrainSpec(config_paths=[_config(demo_dir)], max_epochs=200))
        lines: list[str] = []
        async for event in job.events():
            if isinstance(event, p.JobProgress):
                lines += event.lines
                if event.progress is not None and event.progress.kind == "train":
                    break
    slurm_id = _slurm_id(lines)

    room.restart_worker()
    # The cluster kept the job while no worker watched it.
    assert wait_states([slurm_id], {"RUNNING"})[slurm_id] == "RUNNING"

    async with await WorkerSession.open(alice, "lab", room.worker_id, transport="relay") as s:
        assert (await s.status(job.job_id)).state == "RUNNING"
        attached = await s.attach(job.job_id, log_lines=10_000)  # the whole log
        followed: list[str] = []
        epochs: list[int] = []
        async for event in attached.events():
            if isinstance(event, p.JobProgress):
                followed += event.lines
                if not event.replay and event.progress is not None:
                    epochs.append(event.progress.epoch)
                    if len(epochs) == 1:
                        await attached.stop()  # reaches training through the new worker
        result = attached.result
        assert isinstance(result, p.JobComplete) and result.stopped_early, (result, followed)
        assert epochs, "live progress after the restart"
        assert f"[sleap-rtc] the worker restarted; following SLURM job {slurm_id}" in followed
        # The new worker went on from where the old one stopped reading: nothing twice.
        assert sum(line.startswith("[sleap-rtc] submitted as SLURM") for line in followed) == 1
        assert followed.count("[sleap-rtc] step 1/1: train single_instance") == 1
        assert (Path(result.outputs[0]) / "best.ckpt").is_file()
    assert wait_states([slurm_id], {"COMPLETED"})[slurm_id] == "COMPLETED"
