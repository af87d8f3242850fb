"""Generated SBATCH scripts: resources, quoting, the experiment root, edits kept."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sleap_rtc.pipeline.sbatch import Layout, generate
from sleap_rtc.pipeline.spec import load_job


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "lab data"  # a space, as real folders have
    (root / "configs").mkdir(parents=True)
    for stage in ("centroid", "centered_instance"):
        (root / "configs" / f"{stage}.yaml").write_text("model_config: {}\n")
    (root / "mice.slp").write_bytes(b"x")
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


def test_scripts_carry_resources_setup_and_commands(project: Path) -> None:
    scripts = written(project)
    centroid = scripts["centroid"]
    lines = centroid.splitlines()
    assert lines[0] == "#!/bin/bash"
    for line in (
        "#SBATCH --job-name=topdown_mice_centroid",
        "#SBATCH --partition=debug",
        "#SBATCH --time=00:20:00",
        "#SBATCH --mem=4G",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --gpus=1",
        "#SBATCH --exclusive",
        "set -euo pipefail",
    ):
        assert line in lines, line
    assert f"#SBATCH --output={project}/run/slurm_logs/topdown_mice_centroid-%j.out" in lines
    assert "#SBATCH --gpus=1" not in scripts["centered_instance"]
    # Set-up comes before the stage's command, so a failing set-up line fails the job.
    assert centroid.index("module load cuda/12") < centroid.index("local train")
    # The root is the one chosen now unless the environment says otherwise.
    root = project / "run" / "experiment_runs"
    assert f'export SLEAP_RTC_EXPERIMENT_ROOT="${{SLEAP_RTC_EXPERIMENT_ROOT:-{root}}}"' in lines
    assert 'ARTIFACTS="$SLEAP_RTC_EXPERIMENT_ROOT"/topdown/mice/centroid' in lines
    # Paths with spaces are quoted once, as the shell needs.
    assert f"--config {shlex.quote(str(project / 'configs' / 'centroid.yaml'))}" in centroid
    assert "--max-epochs 3" in centroid and "--frames" not in centroid
    track = scripts["track"]
    assert '--model-paths "$SLEAP_RTC_EXPERIMENT_ROOT"/topdown/mice/centroid/model' in track
    assert "/topdown/mice/centered_instance/model" in track and "--frames 0-9" in track


def test_every_script_is_valid_bash(project: Path) -> None:
    for script in written(project).values():
        check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_an_existing_script_is_kept_as_edited(project: Path) -> None:
    written(project)
    script = project / "run" / "slurm_jobs" / "topdown_mice_centroid.sbatch"
    script.write_text(script.read_text().replace("--mem=4G", "--mem=8G"))
    again = written(project)
    assert "--mem=8G" in again["centroid"]
    meta = json.loads(script.with_suffix(".meta.json").read_text())
    assert meta["script_kept"] is True and meta["stage"] == "centroid"
    assert meta["paths"]["labels"] == str(project / "mice.slp")
    assert meta["spec"]["name"] == "topdown" and "written_at" in meta


def test_the_pipeline_object_generates_and_knows_no_jobs_yet(project: Path) -> None:
    from sleap_rtc.pipeline import PipelineRun

    path = project / "job.json"
    path.write_text(json.dumps(JOB))
    run = PipelineRun(path, output_dir=project / "run", experiment_root=project / "artifacts")
    scripts = run.generate()
    assert [s.name for s in scripts] == [
        "topdown_mice_centroid.sbatch",
        "topdown_mice_centered_instance.sbatch",
        "topdown_mice_track.sbatch",
    ]
    assert f"SLEAP_RTC_EXPERIMENT_ROOT:-{project / 'artifacts'}" in scripts[0].read_text()
    assert run.job_ids() == [] and run.monitor() == {}
