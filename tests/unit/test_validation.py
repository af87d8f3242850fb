"""Worker-side validation: every problem at once, and no path escapes a mount."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sleap_rtc.jobs.mounts import Mount, Mounts
from sleap_rtc.jobs.problems import JobRejected, ProblemCode
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.jobs.validation import plan_track, plan_train
from tests.labels import write_labels

CONFIG = """\
data_config:
  train_labels_path: [../labels.slp]
  val_labels_path: null
model_config: {backbone_config: {unet: {}}, head_configs: {single_instance: {}}}
trainer_config:
  max_epochs: 7
"""


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, Path]:
    mount = tmp_path / "mount"
    (mount / "configs").mkdir(parents=True)
    (mount / "configs" / "good.yaml").write_text(CONFIG)
    (mount / "configs" / "broken.yaml").write_text("data_config: [unclosed\n")
    (mount / "configs" / "notcfg.yaml").write_text("- just\n- a list\n")
    write_labels(mount / "labels.slp")
    write_labels(mount / "data.slp", frames=40)
    (mount / "model").mkdir()
    (mount / "model" / "training_config.yaml").write_text("x: 1\n")
    (mount / "model" / "best.ckpt").write_bytes(b"x")
    (mount / "empty_dir").mkdir()
    (mount / "out").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.slp").write_bytes(b"x")
    (outside / "cfg.yaml").write_text(CONFIG)
    (mount / "link_out").symlink_to(outside)
    (mount / "link_parent").symlink_to(tmp_path)
    (mount / "configs" / "escaping.yaml").write_text(
        CONFIG.replace("[../labels.slp]", f"[{outside / 'secret.slp'}]")
    )
    (tmp_path / "alias").symlink_to(tmp_path)
    return {"root": tmp_path, "mount": mount, "outside": outside}


@pytest.fixture()
def mounts(tree: dict[str, Path]) -> Mounts:
    # Configured through a symlinked parent: must still compare equal to the real path.
    return Mounts([Mount.create(tree["root"] / "alias" / "mount", "data")])


def _train(tree: dict[str, Path], **kw: object) -> TrainSpec:
    kw.setdefault("config_paths", [str(tree["mount"] / "configs" / "good.yaml")])
    return TrainSpec(**kw)  # type: ignore[arg-type]


def _problems(fn, spec, mounts):  # type: ignore[no-untyped-def]
    with pytest.raises(JobRejected) as info:
        fn(spec, mounts)
    return info.value.problems


def test_good_train_plan_resolves_paths(tree: dict[str, Path], mounts: Mounts) -> None:
    plan = plan_train(_train(tree), mounts)
    [config] = plan.configs
    assert config.train_labels == [(tree["mount"] / "labels.slp").resolve()]
    assert config.max_epochs == 7
    assert config.stem == "good"


ESCAPES = [
    ("{mount}/../outside/secret.slp", ProblemCode.ACCESS_DENIED),
    ("/etc/passwd", ProblemCode.ACCESS_DENIED),
    ("{mount}/link_out/secret.slp", ProblemCode.ACCESS_DENIED),
    ("{mount}/link_parent/outside/secret.slp", ProblemCode.ACCESS_DENIED),
    ("{root}/outside/does-not-exist.slp", ProblemCode.ACCESS_DENIED),
    ("/nonexistent/../etc/passwd", ProblemCode.ACCESS_DENIED),
    ("~/secret.slp", ProblemCode.INVALID_PATH),
    ("~root/secret.slp", ProblemCode.INVALID_PATH),
    ("", ProblemCode.INVALID_PATH),
    ("   ", ProblemCode.INVALID_PATH),
    ("{mount}/labels.slp\x00.txt", ProblemCode.INVALID_PATH),
    ("/" + "a" * 5000, ProblemCode.INVALID_PATH),
    ("{mount}/" + "b" * 300 + ".slp", ProblemCode.INVALID_PATH),
    ("labels.slp", ProblemCode.INVALID_PATH),
    ("../mount/labels.slp", ProblemCode.INVALID_PATH),
    ("{mount}/nope.slp", ProblemCode.PATH_NOT_FOUND),
    ("{mount}/empty_dir", ProblemCode.NOT_A_FILE),
]


@pytest.mark.parametrize(("raw", "code"), ESCAPES)
def test_escape_corpus(tree: dict[str, Path], mounts: Mounts, raw: str, code: ProblemCode) -> None:
    path = raw.format(mount=tree["mount"], root=tree["root"])
    problems = _problems(plan_train, _train(tree, labels_path=path), mounts)
    assert [(p.field, p.code) for p in problems] == [("labels_path", code)]
    if code is ProblemCode.ACCESS_DENIED:
        assert "outside the worker's mounts" in problems[0].message
        assert problems[0].message.startswith("Access denied:")
    if code is ProblemCode.PATH_NOT_FOUND:
        assert problems[0].message == f"Path not found: {path}"


def test_escape_corpus_applies_to_track_paths(tree: dict[str, Path], mounts: Mounts) -> None:
    spec = TrackSpec(
        data_path=str(tree["mount"] / "link_out" / "secret.slp"),
        model_paths=[str(tree["mount"] / "link_parent")],
        output_path=str(tree["outside"] / "pred.slp"),
    )
    problems = _problems(plan_track, spec, mounts)
    assert [(p.field, p.code) for p in problems] == [
        ("data_path", ProblemCode.ACCESS_DENIED),
        ("model_paths", ProblemCode.ACCESS_DENIED),
        ("output_path", ProblemCode.ACCESS_DENIED),
    ]


def test_three_bad_paths_give_three_errors(tree: dict[str, Path], mounts: Mounts) -> None:
    spec = _train(
        tree,
        config_paths=["/vast/wrong/path.yaml"],
        labels_path=str(tree["mount"] / "missing.slp"),
        val_labels_path=str(tree["outside"] / "secret.slp"),
    )
    problems = _problems(plan_train, spec, mounts)
    assert [(p.field, p.code) for p in problems] == [
        ("labels_path", ProblemCode.PATH_NOT_FOUND),
        ("val_labels_path", ProblemCode.ACCESS_DENIED),
        ("config_path", ProblemCode.ACCESS_DENIED),
    ]


def test_ranges_and_paths_reported_together(tree: dict[str, Path], mounts: Mounts) -> None:
    spec = _train(
        tree,
        config_paths=[str(tree["mount"] / "nope.yaml")],
        max_epochs=0,
        batch_size=-1,
        learning_rate=5.0,
        run_name="../evil",
    )
    problems = _problems(plan_train, spec, mounts)
    codes = {p.field: p.code for p in problems}
    assert codes == {
        "max_epochs": ProblemCode.OUT_OF_RANGE,
        "batch_size": ProblemCode.OUT_OF_RANGE,
        "learning_rate": ProblemCode.OUT_OF_RANGE,
        "run_name": ProblemCode.INVALID_VALUE,
        "config_path": ProblemCode.PATH_NOT_FOUND,
    }


@pytest.mark.parametrize("name", ["broken.yaml", "notcfg.yaml"])
def test_config_must_parse(tree: dict[str, Path], mounts: Mounts, name: str) -> None:
    spec = _train(tree, config_paths=[str(tree["mount"] / "configs" / name)])
    [problem] = _problems(plan_train, spec, mounts)
    assert problem.code is ProblemCode.CONFIG_INVALID and problem.field == "config_path"


def test_labels_named_in_config_are_checked(tree: dict[str, Path], mounts: Mounts) -> None:
    spec = _train(
        tree,
        config_paths=[
            str(tree["mount"] / "configs" / "good.yaml"),
            str(tree["mount"] / "configs" / "escaping.yaml"),
        ],
    )
    [problem] = _problems(plan_train, spec, mounts)
    assert problem.field == "labels_path" and problem.code is ProblemCode.ACCESS_DENIED
    assert "data_config.train_labels_path" in problem.message and "--labels" in problem.message
    # An override replaces what the config names, so the job is accepted.
    ok = _train(tree, config_paths=spec.config_paths, labels_path=str(tree["mount"] / "labels.slp"))
    assert len(plan_train(ok, mounts).configs) == 2


def test_multi_config_fields_are_indexed(tree: dict[str, Path], mounts: Mounts) -> None:
    spec = _train(
        tree,
        config_paths=[str(tree["mount"] / "configs" / "good.yaml"), str(tree["mount"] / "x.yaml")],
    )
    [problem] = _problems(plan_train, spec, mounts)
    assert problem.field == "config_paths[1]"


def test_track_plan_and_output_rules(tree: dict[str, Path], mounts: Mounts) -> None:
    mount = tree["mount"]
    spec = TrackSpec(
        data_path=str(mount / "data.slp"), model_paths=[str(mount / "model")], frames="0-10,20-30"
    )
    plan = plan_track(spec, mounts)
    # A relative output lands beside the data.
    assert plan.output_path == (mount / "predictions.slp").resolve()
    assert [len(r) for r in plan.frames or []] == [11, 11]
    plan.output_path.write_bytes(b"old")
    [problem] = _problems(plan_track, spec, mounts)
    assert problem.code is ProblemCode.OUTPUT_EXISTS
    assert plan_track(spec.model_copy(update={"overwrite": True}), mounts)


def test_track_field_problems(tree: dict[str, Path], mounts: Mounts) -> None:
    mount = tree["mount"]
    spec = TrackSpec(
        data_path=str(mount / "configs" / "good.yaml"),
        model_paths=[str(mount / "empty_dir"), str(mount / "labels.slp")],
        output_path=str(mount / "out" / "pred.txt"),
        peak_threshold=1.5,
        frames="10-0",
        batch_size=0,
    )
    codes = [(p.field, p.code) for p in _problems(plan_track, spec, mounts)]
    assert codes == [
        ("batch_size", ProblemCode.OUT_OF_RANGE),
        ("peak_threshold", ProblemCode.OUT_OF_RANGE),
        ("frames", ProblemCode.FRAMES_INVALID),
        ("data_path", ProblemCode.WRONG_FILE_TYPE),
        ("model_paths[0]", ProblemCode.NOT_A_MODEL),
        ("model_paths[1]", ProblemCode.NOT_A_DIRECTORY),
        ("output_path", ProblemCode.WRONG_FILE_TYPE),
    ]


def test_read_only_mount_refuses_output(tree: dict[str, Path]) -> None:
    mounts = Mounts([Mount.create(tree["mount"], "data", read_only=True)])
    spec = TrackSpec(
        data_path=str(tree["mount"] / "data.slp"), model_paths=[str(tree["mount"] / "model")]
    )
    [problem] = _problems(plan_track, spec, mounts)
    assert problem.code is ProblemCode.READ_ONLY and problem.field == "output_path"


def test_mount_parsing(tmp_path: Path) -> None:
    assert Mount.parse(f"{tmp_path}:proj").label == "proj"
    ro = Mount.parse(f"{tmp_path}:proj:ro")
    assert ro.read_only and ro.label == "proj"
    assert Mount.parse(str(tmp_path)).label == tmp_path.name
    with pytest.raises(ValueError, match="absolute"):
        Mount.parse("relative/dir")
    with pytest.raises(ValueError, match="not an existing folder"):
        Mount.parse(f"{tmp_path}/missing")
    with pytest.raises(ValueError, match="unique"):
        Mounts([Mount.create(tmp_path, "a"), Mount.create(tmp_path, "a")])


def test_unreadable_file(tree: dict[str, Path], mounts: Mounts) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    target = tree["mount"] / "labels.slp"
    target.chmod(0)
    [problem] = _problems(plan_train, _train(tree, labels_path=str(target)), mounts)
    assert problem.code is ProblemCode.NOT_READABLE


def _config_with(tree: dict[str, Path], name: str, text: str) -> TrainSpec:
    path = tree["mount"] / "configs" / name
    path.write_text(text)
    return _train(tree, config_paths=[str(path)])


def test_every_path_key_of_a_config_is_checked(tree: dict[str, Path], mounts: Mounts) -> None:
    outside = tree["outside"]
    text = CONFIG.replace(
        "model_config: {backbone_config: {unet: {}}, head_configs: {single_instance: {}}}",
        "model_config:\n  pretrained_head_weights: x.ckpt\n  backbone_config: {unet: {}}\n"
        "  head_configs: {single_instance: {}}",
    )
    text += f"  resume_ckpt_path: {outside / 'x.ckpt'}\n"
    text = text.replace(
        "  val_labels_path: null", f"  val_labels_path: null\n  test_file_path: [{outside}/t.slp]"
    )
    spec = _config_with(tree, "keys.yaml", text)
    problems = {(p.field, p.code) for p in _problems(plan_train, spec, mounts)}
    assert problems == {
        ("config[0].data_config.test_file_path", ProblemCode.ACCESS_DENIED),
        ("config[0].model_config.pretrained_head_weights", ProblemCode.PATH_NOT_FOUND),
        ("config[0].trainer_config.resume_ckpt_path", ProblemCode.ACCESS_DENIED),
    }


def test_good_path_keys_are_resolved_for_the_effective_config(
    tree: dict[str, Path], mounts: Mounts
) -> None:
    (tree["mount"] / "w.ckpt").write_bytes(b"x")
    text = CONFIG.replace(
        "model_config: {backbone_config: {unet: {}}, head_configs: {single_instance: {}}}",
        "model_config:\n  pretrained_backbone_weights: ../w.ckpt\n  backbone_config: {unet: {}}\n"
        "  head_configs: {single_instance: {}}",
    ).replace("  val_labels_path: null", "  val_labels_path: null\n  test_file_path: ../data.slp")
    plan = plan_train(_config_with(tree, "ok.yaml", text), mounts)
    assert plan.configs[0].paths == {
        "data_config.test_file_path": str((tree["mount"] / "data.slp").resolve()),
        "model_config.pretrained_backbone_weights": str((tree["mount"] / "w.ckpt").resolve()),
    }


@pytest.mark.parametrize(
    ("addition", "code", "word"),
    [
        ("  my_output_dir: /tmp/x\n", ProblemCode.CONFIG_INVALID, "not a sleap-nn setting"),
        ("  ckpt_dir: ${oc.env:HOME}\n", ProblemCode.CONFIG_INVALID, "interpolation"),
    ],
)
def test_unknown_path_keys_and_interpolations_are_refused(
    tree: dict[str, Path], mounts: Mounts, addition: str, code: ProblemCode, word: str
) -> None:
    spec = _config_with(tree, "extra.yaml", CONFIG + addition)
    [problem] = _problems(plan_train, spec, mounts)
    assert problem.code is code and word in problem.message
    assert problem.field.startswith("config[0].trainer_config.")


def test_yaml_aliases_are_refused(tree: dict[str, Path], mounts: Mounts) -> None:
    text = "x: &a [1, 2]\ny: *a\n" + CONFIG
    [problem] = _problems(plan_train, _config_with(tree, "alias.yaml", text), mounts)
    assert problem.code is ProblemCode.CONFIG_INVALID and "aliases" in problem.message


def test_checkpoints_from_an_untrusted_mount_are_refused(tree: dict[str, Path]) -> None:
    untrusted = Mounts([Mount(path=tree["mount"].resolve(), label="uploads", trusted=False)])
    spec = TrackSpec(
        data_path=str(tree["mount"] / "data.slp"), model_paths=[str(tree["mount"] / "model")]
    )
    [problem] = _problems(plan_track, spec, untrusted)
    assert (problem.field, problem.code) == ("model_paths", ProblemCode.ACCESS_DENIED)
    assert "sandboxed worker" in problem.message


@pytest.mark.parametrize("kind", ["hardlink", "fifo", "symlink-in", "input"])
def test_an_overwritten_output_must_be_a_plain_file_of_its_own(
    tree: dict[str, Path], mounts: Mounts, kind: str
) -> None:
    out = tree["mount"] / "out" / "p.slp"
    if kind == "hardlink":
        os.link(tree["mount"] / "labels.slp", out)
    elif kind == "fifo":
        os.mkfifo(out)
    elif kind == "symlink-in":
        out.symlink_to(tree["mount"] / "labels.slp")
    else:
        out = tree["mount"] / "data.slp"
    spec = TrackSpec(
        data_path=str(tree["mount"] / "data.slp"),
        model_paths=[str(tree["mount"] / "model")],
        output_path=str(out),
        overwrite=True,
    )
    [problem] = _problems(plan_track, spec, mounts)
    expected = ProblemCode.CONFLICT if kind == "input" else ProblemCode.INVALID_PATH
    assert (problem.field, problem.code) == ("output_path", expected)


def _model(folder: Path, *names: str) -> Path:
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"x")
    return folder


def test_model_folders_in_both_layouts_and_a_path_to_their_checkpoint(
    tree: dict[str, Path], mounts: Mounts
) -> None:
    mount = tree["mount"]
    legacy = _model(mount / "legacy", "training_config.json", "best_model.h5")
    named = [str(legacy), str(mount / "model" / "best.ckpt"), str(legacy / "training_config.json")]
    spec = TrackSpec(data_path=str(mount / "data.slp"), model_paths=named)
    plan = plan_track(spec, mounts)
    assert plan.model_paths == [legacy.resolve(), (mount / "model").resolve(), legacy.resolve()]


def test_a_model_folder_without_best_weights_says_what_is_missing(
    tree: dict[str, Path], mounts: Mounts
) -> None:
    mount = tree["mount"]
    last_only = _model(mount / "unfinished", "training_config.yaml", "last.ckpt")
    spec = TrackSpec(
        data_path=str(mount / "data.slp"),
        model_paths=[str(last_only), str(mount / "empty_dir"), str(mount / "labels.slp")],
    )
    unfinished, empty, a_file = _problems(plan_track, spec, mounts)
    assert unfinished.code is ProblemCode.NOT_A_MODEL
    assert "last.ckpt but no best.ckpt" in unfinished.message
    assert empty.code is ProblemCode.NOT_A_MODEL
    for problem in (empty, a_file):
        assert "best.ckpt (sleap-nn)" in problem.message
        assert "best_model.h5 (SLEAP 1.4 and earlier)" in problem.message


def test_every_sleap_nn_key_that_may_hold_a_path_has_a_rule() -> None:
    """A key of sleap-nn's schema that can hold text and is named like a path must be
    checked or set by the worker (config_keys), not merely refused at run time."""
    from sleap_rtc.jobs import config_keys
    from sleap_rtc.jobs.config_schema import load_snapshot

    keys = load_snapshot().keys
    unruled = [
        key
        for key, spec in keys.items()
        if spec["kind"] in ("str", "any", "list", "dict") and config_keys.looks_like_path_key(key)
    ]
    assert unruled == []
    assert [key for key in config_keys.PATH_KEYS if key not in keys] == []


def test_a_config_typo_is_refused_with_the_closest_key(
    tree: dict[str, Path], mounts: Mounts
) -> None:
    text = CONFIG.replace("unet: {}", "unet: {filtres: 16}").replace(
        "trainer_config:", "trainer_config:\n  min_train_steps_per_epoch: many"
    )
    spec = _config_with(tree, "typo.yaml", text)
    found = {p.field: p for p in _problems(plan_train, spec, mounts)}
    typo = found["config[0].model_config.backbone_config.unet.filtres"]
    assert typo.code is ProblemCode.CONFIG_INVALID and "did you mean filters?" in typo.message
    assert typo.message.endswith(f"(in {spec.config_paths[0]})")
    assert found["config[0].trainer_config.min_train_steps_per_epoch"].value == "many"
