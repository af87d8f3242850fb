"""Generated scripts on a real SLURM: accepted by sbatch, and a stage trains for real."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sleap_rtc.demo.data import make_demo_data
from sleap_rtc.pipeline.sbatch import Layout, generate
from sleap_rtc.pipeline.spec import load_job
from tests.slurm import wait_states

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("slurm")]
EXAMPLES = Path(__file__).parents[2] / "examples" / "jobs"
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example job files with their demo data in place."""
    copy = tmp_path_factory.mktemp("pipeline") / "jobs"
    shutil.copytree(EXAMPLES, copy, ignore=shutil.ignore_patterns("data"))
    for dataset in ("mice", "flies"):
        make_demo_data(copy / "data" / dataset)
    return copy


def test_generated_scripts_pass_sbatch_test_only(jobs: Path, tmp_path: Path) -> None:
    out = generate(load_job(jobs / "topdown.json"), Layout.under(tmp_path))
    assert len(out) == 6  # 2 datasets x (centroid, centered_instance, track)
    for item in out:
        check = subprocess.run(
            ["sbatch", "--test-only", str(item.script)], capture_output=True, text=True
        )
        assert check.returncode == 0 and "to start at" in check.stderr, check.stderr


def test_a_generated_training_stage_runs_to_a_model(jobs: Path, tmp_path: Path) -> None:
    (item,) = generate(load_job(jobs / "single_instance.json"), Layout.under(tmp_path))
    job_id = subprocess.run(
        ["sbatch", "--parsable", str(item.script)], capture_output=True, text=True, check=True
    ).stdout.strip()
    state = wait_states([job_id], FINISHED, timeout=300)[job_id]
    log = next((tmp_path / "slurm_logs").glob(f"*-{job_id}.out"))
    assert state == "COMPLETED", log.read_text()[-3000:]
    model = tmp_path / "experiment_runs" / "single" / "mice" / "single_instance" / "model"
    assert (model / "best.ckpt").is_file(), log.read_text()[-3000:]
