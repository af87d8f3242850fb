"""Generated SBATCH scripts: resources, quoting, the experiment root, edits kept,
scripts kept current."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sleap_rtc import __version__
from sleap_rtc.jobs.problems import JobRejected
from sleap_rtc.pipeline.sbatch import Layout
from sleap_rtc.pipeline.scripts import generate
from sleap_rtc.pipeline.spec import load_job
from tests.configs import MODEL_CONFIG, STAGE_CONFIG
from tests.labels import write_labels


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "lab data"  # a space, as real folders have
    (root / "configs").mkdir(parents=True)
    for stage in ("centroid", "centered_instance"):
        (root / "configs" / f"{stage}.yaml").write_text(STAGE_CONFIG)
    write_labels(root / "mice.slp")
    (root / "datasets.json").write_text(json.dumps({"mice": {"labels": "mice.slp"}}))
    return root


JOB: dict[str, Any] = {
    "name": "topdown",
    "datasets": ["mice"],
    "training_types": ["centroid", "centered_instance", "track"],
    "configs": {
        "centroid": "configs/centroid.yaml",
        "centered_instance": "configs/centered_instance.yaml",
    },
    "extra_args": {"max_epochs": 3, "frames": "0-9"},
    "slurm": {"time": "00:20:00", "mem": "4G", "cpus": 2, "partition": "debug"},
    "stages": {"centroid": {"slurm": {"gpus": 1, "extra": ["--exclusive"]}}},
    "setup": ["module load cuda/12", "source /opt/venvs/sleap/bin/activate"],
}


def written(project: Path, job: dict[str, Any] = JOB) -> dict[str, str]:
    path = project / "job.json"
    path.write_text(json.dumps(job))
    layout = Layout.under(project / "run")
    out = generate(load_job(path), layout, sleap_rtc=["sleap-rtc"])
    return {w.stage.name: w.script.read_text() for w in out}


def heredoc(script: str, name: str) -> dict[str, Any]:
    """The JSON a stage script writes as ``$ARTIFACTS/{name}`` (a quoted here-document)."""
    opening = f"\"$ARTIFACTS\"/{name} <<'JSON'\n"
    start = script.index(opening) + len(opening)
    return json.loads(script[start : script.index("\nJSON\n", start)])


def spec_in(script: str) -> dict[str, Any]:
    """The spec a stage script writes for its job."""
    return heredoc(script, "spec.json")


def test_scripts_carry_resources_setup_and_commands(project: Path) -> None:
    scripts = written(project)
    centroid = scripts["centroid"]
    lines = centroid.splitlines()
    assert lines[0] == "#!/bin/bash"
    for line in (
        "#SBATCH --job-name=topdown/mice/centroid",
        "#SBATCH --partition=debug",
        "#SBATCH --time=00:20:00",
        "#SBATCH --mem=4G",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --gpus=1",
        "#SBATCH --exclusive",
        "set -euo pipefail",
    ):
        assert line in lines, line
    assert f"#SBATCH --output={project}/run/slurm_logs/topdown/mice/centroid-%j.out" in lines
    assert "#SBATCH --gpus=1" not in scripts["centered_instance"]
    # Set-up comes before the stage's command, so a failing set-up line fails the job.
    assert centroid.index("module load cuda/12") < centroid.index("local train")
    # The root is the one chosen now unless the environment says otherwise.
    root = project / "run" / "experiment_runs"
    assert f'export SLEAP_RTC_EXPERIMENT_ROOT="${{SLEAP_RTC_EXPERIMENT_ROOT:-{root}}}"' in lines
    assert 'ARTIFACTS="$SLEAP_RTC_EXPERIMENT_ROOT"/topdown/mice/centroid' in lines
    # The stage runs from its spec, which the script writes into its artifacts folder.
    assert '--spec "$ARTIFACTS"/spec.json' in centroid
    spec = spec_in(centroid)
    assert spec["kind"] == "train" and spec["run_name"] == "model"
    assert spec["config_paths"] == [str(project / "configs" / "centroid.yaml")]
    assert spec["labels_path"] == str(project / "mice.slp")
    assert spec["max_epochs"] == 3 and "frames" not in spec
    # Paths with spaces are quoted once, as the shell needs.
    assert f"--mount {shlex.quote(str(project) + ':m0')}" in centroid
    track = spec_in(scripts["track"])
    # Models of this run: relative to the artifacts folder, so they follow the root.
    assert track["model_paths"] == ["../centroid/model", "../centered_instance/model"]
    assert track["output_path"] == "predictions.slp" and track["frames"] == "0-9"
    assert track["overwrite"] is True


def test_every_script_is_valid_bash(project: Path) -> None:
    for script in written(project).values():
        check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_a_script_follows_its_job_file_and_its_meta_describes_it(project: Path) -> None:
    written(project)
    script = project / "run" / "slurm_jobs" / "topdown" / "mice" / "centroid.sbatch"
    meta_path = script.with_suffix(".meta.json")
    first = json.loads(meta_path.read_text())
    assert first["script_action"] == "written" and first["stage"] == "centroid"
    assert first["paths"]["labels"] == str(project / "mice.slp")
    assert first["spec"]["name"] == "topdown" and "written_at" in first
    assert first["sleap_rtc_version"] == __version__ and "command_line" in first
    assert "git_commit" in first and "git_dirty" in first
    # A training script writes its inputs beside the last run's first, to compare them.
    assert first["inputs"] == heredoc(script.read_text(), "inputs.json.next")

    # Written again by the same job file: nothing changes, the meta included.
    written(project)
    assert json.loads(meta_path.read_text()) == first
    # A changed job file reaches a script nobody edited; its meta follows.
    changed = {**JOB, "extra_args": {"max_epochs": 4, "frames": "0-9"}}
    again = written(project, changed)
    assert spec_in(again["centroid"])["max_epochs"] == 4
    second = json.loads(meta_path.read_text())
    assert second["script_action"] == "rewritten" and second["inputs_key"] != first["inputs_key"]


def test_an_edited_script_is_kept_until_the_job_file_would_write_another(project: Path) -> None:
    written(project)
    script = project / "run" / "slurm_jobs" / "topdown" / "mice" / "centroid.sbatch"
    meta_path = script.with_suffix(".meta.json")
    meta = meta_path.read_text()
    script.write_text(script.read_text().replace("--mem=4G", "--mem=8G"))
    # The job file writes what it wrote before: the edit stays, and so does the meta.
    assert "--mem=8G" in written(project)["centroid"]
    assert meta_path.read_text() == meta

    # Now it would write another script: a problem naming the script and the change,
    # and nothing is written (the edit stays, the other scripts too).
    track = project / "run" / "slurm_jobs" / "topdown" / "mice" / "track.sbatch"
    track_before = track.read_text()
    changed = {**JOB, "extra_args": {"max_epochs": 4, "frames": "0-9"}}
    with pytest.raises(JobRejected) as rejected:
        written(project, changed)
    [problem] = rejected.value.problems
    assert problem.field == "mice/centroid: script" and problem.value == str(script)
    assert "edited by hand" in problem.message and "max_epochs 3 → 4" in problem.message
    assert "--mem=8G" in script.read_text() and track.read_text() == track_before

    # Moved away, it is written anew from the job file.
    script.rename(script.with_suffix(".sbatch.mine"))
    assert "--mem=4G" in written(project, changed)["centroid"]


def test_a_lost_meta_file_is_written_again_for_a_script_as_written(project: Path) -> None:
    written(project)
    meta_path = project / "run" / "slurm_jobs" / "topdown" / "mice" / "centroid.meta.json"
    meta_path.unlink()
    written(project)
    again = json.loads(meta_path.read_text())
    assert again["script_action"] == "kept" and again["stage"] == "centroid"


def test_the_pipeline_object_generates_and_knows_no_jobs_yet(project: Path) -> None:
    from sleap_rtc.pipeline import PipelineRun

    path = project / "job.json"
    path.write_text(json.dumps(JOB))
    run = PipelineRun(path, output_dir=project / "run", experiment_root=project / "artifacts")
    scripts = run.generate()
    folder = project / "run" / "slurm_jobs" / "topdown" / "mice"
    assert scripts == [
        folder / "centroid.sbatch",
        folder / "centered_instance.sbatch",
        folder / "track.sbatch",
    ]
    assert f"SLEAP_RTC_EXPERIMENT_ROOT:-{project / 'artifacts'}" in scripts[0].read_text()
    assert run.job_ids() == [] and run.monitor() == {}


def test_training_stages_probe_for_their_batch_size_first(project: Path) -> None:
    job = {**JOB, "extra_args": {"max_epochs": 3, "batch_size": 8}}
    scripts = written(project, job)
    centroid = scripts["centroid"]
    config = shlex.quote(str(project / "configs" / "centroid.yaml"))
    labels = shlex.quote(str(project / "mice.slp"))
    probe = (
        "BATCH_SIZE=$(sleap-rtc pipeline tune-batch-size \\\n"
        f"    --config {config} \\\n"
        f"    --labels {labels} \\\n"
        "    --start 8)\n"
    )
    assert probe in centroid
    # A plain assignment on its own line: under set -e a failing probe fails the job.
    assert "\nBATCH_SIZE=$(" in centroid
    assert centroid.index("set -euo pipefail") < centroid.index("module load cuda/12")
    assert centroid.index("module load cuda/12") < centroid.index("BATCH_SIZE=$(")
    assert centroid.index("BATCH_SIZE=$(") < centroid.index("local train")
    train = centroid[centroid.index("local train") :]
    assert '--batch-size "$BATCH_SIZE"' in train and "--batch-size 8" not in train
    # The probed size replaces the spec's: the spec leaves it out.
    assert "batch_size" not in spec_in(centroid) and spec_in(centroid)["max_epochs"] == 3
    # Track keeps its own batch size and runs no probe.
    assert "tune-batch-size" not in scripts["track"]
    assert spec_in(scripts["track"])["batch_size"] == 8


def test_the_probe_names_validation_labels_and_starts_from_the_config(project: Path) -> None:
    write_labels(project / "val.slp")
    (project / "datasets.json").write_text(
        json.dumps({"mice": {"labels": "mice.slp", "val_labels": "val.slp"}})
    )
    centroid = written(project)["centroid"]
    probe = centroid[centroid.index("BATCH_SIZE=$(") : centroid.index("local train")]
    assert f"--val-labels {shlex.quote(str(project / 'val.slp'))})" in probe
    assert "--start" not in probe


def test_without_optimize_batch_size_the_script_is_as_before(project: Path) -> None:
    job = {**JOB, "extra_args": {"max_epochs": 3, "batch_size": 8}, "optimize_batch_size": False}
    for script in written(project, job).values():
        assert "tune-batch-size" not in script and "BATCH_SIZE" not in script
        assert spec_in(script)["batch_size"] == 8 and "--batch-size" not in script
    shutil.rmtree(project / "run")  # scripts that exist are kept: write them again
    plain = {**JOB, "optimize_batch_size": False}
    assert "batch_size" not in spec_in(written(project, plain)["centroid"])


def _fake_cli(folder: Path, probe: str) -> Path:
    """A stand-in for the sleap-rtc command: the probe does ``probe``; the rest log their args."""
    cli = folder / "fake-sleap-rtc"
    cli.write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> {shlex.quote(str(folder / "calls.log"))}\n'
        'if [ "$1 $2" = "pipeline tune-batch-size" ]; then\n'
        f"{probe}\n"
        "fi\n"
    )
    cli.chmod(0o755)
    return cli


@pytest.mark.parametrize(
    ("probe", "code"),
    [('echo "probing" >&2; echo 16', 0), ('echo "even 1 runs out of memory" >&2; exit 1', 1)],
)
def test_the_probe_s_answer_reaches_training_and_its_failure_fails_the_job(
    project: Path, tmp_path: Path, probe: str, code: int
) -> None:
    cli = _fake_cli(tmp_path, probe)
    path = project / "job.json"
    path.write_text(json.dumps({**JOB, "setup": []}))
    out = generate(load_job(path), Layout.under(project / "run"), sleap_rtc=[str(cli)])
    script = next(w.script for w in out if w.stage.name == "centroid")
    env = {"PATH": "/usr/bin:/bin", "SLEAP_RTC_EXPERIMENT_ROOT": str(tmp_path / "runs")}
    ran = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert ran.returncode == code, ran.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[0].startswith("pipeline tune-batch-size --config ")
    if code == 0:
        assert "--batch-size 16 " in calls[1] and calls[1].startswith("local train")
        assert calls[2].startswith("pipeline manifest write")
    else:
        assert len(calls) == 1  # nothing trained
        assert "even 1 runs out of memory" in ran.stderr


def test_track_uses_models_trained_here_and_a_pinned_model_of_another_stage(
    project: Path,
) -> None:
    from sleap_rtc.pipeline.manifest import write_manifest

    trained = project / "elsewhere" / "centroid"
    (trained / "model").mkdir(parents=True)
    (trained / "model" / "best.ckpt").write_bytes(b"weights")
    manifest = write_manifest(
        trained, job="old", dataset="mice", stage="centroid", models=["model"]
    )
    job = {
        **JOB,
        "training_types": ["centered_instance", "track"],
        "configs": {"centered_instance": "configs/centered_instance.yaml"},
        "dependency_manifests": {"track": str(manifest)},
        "stages": {},
    }
    track = written(project, job)["track"]
    models = spec_in(track)["model_paths"]
    assert models == ["../centered_instance/model", str(trained.resolve() / "model")], track


def test_a_stage_script_runs_its_spec_with_sleap_rtc_local(project: Path, tmp_path: Path) -> None:
    """The spec a script writes is one ``sleap-rtc local --spec`` accepts, paths and all."""
    import os
    import sys

    for stage in ("centroid", "centered_instance"):
        (project / "configs" / f"{stage}.yaml").write_text(
            "data_config: {}\n" + MODEL_CONFIG + "trainer_config: {}\n"
        )
    runs = tmp_path / "runs"
    cli = tmp_path / "sleap-rtc-dry-run"
    cli.write_text(
        "#!/bin/bash\n"
        f'[ "$1" = local ] && exec {shlex.quote(sys.executable)} -m sleap_rtc "$@" --dry-run\n'
        "exit 0\n"
    )
    cli.chmod(0o755)
    path = project / "job.json"
    path.write_text(json.dumps({**JOB, "setup": [], "optimize_batch_size": False}))
    out = generate(load_job(path), Layout.under(project / "run"), sleap_rtc=[str(cli)])
    env = {**os.environ, "SLEAP_RTC_EXPERIMENT_ROOT": str(runs)}
    for item in out:
        if item.stage.name == "track":  # what the training stages would have left
            for stage in ("centroid", "centered_instance"):
                model = runs / "topdown" / "mice" / stage / "model"
                model.mkdir(parents=True)
                (model / "training_config.yaml").write_text("a: 1\n")
                (model / "best.ckpt").write_bytes(b"w")
        ran = subprocess.run(["bash", str(item.script)], capture_output=True, text=True, env=env)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "job is valid" in ran.stdout
        if item.stage.name == "track":
            assert f"--model_paths {runs / 'topdown' / 'mice' / 'centroid' / 'model'}" in ran.stdout
            assert f"--output_path {runs / 'topdown' / 'mice' / 'track' / 'predictions.slp'}" in (
                ran.stdout
            )
        else:
            assert "max_epochs: 3" in ran.stdout and "run_name: model" in ran.stdout


def test_a_relative_experiment_root_means_the_same_folder_when_written_and_when_run(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative to the scripts' --chdir (the output folder) both times, not to wherever
    the command was typed: otherwise a rerun looks for outputs where none were written."""
    elsewhere = tmp_path / "typed here"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("SLEAP_RTC_EXPERIMENT_ROOT", "runs/exp")
    layout = Layout.under(project / "run")
    assert layout.experiment_root == (project / "run" / "runs" / "exp").resolve()


def test_a_setup_line_that_sets_the_root_moves_training_and_tracking_alike(
    project: Path,
) -> None:
    """The scripts run (with `echo` standing in for sleap-rtc, so each command shows
    the folders it is given): a root set by a set-up line holds for every path."""
    job = {**JOB, "setup": ["export SLEAP_RTC_EXPERIMENT_ROOT=moved"]}
    path = project / "job.json"
    path.write_text(json.dumps(job))
    layout = Layout.under(project / "run")
    scripts = {w.stage.name: w.script for w in generate(load_job(path), layout, sleap_rtc=["echo"])}

    def run(stage: str) -> str:
        done = subprocess.run(
            ["bash", str(scripts[stage])],
            capture_output=True,
            text=True,
            cwd=layout.scripts.parent,  # as sbatch's --chdir
            env={"PATH": "/usr/bin:/bin", "HOME": str(project)},
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    moved = (layout.scripts.parent / "moved").resolve()
    trained = run("centroid")
    assert f"--mount {moved}/topdown/mice/centroid:artifacts" in trained, trained
    tracked = run("track")
    assert f"--mount {moved}:experiments" in tracked, tracked
    assert (moved / "topdown" / "mice" / "track" / "spec.json").is_file()


def test_every_stage_is_checked_as_its_node_would_before_anything_is_written(
    project: Path,
) -> None:
    """Ranges, formats and the config's contents, all at once, named by dataset and
    stage: none of these may reach the queue to fail there."""
    from sleap_rtc.jobs.problems import JobRejected

    (project / "configs" / "centered_instance.yaml").write_text("model_config: {}\n")
    job = {
        **JOB,
        "extra_args": {"max_epochs": 100_000_000, "frames": "50-10,abc", "peak_threshold": 7.5},
    }
    with pytest.raises(JobRejected) as caught:
        written(project, job)
    fields = {p.field: p.message for p in caught.value.problems}
    assert "between 1 and 100000" in fields["mice/centroid: max_epochs"]
    assert "mice/centered_instance: config_path" in fields
    assert "mice/track: frames" in fields
    assert "mice/track: peak_threshold" in fields
    assert not (project / "run" / "slurm_jobs").exists() or not list(
        (project / "run" / "slurm_jobs").rglob("*.sbatch")
    )
