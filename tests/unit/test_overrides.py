"""``--set KEY=VALUE`` and ``--wandb`` on train jobs; ID models need tracked labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from sleap_rtc.engine.commands import build_train_job
from sleap_rtc.jobs.mounts import Mount, Mounts
from sleap_rtc.jobs.problems import JobRejected, Problem, ProblemCode
from sleap_rtc.jobs.specs import TrainSpec
from sleap_rtc.jobs.validation import plan_train
from tests.labels import write_labels

CONFIG = """\
data_config:
  train_labels_path: [labels.slp]
model_config:
  backbone_config: {{unet: {{}}}}
  head_configs: {{{head}: {{}}}}
trainer_config:
  max_epochs: 7
"""


@pytest.fixture()
def mount(tmp_path: Path) -> Path:
    folder = tmp_path / "mount"
    write_labels(folder / "labels.slp")
    return folder


def _spec(mount: Path, head: str = "single_instance", **kw: object) -> TrainSpec:
    config = mount / f"{head}.yaml"
    config.write_text(CONFIG.format(head=head))
    return TrainSpec(config_paths=[str(config)], **kw)  # type: ignore[arg-type]


def _rejected(spec: TrainSpec, mounts: Mounts) -> dict[str, Problem]:
    with pytest.raises(JobRejected) as info:
        plan_train(spec, mounts)
    return {p.field: p for p in info.value.problems}


def test_overrides_are_merged_into_each_config(mount: Path) -> None:
    mounts = Mounts([Mount.create(mount, "data")])
    spec = _spec(
        mount,
        overrides=["trainer_config.max_epochs=3", "trainer_config.train_steps_per_epoch=50"],
    )
    [config] = plan_train(spec, mounts).configs
    assert config.max_epochs == 3
    assert config.data["trainer_config"]["train_steps_per_epoch"] == 50
    assert (mount / "single_instance.yaml").read_text() == CONFIG.format(head="single_instance")


def test_bad_overrides_are_named_all_at_once(tmp_path: Path, mount: Path) -> None:
    mounts = Mounts([Mount.create(mount, "data")])
    (tmp_path / "w.ckpt").write_bytes(b"x")
    spec = _spec(
        mount,
        overrides=[
            "trainer_config.train_step_per_epoch=5",
            "trainer_config.max_epochs=many",
            "no equals sign",
            "trainer_config.ckpt_dir=/tmp",
            "data_config.train_labels_path=[/etc/x.slp]",
            "trainer_config.run_name=${oc.env:HOME}",
            f"model_config.pretrained_backbone_weights={tmp_path / 'w.ckpt'}",
        ],
    )
    found = _rejected(spec, mounts)
    assert "did you mean train_steps_per_epoch?" in found["overrides[0]"].message
    assert found["overrides[1]"].code is ProblemCode.CONFIG_INVALID
    assert found["overrides[2]"].code is ProblemCode.INVALID_VALUE
    assert "decided by the worker" in found["overrides[3]"].message
    assert "--labels PATH" in found["overrides[4]"].message
    assert "interpolation" in found["overrides[5]"].message
    # A path set by --set is checked like one written in the config: outside the mounts.
    weights = found["config[0].model_config.pretrained_backbone_weights"]
    assert weights.code is ProblemCode.ACCESS_DENIED
    assert len(found) == 7


def test_an_id_model_needs_labels_with_tracks(mount: Path) -> None:
    mounts = Mounts([Mount.create(mount, "data")])
    spec = _spec(mount, head="multi_class_topdown")
    [problem] = _rejected(spec, mounts).values()
    assert problem.field == "config_path" and problem.code is ProblemCode.CONFLICT
    assert "trains an ID model (multi_class_topdown)" in problem.message
    assert "its labels have none" in problem.message


def test_wandb_logs_offline_into_the_model_folder(mount: Path) -> None:
    mounts = Mounts([Mount.create(mount, "data")])
    plan = plan_train(_spec(mount, wandb=True), mounts)
    job = build_train_job(plan, job_id="j1", models_dir=mount / "models")
    trainer = job.steps[0].config["trainer_config"]
    assert trainer["use_wandb"] is True
    assert trainer["wandb"]["wandb_mode"] == "offline" and trainer["wandb"]["api_key"] is None
    plain = build_train_job(plan_train(_spec(mount), mounts), job_id="j2", models_dir=mount)
    assert plain.steps[0].config["trainer_config"]["use_wandb"] is False
