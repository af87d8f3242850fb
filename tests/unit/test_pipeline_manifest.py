"""Manifests: portable roots under {experiment_root}, the examples, and `manifest verify`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from sleap_rtc.cli.pipeline import pipeline
from sleap_rtc.pipeline.manifest import (
    EXPERIMENT_ROOT,
    EXPERIMENT_ROOT_ENV,
    MANIFEST_NAME,
    Manifest,
    expand_root,
    portable_root,
    read_manifest,
    verify_manifest,
    write_manifest,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "manifests"
EXAMPLE_FILES = ("mice_manifest.json", "flies_manifest.json")


@pytest.fixture(autouse=True)
def _no_env_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXPERIMENT_ROOT_ENV, raising=False)


def fake_stage(experiment_root: Path, dataset: str = "mice") -> Path:
    """A centroid stage's artifacts folder with a small fake model in it."""
    stage = experiment_root / "topdown" / dataset / "centroid"
    model = stage / "model"
    (model / "viz").mkdir(parents=True)
    (model / "best.ckpt").write_bytes(bytes(range(256)) * 4)
    (model / "training_config.yaml").write_text("model_config: {}\n")
    (model / "viz" / "epoch1.png").write_bytes(b"\x89PNG fake")
    return stage


def verify_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(pipeline, ["manifest", "verify", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_manifests_parse(name: str, tmp_path: Path) -> None:
    dataset = name.split("_")[0]
    raw = Manifest.model_validate_json((EXAMPLES / name).read_text())
    assert raw.root == f"{EXPERIMENT_ROOT}/topdown/{dataset}/centroid"
    assert (raw.job, raw.dataset, raw.stage, raw.models) == (
        "topdown",
        dataset,
        "centroid",
        ["model"],
    )
    assert "model/best.ckpt" in {a.path for a in raw.artifacts}
    assert all(a.path.startswith("model/") for a in raw.artifacts)

    found, problems = read_manifest(EXAMPLES / name, "manifest", tmp_path)
    assert problems == [] and found is not None
    assert Path(found.root) == tmp_path.resolve() / "topdown" / dataset / "centroid"
    assert found.model_paths() == [Path(found.root) / "model"]


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_manifest_names_each_missing_file(name: str, tmp_path: Path) -> None:
    manifest = Manifest.model_validate_json((EXAMPLES / name).read_text())
    code, output = verify_cli(str(EXAMPLES / name), "--experiment-root", str(tmp_path))
    assert code == 2
    assert f"Manifest {EXAMPLES / name} does not check out" in " ".join(output.split())
    stage = tmp_path.resolve() / "topdown" / manifest.dataset / "centroid"
    flat = output.replace("\n", "")
    for artifact in manifest.artifacts:
        assert f"pinned file missing: {stage / artifact.path}" in flat
    assert f"model folder missing: {stage / 'model'}" in flat


def test_portable_root_only_under_the_experiment_root(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    assert portable_root(root / "topdown" / "mice" / "centroid", root) == (
        "{experiment_root}/topdown/mice/centroid"
    )
    assert portable_root(root, root) == EXPERIMENT_ROOT
    assert portable_root(tmp_path / "elsewhere", root) is None
    assert expand_root("{experiment_root}/a/b", root) == root.resolve() / "a" / "b"
    assert expand_root(EXPERIMENT_ROOT, root) == root.resolve()
    assert expand_root("/abs/stage", root) == Path("/abs/stage")


def test_write_keeps_absolute_root_by_default(tmp_path: Path) -> None:
    stage = fake_stage(tmp_path / "runs")
    path = write_manifest(stage, job="topdown", dataset="mice", stage="centroid", models=["model"])
    assert json.loads(path.read_text())["root"] == str(stage.resolve())


def test_portable_manifest_verifies_after_the_root_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "old" / "runs"
    stage = fake_stage(old)
    path = write_manifest(
        stage,
        job="topdown",
        dataset="mice",
        stage="centroid",
        models=["model"],
        portable=True,
        experiment_root=old,
    )
    data = json.loads(path.read_text())
    assert data["root"] == "{experiment_root}/topdown/mice/centroid"
    assert {a["path"] for a in data["artifacts"]} == {
        "model/best.ckpt",
        "model/training_config.yaml",
        "model/viz/epoch1.png",
    }

    new = tmp_path / "moved" / "runs"
    new.parent.mkdir()
    shutil.move(old, new)
    moved = new / "topdown" / "mice" / "centroid" / MANIFEST_NAME

    # From the environment, as a pipeline run sees it.
    monkeypatch.setenv(EXPERIMENT_ROOT_ENV, str(new))
    found, problems = verify_manifest(moved)
    assert problems == [] and found is not None
    assert found.model_paths() == [new.resolve() / "topdown" / "mice" / "centroid" / "model"]
    code, output = verify_cli(str(moved))
    assert code == 0 and "3 file(s) match" in output

    # From --experiment-root, which wins over the environment.
    monkeypatch.setenv(EXPERIMENT_ROOT_ENV, str(tmp_path / "old" / "runs"))
    assert verify_cli(str(moved))[0] == 2
    code, output = verify_cli(str(moved), "--experiment-root", str(new))
    assert code == 0, output

    # One byte of the model changed: refused, naming the file.
    ckpt = new / "topdown" / "mice" / "centroid" / "model" / "best.ckpt"
    payload = bytearray(ckpt.read_bytes())
    payload[100] ^= 0xFF
    ckpt.write_bytes(bytes(payload))
    code, output = verify_cli(str(moved), "--experiment-root", str(new))
    assert code == 2
    assert f"pinned file changed: {ckpt.resolve()} has sha256" in output.replace("\n", "")
    _, problems = verify_manifest(moved, experiment_root=new)
    assert [p.value for p in problems] == [str(ckpt.resolve())]


def test_portable_write_outside_the_experiment_root_stays_absolute(tmp_path: Path) -> None:
    stage = fake_stage(tmp_path / "elsewhere")
    path = write_manifest(
        stage,
        job="topdown",
        dataset="mice",
        stage="centroid",
        models=["model"],
        portable=True,
        experiment_root=tmp_path / "runs",
    )
    assert json.loads(path.read_text())["root"] == str(stage.resolve())


def test_cli_write_portable_uses_the_env_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "runs"
    stage = fake_stage(root, "flies")
    monkeypatch.setenv(EXPERIMENT_ROOT_ENV, str(root))
    args = ["manifest", "write", str(stage), "--job", "topdown", "--dataset", "flies"]
    result = CliRunner().invoke(pipeline, [*args, "--stage", "centroid", "--model", "model"])
    assert result.exit_code == 0, result.output
    assert json.loads((stage / MANIFEST_NAME).read_text())["root"] == str(stage.resolve())
    result = CliRunner().invoke(
        pipeline, [*args, "--stage", "centroid", "--model", "model", "--portable"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((stage / MANIFEST_NAME).read_text())["root"] == (
        "{experiment_root}/topdown/flies/centroid"
    )


@pytest.mark.parametrize(
    ("root", "placeholder"),
    [
        ("{experiment_root}/topdown/{dataset}/centroid", "{dataset}"),
        ("{run_root}/topdown/mice/centroid", "{run_root}"),
        ("/lab/{experiment_root}/mice", "{experiment_root}"),
    ],
)
def test_unknown_placeholder_in_root_is_refused(
    root: str, placeholder: str, tmp_path: Path
) -> None:
    stage = fake_stage(tmp_path / "runs")
    path = write_manifest(stage, job="topdown", dataset="mice", stage="centroid", models=["model"])
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "root": root}))

    found, problems = verify_manifest(path, "manifest", tmp_path / "runs")
    assert found is None and len(problems) == 1
    message = problems[0].message
    assert str(path) in message and "(root: " in message and placeholder in message

    code, output = verify_cli(str(path), "--experiment-root", str(tmp_path / "runs"))
    flat = output.replace("\n", "")
    assert code == 2 and "(root: unknown placeholder(s)" in flat and placeholder in flat


def test_cli_write_experiment_root_goes_with_portable(tmp_path: Path) -> None:
    stage = fake_stage(tmp_path / "elsewhere")
    args = ["manifest", "write", str(stage), "--job", "topdown", "--dataset", "mice"]
    args += ["--stage", "centroid", "--model", "model", "--experiment-root", str(tmp_path / "runs")]
    result = CliRunner().invoke(pipeline, args)
    assert result.exit_code == 2 and "--experiment-root goes with --portable" in result.output
    result = CliRunner().invoke(pipeline, [*args, "--portable"])
    assert result.exit_code == 0
    assert "the manifest keeps its absolute root" in result.output
    assert json.loads((stage / MANIFEST_NAME).read_text())["root"] == str(stage.resolve())
