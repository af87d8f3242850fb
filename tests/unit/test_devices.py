"""``--gpus N`` and the worker's ``device``, checked against the GPUs it has."""

from __future__ import annotations

from pathlib import Path

import pytest

from sleap_rtc.engine.commands import build_train_job, trainer_device_keys
from sleap_rtc.jobs.devices import Devices, check_gpus, device_problem
from sleap_rtc.jobs.problems import JobRejected, ProblemCode
from sleap_rtc.jobs.specs import TrainSpec
from sleap_rtc.worker.config import WorkerConfig
from sleap_rtc.worker.planning import JobPlanner
from tests.configs import MODEL_CONFIG
from tests.labels import write_labels


@pytest.mark.parametrize(
    ("requested", "devices", "code", "words"),
    [
        (None, Devices("cpu", 0), None, ""),
        (2, Devices("auto", 2), None, ""),
        (2, Devices("auto", None), None, ""),  # a scheduler's nodes decide
        (3, Devices("cuda", 2), ProblemCode.OUT_OF_RANGE, "this worker has 2 GPUs (use --gpus 2"),
        (1, Devices("auto", 0), ProblemCode.OUT_OF_RANGE, "this worker has no GPU"),
        (1, Devices("cpu", 0), ProblemCode.CONFLICT, "runs jobs on cpu"),
        (2, Devices("cuda:1", 4), ProblemCode.CONFLICT, "one GPU (device = cuda:1)"),
    ],
)
def test_gpus_are_checked_against_the_worker(
    requested: int | None, devices: Devices, code: ProblemCode | None, words: str
) -> None:
    problems = check_gpus(requested, devices)
    assert [p.code for p in problems] == ([code] if code else [])
    assert all(words in p.message and p.field == "gpus" for p in problems)


def test_a_worker_pinned_to_a_gpu_it_lacks_is_named() -> None:
    assert device_problem("cuda:0", 1) is None and device_problem("cuda:3", None) is None
    assert device_problem("cuda:1", 1) == (
        "device = 'cuda:1', but this machine has 1 GPU (cuda:0 to cuda:0); "
        "set device to one of them"
    )
    assert "has no GPU" in (device_problem("cuda:0", 0) or "")


def test_gpus_become_sleap_nn_trainer_devices() -> None:
    assert trainer_device_keys("auto", 2) == {
        "trainer_config.trainer_accelerator": "gpu",
        "trainer_config.trainer_devices": 2,
        "trainer_config.trainer_device_indices": None,
    }
    assert trainer_device_keys("cuda:1", 1)["trainer_config.trainer_device_indices"] == [1]


def test_a_worker_with_declared_gpus_plans_gpus_against_them(tmp_path: Path) -> None:
    mount = tmp_path / "mount"
    write_labels(mount / "labels.slp")
    config = mount / "c.yaml"
    config.write_text(
        "data_config:\n  train_labels_path: [labels.slp]\n" + MODEL_CONFIG + "trainer_config: {}\n"
    )
    worker = WorkerConfig(
        mounts=[{"path": str(mount), "label": "data"}],
        state_dir=tmp_path / "state",
        gpus=[{"name": "A100", "memory_total_mb": 40960}] * 2,
    )
    planner = JobPlanner(worker)
    with pytest.raises(JobRejected) as info:
        planner.plan(TrainSpec(config_paths=[str(config)], gpus=4), None)
    assert [p.field for p in info.value.problems] == ["gpus"]
    plan = planner.plan(TrainSpec(config_paths=[str(config)], gpus=2), None)
    job = build_train_job(plan, job_id="j1", models_dir=tmp_path / "models")  # type: ignore[arg-type]
    assert job.steps[0].config["trainer_config"]["trainer_devices"] == 2
