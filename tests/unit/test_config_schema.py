"""Configs are checked against sleap-nn's schema (a shipped snapshot) before a job runs."""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sleap_rtc.jobs import config_schema
from sleap_rtc.jobs.config_schema import (
    ConfigIssue,
    Schema,
    check_config,
    check_override,
    load_snapshot,
    schema_for,
)

REPO = Path(__file__).resolve().parents[2]
DELETE = "__delete__"


def tiny() -> dict[str, Any]:
    """A small config sleap-nn accepts: one backbone and one head, the others null."""
    return {
        "data_config": {"train_labels_path": ["labels.slp"], "preprocessing": {"scale": 1.0}},
        "model_config": {
            "backbone_config": {
                "unet": {"filters": 16, "max_stride": 8},
                "convnext": None,
                "swint": None,
            },
            "head_configs": {
                "single_instance": {"confmaps": {"sigma": 2.5, "output_stride": 2}},
                "centroid": None,
                "bottomup": None,
            },
        },
        "trainer_config": {"max_epochs": 3, "train_data_loader": {"batch_size": 2}},
    }


def changed(changes: dict[str, Any]) -> dict[str, Any]:
    """``tiny()`` with each dotted key set (or removed, for ``DELETE``), in order."""
    config = tiny()
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        if value == DELETE:
            node.pop(last, None)
        else:
            node[last] = copy.deepcopy(value)
    return config


def only(config: dict[str, Any]) -> ConfigIssue:
    issues = check_config(config)
    assert len(issues) == 1, issues
    return issues[0]


def test_a_small_valid_config_and_the_shipped_configs_pass() -> None:
    assert check_config(tiny()) == []
    shipped = sorted((REPO / "src/sleap_rtc/demo/configs").glob("*.yaml"))
    shipped += sorted((REPO / "examples/configs").glob("*.yaml"))
    assert shipped
    for path in shipped:
        assert check_config(yaml.safe_load(path.read_text())) == [], path


def test_a_misspelled_key_names_the_closest_setting() -> None:
    issue = only(changed({"model_config.backbone_config.unet.filtres": 16}))
    assert issue == ConfigIssue(
        key="model_config.backbone_config.unet.filtres",
        value="16",
        message="model_config.backbone_config.unet.filtres is not a sleap-nn setting; "
        "did you mean filters?",
        code="UNKNOWN_FIELD",
    )
    moved = only(changed({"data_config.max_epochs": 5}))
    assert moved.message.endswith("did you mean trainer_config.max_epochs?")
    assert only(changed({"foo": 1})).message == "foo is not a sleap-nn setting"


def test_sleap_nn_s_own_top_level_keys_and_dropped_keys_are_accepted() -> None:
    config = changed(
        {"name": "run", "description": None, "sleap_nn_version": "0.3.5", "filename": "a.yaml"}
    )
    assert check_config(config) == []
    embedding = {
        "embedding": {"loss_weight": 1.0, "objective": {"negatives": {"proximity_filter_px": 3}}}
    }
    config = changed({"model_config.head_configs": {"embedding": embedding}})
    assert check_config(config) == []


@pytest.mark.parametrize(
    ("key", "value", "wants"),
    [
        ("data_config.train_labels_path", 5, "a list"),
        ("data_config.train_labels_path", "labels.slp", "a list"),
        ("model_config.backbone_config.unet.filters", "sixteen", "a whole number"),
        ("model_config.backbone_config.unet.filters", 16.5, "a whole number"),
        ("model_config.backbone_config.unet.filters", True, "a whole number"),
        ("model_config.backbone_config.unet.filters_rate", "fast", "a number"),
        ("model_config.backbone_config.unet.middle_block", "maybe", "true or false"),
        ("trainer_config.trainer_accelerator", ["cpu"], "a single value (text)"),
        ("data_config.preprocessing", 3, "a mapping of settings"),
        ("model_config.backbone_config.convnext", {"arch": 5}, "a mapping"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(key: str, value: Any, wants: str) -> None:
    config = changed({key: value})
    if key.startswith("model_config.backbone_config.convnext"):
        config["model_config"]["backbone_config"]["unet"] = None
    issue = only(config)
    assert issue.code == "INVALID_TYPE"
    assert issue.message.endswith(f"must be {wants}")
    assert issue.key.startswith(key)


def test_values_omegaconf_converts_are_accepted() -> None:
    config = changed(
        {
            "model_config.backbone_config.unet.filters": "16",
            "model_config.backbone_config.unet.filters_rate": 2,
            "model_config.backbone_config.unet.middle_block": "yes",
            "trainer_config.optimizer.lr": "1e-3",
            "trainer_config.trainer_accelerator": 5,
            "trainer_config.min_train_steps_per_epoch": "${trainer_config.max_epochs}",
            "trainer_config.trainer_device_indices": ["1", 2],
        }
    )
    assert check_config(config) == []


def test_list_items_are_checked() -> None:
    issue = only(changed({"trainer_config.trainer_device_indices": [0, "x"]}))
    assert issue.key == "trainer_config.trainer_device_indices[1]"
    issue = only(changed({"data_config.train_labels_path": ["a.slp", None]}))
    assert issue.message == "data_config.train_labels_path[1] cannot be null"


def test_a_choice_that_is_not_offered_names_the_ones_that_are() -> None:
    issue = only(changed({"data_config.preprocessing.crop_mode": "fix"}))
    assert issue.code == "INVALID_VALUE"
    assert issue.message == (
        "data_config.preprocessing.crop_mode must be one of bbox, fixed (got 'fix')"
    )
    assert "Adam, AdamW" in only(changed({"trainer_config.optimizer_name": "SGD"})).message
    sources = "model_config.head_configs.embedding.embedding.objective.negatives.sources"
    config = changed({"model_config.head_configs": {"embedding": {}}, sources: ["in_batch", "x"]})
    assert only(config).key == f"{sources}[1]"


def test_null_is_fine_only_where_sleap_nn_allows_it() -> None:
    nullable = {
        "data_config.augmentation_config": None,
        "data_config.val_labels_path": None,
        "trainer_config.seed": None,
        "trainer_config.lr_scheduler": None,
        "data_config.test_file_path": None,
    }
    assert check_config(changed(nullable)) == []
    issue = only(changed({"trainer_config.max_epochs": None}))
    assert issue.message == "trainer_config.max_epochs cannot be null; it must be a whole number"
    assert issue.value == "null"
    assert only(changed({"data_config.preprocessing": None})).code == "INVALID_TYPE"


def test_sections_may_be_absent_or_empty() -> None:
    config = changed({"trainer_config": DELETE, "data_config.augmentation_config": {}})
    assert check_config(config) == []


def test_exactly_one_backbone_and_one_head() -> None:
    issue = only(changed({"model_config.head_configs.centroid": {}}))
    assert issue.code == "CONFLICT"
    assert issue.message.startswith("model_config.head_configs sets single_instance, centroid")
    issue = only(changed({"model_config.backbone_config.unet": None}))
    assert (issue.key, issue.code, issue.value) == (
        "model_config.backbone_config",
        "MISSING_FIELD",
        None,
    )
    assert "unet, convnext, swint, pretrained" in issue.message
    assert [i.key for i in check_config(changed({"model_config": DELETE}))] == [
        "model_config.backbone_config",
        "model_config.head_configs",
    ]


def test_free_form_settings_are_not_checked_below() -> None:
    config = changed(
        {
            "model_config.backbone_config.unet": None,
            "model_config.backbone_config.convnext": {"arch": {"anything": [1, {"x": None}]}},
            "trainer_config.train_data_loader.num_workers": "auto",
            "data_config.skeletons": [{"whatever": 1}],
        }
    )
    assert check_config(config) == []


def test_every_problem_is_reported_at_once_with_short_values() -> None:
    config = changed(
        {
            "model_config.backbone_config.unet.filtres": 16,
            "trainer_config.max_epochs": "many",
            "data_config.preprocessing.crop_mode": "x" * 500,
        }
    )
    issues = check_config(config)
    assert [i.code for i in issues] == ["INVALID_VALUE", "UNKNOWN_FIELD", "INVALID_TYPE"]
    assert len(issues[0].value or "") == 200
    (issue,) = check_config([1, 2])  # type: ignore[arg-type]
    assert issue.message == "a sleap-nn config must be a mapping of settings"


def test_overrides_are_checked_like_config_keys() -> None:
    assert check_override("trainer_config.max_epochs", "20") == []
    assert check_override("model_config.backbone_config.unet", "{filters: 8}") == []
    assert check_override("model_config.backbone_config.convnext.arch.depths", "[1, 2]") == []
    assert check_override("data_config.augmentation_config", "null") == []
    (issue,) = check_override("trainer_config.max_epoch", "20")
    assert issue.message.endswith("did you mean max_epochs?")
    assert issue.value == "20"
    (issue,) = check_override("trainer_config.max_epochs", "[20]")
    assert (issue.code, issue.value) == ("INVALID_TYPE", "[20]")
    (issue,) = check_override("model_config.backbone_config.unet", "{filtres: 8}")
    assert issue.key == "model_config.backbone_config.unet.filtres"
    (issue,) = check_override("trainer_config.max_epochs.x", "1")
    assert issue.message == "trainer_config.max_epochs is a single setting, not a section"
    (issue,) = check_override("trainer_config.optimizer_name", "'unclosed")
    assert issue.message == "the value for trainer_config.optimizer_name is not valid YAML"


def test_checking_imports_neither_sleap_nn_nor_torch() -> None:
    code = (
        "import sys\n"
        "from sleap_rtc.jobs.config_schema import check_config, check_override\n"
        "check_config({'trainer_config': {'max_epochs': 'x'}})\n"
        "check_override('trainer_config.max_epochs', '1')\n"
        "assert not {'sleap_nn', 'torch', 'omegaconf'} & set(sys.modules), 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _snapshot_as(version: str) -> dict[str, Any]:
    data = json.loads((REPO / "src/sleap_rtc/jobs/sleap_nn_schema.json").read_text())
    return {**data, "sleap_nn_version": version}


def test_schema_for_the_shipped_version_is_the_snapshot(tmp_path: Path) -> None:
    shipped = load_snapshot()
    assert shipped.sleap_nn_version == "0.3.5"
    assert schema_for(None) == (shipped, True)
    assert schema_for("0.3.5", tmp_path) == (shipped, True)
    (tmp_path / "sleap_nn_schema-9.9.json").write_text(json.dumps(_snapshot_as("9.9")))
    schema, exact = schema_for("9.9", tmp_path)
    assert (schema.sleap_nn_version, exact) == ("9.9", True)


def test_another_version_is_derived_once_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def derive(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, json.dumps(_snapshot_as("1.0")), "")

    monkeypatch.setattr(config_schema.subprocess, "run", derive)
    for _ in range(2):
        schema, exact = schema_for("1.0", tmp_path / "cache")
        assert (schema.sleap_nn_version, exact) == ("1.0", True)
    assert calls == [[sys.executable, "-m", "sleap_rtc.jobs.config_schema", "--dump"]]
    assert Schema.from_json(json.loads((tmp_path / "cache/sleap_nn_schema-1.0.json").read_text()))


def test_a_failed_derivation_falls_back_to_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(config_schema.subprocess, "run", fail)
    with caplog.at_level(logging.WARNING):
        assert schema_for("2.0", tmp_path) == (load_snapshot(), False)
    assert "no settings for sleap-nn 2.0 (" in caplog.text and "using 0.3.5's" in caplog.text
    assert not list(tmp_path.iterdir())


# -- against the installed sleap-nn --------------------------------------------------------

# Run in a child: prints the configs sleap-nn itself makes, and its verdict on each
# config read from stdin, so the check is compared with the real loader.
_SLEAP_NN = r"""
import json, sys, typing
from pathlib import Path
import attrs
from loguru import logger
from omegaconf import OmegaConf
from sleap_nn.config import model_config as mc
from sleap_nn.config.training_job_config import TrainingJobConfig, verify_training_cfg
from sleap_nn.config_generator import generator
from tests.labels import write_labels

logger.disable("sleap_nn")

def accepted(config):
    try:
        verify_training_cfg(OmegaConf.create(config))
    except Exception:
        return False
    return True

def full(cls):
    # Every optional section filled in with its defaults (one variant per oneof).
    kwargs = {}
    for f in attrs.fields(cls):
        tp = next((a for a in typing.get_args(f.type) if a is not type(None)), f.type)
        if attrs.has(tp) and not hasattr(tp, "which_oneof"):
            kwargs[f.name] = full(tp)
    return cls(**kwargs)

made = {}
for head in attrs.fields(mc.HeadConfig):
    for backbone in attrs.fields(mc.BackboneConfig):
        job = full(TrainingJobConfig)
        chosen = full(backbone.type.__args__[0])
        job.model_config.backbone_config = mc.BackboneConfig(**{backbone.name: chosen})
        job.model_config.head_configs = mc.HeadConfig(**{head.name: full(head.type.__args__[0])})
        made[f"{backbone.name}+{head.name}"] = OmegaConf.to_yaml(OmegaConf.structured(job))
labels = write_labels(Path(sys.argv[1]) / "labels.slp")
for pipeline in typing.get_args(generator.PipelineType):
    for backbone in ("unet_medium_rf", "convnext_tiny", "swint_tiny"):
        gen = generator.ConfigGenerator.from_slp(str(labels)).auto()
        built = gen.pipeline(pipeline).backbone(backbone).build()
        made[f"{pipeline}+{backbone}"] = OmegaConf.to_yaml(built)
cases = json.load(sys.stdin)
print(json.dumps({
    "made": {name: [text, accepted(OmegaConf.create(text))] for name, text in made.items()},
    "verdicts": [accepted(case) for case in cases],
}))
"""

# Edits of ``tiny()`` on which the check and sleap-nn must agree.
CASES: list[dict[str, Any]] = [
    {},
    {"model_config.backbone_config.unet.filters": "16"},
    {"model_config.backbone_config.unet.filters": "abc"},
    {"model_config.backbone_config.unet.filters": 16.0},
    {"model_config.backbone_config.unet.filters": True},
    {"model_config.backbone_config.unet.filters": None},
    {"model_config.backbone_config.unet.filters_rate": 2},
    {"model_config.backbone_config.unet.filters_rate": True},
    {"model_config.backbone_config.unet.middle_block": 2},
    {"model_config.backbone_config.unet.middle_block": "off"},
    {"model_config.backbone_config.unet.middle_block": 1.0},
    {"model_config.backbone_config.unet.filtres": 16},
    {"trainer_config.trainer_accelerator": 1.5},
    {"trainer_config.trainer_accelerator": {"a": 1}},
    {"trainer_config.trainer_accelerator": None},
    {"trainer_config.trainer_device_indices": ["1", 2]},
    {"trainer_config.trainer_device_indices": [1.5]},
    {"trainer_config.trainer_device_indices": [True]},
    {"trainer_config.optimizer.lr": "1e-3"},
    {"trainer_config.optimizer_name": "AdamW"},
    {"trainer_config.optimizer_name": "adamw"},
    {"trainer_config.lr_scheduler": None},
    {"trainer_config.min_train_steps_per_epoch": "${trainer_config.max_epochs}"},
    {"data_config.train_labels_path": "a.slp"},
    {"data_config.train_labels_path": [5]},
    {"data_config.train_labels_path": [None]},
    {"data_config.preprocessing": None},
    {"data_config.preprocessing": []},
    {"data_config.augmentation_config": None},
    {"data_config.augmentation_config": {}},
    {"data_config.augmentation_config": {"intensity": {"contrst_p": 0.1}}},
    {"data_config.preprocessing.crop_mode": "bbox"},
    {"data_config.preprocessing.crop_mode": "fix"},
    {"data_config.preprocessing.tiling.blend": "gauss"},
    {"data_config.preprocessing.tiling.blend": "pyramid"},
    {"data_config.skeletons": [{"a": 1}]},
    {"data_config.skeletons": {"a": 1}},
    {"name": None, "description": "d", "sleap_nn_version": "0.1", "filename": "f.yaml"},
    {"defaults": ["_self_"]},
    {"model_config.head_configs.centroid": {}},
    {"model_config.head_configs.single_instance": None},
    {"model_config.backbone_config": None},
    {"model_config.backbone_config.unet": None, "model_config.backbone_config.swint": {}},
    {
        "model_config.backbone_config.unet": None,
        "model_config.backbone_config.swint": {"model_type": "huge"},
    },
    {
        "model_config.backbone_config.unet": None,
        "model_config.backbone_config.convnext": {"arch": {"depths": [1], "free": "x"}},
    },
    {
        "model_config.head_configs.single_instance": None,
        "model_config.head_configs.bottomup": {"confmaps": {}, "pafs": {"edges": ["a", "b"]}},
    },
    {
        "model_config.head_configs.single_instance": None,
        "model_config.head_configs.embedding": {
            "embedding": {"detection_mode": "pose", "objective": {"positives": {"scope": "x"}}}
        },
    },
]


@pytest.mark.slow
def test_the_shipped_snapshot_is_what_the_installed_sleap_nn_gives() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sleap_rtc.jobs.config_schema", "--dump"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    derived = json.loads(done.stdout)
    snapshot = json.loads((REPO / "src/sleap_rtc/jobs/sleap_nn_schema.json").read_text())
    assert derived == snapshot, (
        "sleap-nn's schema changed: regenerate src/sleap_rtc/jobs/sleap_nn_schema.json with "
        "python -m sleap_rtc.jobs.config_schema --dump"
    )


@pytest.mark.slow
def test_the_check_agrees_with_sleap_nn_on_real_and_broken_configs(tmp_path: Path) -> None:
    configs = [changed(case) for case in CASES]
    done = subprocess.run(
        [sys.executable, "-c", _SLEAP_NN, str(tmp_path)],
        input=json.dumps(configs),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["made"]) > 40
    for name, (text, accepted) in result["made"].items():
        assert accepted, name
        assert check_config(yaml.safe_load(text)) == [], name
    for case, config, accepted in zip(CASES, configs, result["verdicts"], strict=True):
        issues = check_config(config)
        assert (issues == []) == accepted, (case, issues)
