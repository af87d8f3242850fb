"""Tracking and Analysis HDF5 output through a real worker job (sleap-nn predict)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sleap_rtc.engine.backends.local.backend import LocalBackend
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.jobs.states import JobState
from sleap_rtc.worker.runner import JobRunner
from tests.e2e.conftest import worker_config

pytestmark = pytest.mark.slow


@pytest.mark.slow
async def test_tracking_and_analysis_h5_outputs(
    demo_root: Path, demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import h5py
    import numpy as np
    import sleap_io as sio

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runner = JobRunner(worker_config(demo_root, tmp_path / "state"), LocalBackend())
    await runner.start()
    try:
        config = str(demo_dir / "configs" / "single_instance.yaml")
        trained = await runner.wait(
            runner.submit(TrainSpec(config_paths=[config], max_epochs=1, run_name="opts")).id
        )
        assert trained.state is JobState.COMPLETE, trained.reason
        model = trained.outputs[0]
        common = {
            "data_path": str(demo_dir / "demo.pkg.slp"),
            "model_paths": [model],
            "frames": "0-11",
            "overwrite": True,
        }

        tracked = await runner.wait(
            runner.submit(
                TrackSpec(
                    **common,  # type: ignore[arg-type]
                    output_path="opts-tracked.slp",
                    tracking=True,
                    max_tracks=1,
                    candidates_method="local_queues",
                    tracking_window_size=3,
                )
            ).id
        )
        assert tracked.state is JobState.COMPLETE, tracked.reason
        assert tracked.outputs == [str(demo_dir / "opts-tracked.slp")]
        labels = sio.load_slp(tracked.outputs[0])
        assert len(labels.tracks) > 0 and len(labels.labeled_frames) == 12
        instances = [i for lf in labels.labeled_frames for i in lf.instances]
        assert instances and all(i.track is not None for i in instances)

        exported = await runner.wait(
            runner.submit(
                TrackSpec(
                    **common,  # type: ignore[arg-type]
                    output_path="opts.slp",
                    output_format="analysis_h5",
                    tracking=True,
                )
            ).id
        )
        assert exported.state is JobState.COMPLETE, exported.reason
        h5 = demo_dir / "opts.analysis.h5"
        assert exported.outputs == [str(h5)]
        assert h5.is_file() and not os.path.lexists(demo_dir / "opts.slp")
        with h5py.File(h5, "r") as f:
            assert "tracks" in f and "track_names" in f
            # (tracks, xy, nodes, frames): the whole 80-frame video, predicted in 0-11.
            points = f["tracks"][:]
        assert points.shape[-1] == 80
        assert np.isfinite(points[..., :12]).any(axis=(0, 1, 2)).all()
        assert not np.isfinite(points[..., 12:]).any()
        assert len(sio.load_analysis_h5(str(h5)).tracks) > 0
    finally:
        await runner.close()
