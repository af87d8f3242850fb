"""The demo, end to end, through the same path a networked job takes.

It builds a worker configuration whose only mount is the demo folder, submits a
:class:`~sleap_rtc.jobs.specs.TrainSpec` and then a
:class:`~sleap_rtc.jobs.specs.TrackSpec` to a :class:`~sleap_rtc.worker.JobRunner`
on the local backend (so validation, the engine and the job store all run), and
scores the predictions against the ground truth that was generated with the data.
Nothing here prints: events go to ``on_event`` and the CLI renders them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sleap_rtc.engine.local import LocalBackend
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.jobs.states import JobState
from sleap_rtc.worker.config import MountConfig, WorkerConfig
from sleap_rtc.worker.runner import JobEvent, JobRunner
from sleap_rtc.worker.store import JobRecord


class DemoFailed(RuntimeError):
    def __init__(self, what: str, record: JobRecord, log_tail: list[str]) -> None:
        super().__init__(f"{what} job {record.id} ended {record.state}: {record.reason}")
        self.record = record
        self.log_tail = log_tail


@dataclass(frozen=True)
class DemoResult:
    workdir: Path
    model_dir: Path
    predictions: Path
    train_s: float
    track_s: float
    mean_error_px: float
    n_frames_scored: int


async def run_demo(
    workdir: Path,
    *,
    config_name: str = "single_instance",
    on_event: Callable[[str, JobEvent], None] | None = None,
    device: str = "auto",
) -> DemoResult:
    from sleap_rtc.demo.data import make_demo_data, mean_error_px

    workdir.mkdir(parents=True, exist_ok=True)
    data = make_demo_data(workdir / "data")
    config = WorkerConfig(
        name="demo",
        mounts=[MountConfig(path=str(workdir), label="demo")],
        models_dir=workdir / "models",
        state_dir=workdir / "worker-state",
        device=device,
    )
    runner = JobRunner(config, LocalBackend())
    emit = on_event or (lambda _stage, _event: None)

    async def run(stage: str, spec: TrainSpec | TrackSpec) -> tuple[JobRecord, float]:
        started = time.monotonic()
        record = runner.submit(spec)
        async for event in runner.watch(record.id):
            emit(stage, event)
        final = await runner.wait(record.id)
        if final.state is not JobState.COMPLETE:
            raise DemoFailed(stage, final, runner.store.read_log(final.id, tail=20))
        return final, time.monotonic() - started

    predictions = workdir / "predictions.slp"
    try:
        train_spec = TrainSpec(config_paths=[str(data.configs[config_name])], run_name="demo")
        trained, train_s = await run("train", train_spec)
        model_dir = Path(trained.outputs[0])
        track_spec = TrackSpec(
            data_path=str(data.labels_path),
            model_paths=[str(model_dir)],
            output_path=str(predictions),
            only_suggested_frames=True,
            overwrite=True,
        )
        _, track_s = await run("track", track_spec)
    finally:
        await runner.close()
    report = mean_error_px(predictions, data.ground_truth_path)
    return DemoResult(
        workdir=workdir,
        model_dir=model_dir,
        predictions=predictions,
        train_s=train_s,
        track_s=track_s,
        mean_error_px=report.mean_px,
        n_frames_scored=report.n_frames_scored,
    )
