"""Spec → sleap-nn argv: lists, not shell strings; awkward paths survive Hydra."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from sleap_rtc.engine.commands import (
    build_track_job,
    build_train_job,
    hydra_quote,
    trainer_device_keys,
    unique_folder,
)
from sleap_rtc.jobs.frames import parse_frames
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.jobs.validation import ConfigPlan, TrackPlan, TrainPlan

AWKWARD = [
    "/data/plain.slp",
    "/data/with space/labels.slp",
    "/data/comma,equals=1/l.slp",
    "/data/it's/quote\\back.slp",
    "/data/${interp}/x.slp",
    "/data/ends-with-backslash\\",
    "/data/[brackets]/{braces}.slp",
    "/data/ünïcødé/ラベル.slp",
    "/data/dollar/\\${y}",
]


@pytest.mark.parametrize("value", AWKWARD)
def test_hydra_quote_round_trips_through_hydra_and_omegaconf(value: str) -> None:
    parser_mod = pytest.importorskip("hydra.core.override_parser.overrides_parser")
    from omegaconf import OmegaConf

    parser = parser_mod.OverridesParser.create()
    single = parser.parse_override(f"k={hydra_quote(value)}")
    listed = parser.parse_override(f"k=[{hydra_quote(value)},{hydra_quote(value)}]")
    assert OmegaConf.create({"k": single.value()}).k == value
    assert list(OmegaConf.create({"k": listed.value()}).k) == [value, value]


def _train_plan(tmp_path: Path, **kw: object) -> TrainPlan:
    spec = TrainSpec(config_paths=["/c/centroid.yaml", "/c/centered_instance.yaml"], **kw)  # type: ignore[arg-type]
    configs = [
        ConfigPlan(
            config_path=Path("/c/centroid.yaml"),
            stem="centroid",
            train_labels=[Path("/d/a b,c.slp")],
            max_epochs=12,
        ),
        ConfigPlan(
            config_path=Path("/c/centered_instance.yaml"),
            stem="centered_instance",
            train_labels=[Path("/d/a b,c.slp")],
        ),
    ]
    return TrainPlan(
        spec=spec, configs=configs, labels_path=None, val_labels_path=None, resume_ckpt_path=None
    )


def test_train_job_runs_an_effective_config(tmp_path: Path) -> None:
    plan = _train_plan(tmp_path, max_epochs=5, batch_size=8, learning_rate=0.0001, run_name="exp1")
    work = tmp_path / "work"
    job = build_train_job(
        plan,
        job_id="abcdef123456",
        models_dir=tmp_path,
        work_dir=work,
        sleap_nn=["sleap-nn"],
        device="cpu",
    )
    assert [s.name for s in job.steps] == ["centroid", "centered_instance"]
    first = job.steps[0].argv
    written = work / "configs" / "1-centroid.yaml"
    assert first == ["sleap-nn", "train", "--config", str(written)]
    config = yaml.safe_load(written.read_text())
    assert config == job.steps[0].config
    assert config["data_config"]["train_labels_path"] == ["/d/a b,c.slp"]
    assert config["data_config"]["cache_img_path"] == str(work / "cache" / "1")
    trainer = config["trainer_config"]
    assert trainer["max_epochs"] == 5
    assert trainer["train_data_loader"]["batch_size"] == 8
    assert trainer["optimizer"]["lr"] == 0.0001
    assert trainer["trainer_accelerator"] == "cpu"
    assert trainer["run_name"] == "exp1-centroid"
    assert trainer["ckpt_dir"] == str(tmp_path)
    assert trainer["use_wandb"] is False and trainer["zmq"]["controller_port"] is None
    assert job.steps[0].output == tmp_path / "exp1-centroid"
    assert job.steps[0].total_epochs == 5 and job.steps[1].index == 2


def test_effective_config_overrides_what_the_worker_owns(tmp_path: Path) -> None:
    """A config can't aim sleap-nn's writes (ckpt_dir, caches, ports) anywhere; paths
    with ``${`` stay literal once OmegaConf reads them."""
    from omegaconf import OmegaConf

    plan = _train_plan(tmp_path)
    hostile = {
        "data_config": {"cache_img_path": "/etc", "train_labels_path": ["/x.slp"]},
        "model_config": {},
        "trainer_config": {
            "ckpt_dir": "/root",
            "run_name": "../../x",
            "zmq": {"publish_port": 22, "controller_port": 23},
            "use_wandb": True,
        },
        "filename": "/etc/passwd",
    }
    config = dataclasses.replace(
        plan.configs[0], data=hostile, train_labels=[Path("/d/${oc.env:HOME}.slp")]
    )
    plan = dataclasses.replace(plan, configs=[config])
    job = build_train_job(
        plan, job_id="abcdef123456", models_dir=tmp_path, work_dir=tmp_path / "w", sleap_nn=["x"]
    )
    loaded = OmegaConf.load(job.steps[0].argv[-1])
    assert list(loaded.data_config.train_labels_path) == ["/d/${oc.env:HOME}.slp"]
    assert loaded.data_config.cache_img_path == str(tmp_path / "w" / "cache" / "1")
    assert loaded.trainer_config.ckpt_dir == str(tmp_path)
    assert loaded.trainer_config.run_name == "centroid-abcdef12"
    assert loaded.trainer_config.zmq.publish_port is None
    assert loaded.trainer_config.use_wandb is False
    assert loaded.filename == ""
    assert hostile["trainer_config"]["ckpt_dir"] == "/root"  # the plan is not changed


def test_run_names_are_unique(tmp_path: Path) -> None:
    plan = _train_plan(tmp_path)
    (tmp_path / "centroid-abcdef12").mkdir()
    reserved: set[str] = set()
    job = build_train_job(
        plan, job_id="abcdef123456", models_dir=tmp_path, sleap_nn=["x"], reserved=reserved
    )
    assert [s.output.name for s in job.steps if s.output] == [
        "centroid-abcdef12-2",
        "centered_instance-abcdef12",
    ]
    assert job.steps[0].total_epochs == 12 and job.steps[1].total_epochs == 100
    assert reserved == {"centroid-abcdef12-2", "centered_instance-abcdef12"}
    assert unique_folder(tmp_path, "centroid-abcdef12", reserved) == "centroid-abcdef12-3"


def test_track_job_argv() -> None:
    spec = TrackSpec(
        data_path="/d/x.slp",
        model_paths=["/m/a", "/m/b"],
        batch_size=16,
        peak_threshold=0.3,
        frames="0-100,500-600",
    )
    plan = TrackPlan(
        spec=spec,
        data_path=Path("/d/my data.slp"),
        model_paths=[Path("/m/a"), Path("/m/b")],
        output_path=Path("/d/out, 1.slp"),
        frames=parse_frames(spec.frames or ""),
    )
    [step] = build_track_job(plan, job_id="j", sleap_nn=["sleap-nn"], device="cpu").steps
    argv = step.argv
    assert argv[:4] == ["sleap-nn", "predict", "--data_path", "/d/my data.slp"]
    assert argv.count("--model_paths") == 2
    assert argv[argv.index("--output_path") + 1] == "/d/out, 1.slp"
    expected = ",".join(str(i) for i in [*range(0, 101), *range(500, 601)])
    assert argv[argv.index("--frames") + 1] == expected
    assert argv[argv.index("--video_index") + 1] == "0"
    assert argv[argv.index("--peak_threshold") + 1] == "0.3"
    assert "--gui" in argv and "--only_suggested_frames" not in argv


def test_zmq_overrides_without_controller() -> None:
    from sleap_rtc.engine.commands import zmq_overrides

    assert zmq_overrides(5000, 5001) == [
        "++trainer_config.zmq.publish_port=5000",
        "++trainer_config.zmq.controller_port=5001",
    ]
    assert zmq_overrides(5000, None) == ["++trainer_config.zmq.publish_port=5000"]


@pytest.mark.parametrize(
    ("device", "keys"),
    [
        ("auto", {}),
        ("cpu", {"trainer_config.trainer_accelerator": "cpu"}),
        ("mps", {"trainer_config.trainer_accelerator": "mps"}),
        ("cuda", {"trainer_config.trainer_accelerator": "gpu"}),
        (
            "cuda:1",
            {
                "trainer_config.trainer_accelerator": "gpu",
                "trainer_config.trainer_device_indices": [1],
                "trainer_config.trainer_devices": None,
            },
        ),
    ],
)
def test_the_workers_device_becomes_sleap_nn_trainer_keys(
    device: str, keys: dict[str, object]
) -> None:
    # sleap-nn replaces an accelerator it doesn't know (e.g. "cuda:1") with "auto".
    assert trainer_device_keys(device) == keys


def test_training_on_cuda_n_is_written_into_the_effective_config(tmp_path: Path) -> None:
    job = build_train_job(
        _train_plan(tmp_path),
        job_id="abcdef123456",
        models_dir=tmp_path,
        work_dir=tmp_path / "work",
        sleap_nn=["sleap-nn"],
        device="cuda:1",
    )
    trainer = job.steps[0].config["trainer_config"]
    assert trainer["trainer_accelerator"] == "gpu"
    assert trainer["trainer_device_indices"] == [1]
