"""Generated scripts on a real SLURM: accepted by sbatch, and a stage trains for real."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
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


def submit(script: Path) -> str:
    return subprocess.run(
        ["sbatch", "--parsable", str(script)], capture_output=True, text=True, check=True
    ).stdout.strip()


def finished(job_id: str, logs: Path) -> str:
    state = wait_states([job_id], FINISHED, timeout=300)[job_id]
    log = next(logs.glob(f"*-{job_id}.out"))
    assert state == "COMPLETED", log.read_text()[-3000:]
    return log.read_text()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sleap_rtc", *args], capture_output=True, text=True, cwd=cwd
    )


def test_a_stage_trains_pins_its_model_and_a_later_run_tracks_with_it(
    jobs: Path, tmp_path: Path
) -> None:
    # Train through the CLI's generated script, on SLURM.
    generated = cli(
        "pipeline",
        "run",
        "--job",
        str(jobs / "single_instance.json"),
        "--generate-only",
        "--output-dir",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert generated.returncode == 0, generated.stderr
    script = tmp_path / "slurm_jobs" / "single_mice_single_instance.sbatch"
    assert f"{script}  written" in generated.stdout
    job_id = submit(script)
    finished(job_id, tmp_path / "slurm_logs")
    stage_dir = tmp_path / "experiment_runs" / "single" / "mice" / "single_instance"
    assert (stage_dir / "model" / "best.ckpt").is_file()
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    assert manifest["slurm_job_id"] == job_id and manifest["models"] == ["model"]
    assert "model/best.ckpt" in {a["path"] for a in manifest["artifacts"]}
    verified = cli("pipeline", "manifest", "verify", str(stage_dir / "manifest.json"), cwd=tmp_path)
    assert verified.returncode == 0 and "match" in verified.stdout

    # A second job tracks with the pinned model, from another run folder.
    track_job = {
        "name": "tracked",
        "datasets": ["mice"],
        "datasets_registry": str(jobs / "datasets.json"),
        "training_types": ["track"],
        "dependency_manifests": {"track": str(stage_dir / "manifest.json")},
        "extra_args": {"frames": "0-9"},
        "slurm": {"time": "00:10:00", "cpus": 1},
    }
    job_file = tmp_path / "track.json"
    job_file.write_text(json.dumps(track_job))
    out = tmp_path / "second"
    (item,) = generate(load_job(job_file), Layout.under(out))
    assert str(stage_dir / "model") in item.script.read_text()
    finished(submit(item.script), out / "slurm_logs")
    assert (out / "experiment_runs" / "tracked" / "mice" / "track" / "predictions.slp").is_file()

    # A tampered artifact is refused, naming the file.
    config = stage_dir / "model" / "training_config.yaml"
    config.write_text(config.read_text() + "# edited\n")
    refused = cli(
        "pipeline",
        "run",
        "--job",
        str(job_file),
        "--generate-only",
        "--output-dir",
        str(tmp_path / "third"),
        cwd=tmp_path,
    )
    assert refused.returncode == 2
    assert f"pinned file changed: {config}" in refused.stderr.replace("\n", "")
    assert not (tmp_path / "third" / "slurm_jobs").exists()


def states(jobs: Path, out: Path) -> dict[tuple[str, str], str]:
    result = cli(
        "pipeline",
        "status",
        "--job",
        str(jobs / "topdown.json"),
        "--output-dir",
        str(out),
        "--json",
        cwd=out,
    )
    assert result.returncode == 0, result.stderr
    return {(s["dataset"], s["stage"]): s["state"] for s in json.loads(result.stdout)}


def settle(jobs: Path, out: Path, timeout: float = 600) -> dict[tuple[str, str], str]:
    import time

    from sleap_rtc.engine.backends.slurm.tools import FINAL_STATES

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = states(jobs, out)
        if all(s in FINAL_STATES or s in ("DONE", "NOT SUBMITTED") for s in found.values()):
            return found
        time.sleep(2)
    raise AssertionError(f"pipeline still running after {timeout} s: {found}")


def test_a_chained_topdown_run_cancels_what_a_failure_blocks_and_reruns_the_rest(
    jobs: Path, tmp_path: Path
) -> None:
    job = str(jobs / "topdown.json")
    out = tmp_path
    generated = cli(
        "pipeline", "run", "--job", job, "--generate-only", "--output-dir", str(out), cwd=out
    )
    assert generated.returncode == 0, generated.stderr
    # An edited script is submitted as edited: this one fails at once.
    broken = out / "slurm_jobs" / "topdown_flies_centroid.sbatch"
    original = broken.read_text()
    broken.write_text(original.replace("set -euo pipefail", "set -euo pipefail\nexit 7", 1))

    first = cli(
        "pipeline",
        "run",
        "--job",
        job,
        "--submit",
        "--chain",
        "--output-dir",
        str(out),
        "--json",
        cwd=out,
    )
    assert first.returncode == 0, first.stderr
    runs = {(r["dataset"], r["stage"]): r for r in json.loads(first.stdout)}
    assert all(r["action"] == "submitted" for r in runs.values())
    track = runs[("mice", "track")]
    assert sorted(track["after"]) == sorted(
        [runs[("mice", "centroid")]["job_id"], runs[("mice", "centered_instance")]["job_id"]]
    )
    found = settle(jobs, out)
    assert found == {
        ("flies", "centroid"): "FAILED",
        ("flies", "centered_instance"): "COMPLETED",
        ("flies", "track"): "CANCELLED",  # not left pending forever
        ("mice", "centroid"): "COMPLETED",
        ("mice", "centered_instance"): "COMPLETED",
        ("mice", "track"): "COMPLETED",
    }
    predictions = out / "experiment_runs" / "topdown" / "mice" / "track" / "predictions.slp"
    assert predictions.is_file()
    for stage in ("centroid", "centered_instance"):
        manifest = out / "experiment_runs" / "topdown" / "mice" / stage / "manifest.json"
        verified = cli("pipeline", "manifest", "verify", str(manifest), cwd=out)
        assert verified.returncode == 0, verified.stderr

    # Fixed and run again: only what has no valid output is submitted.
    broken.write_text(original)
    second = cli(
        "pipeline",
        "run",
        "--job",
        job,
        "--submit",
        "--chain",
        "--output-dir",
        str(out),
        "--json",
        cwd=out,
    )
    assert second.returncode == 0, second.stderr
    actions = {(r["dataset"], r["stage"]): r["action"] for r in json.loads(second.stdout)}
    assert actions == {
        ("flies", "centroid"): "submitted",
        ("flies", "centered_instance"): "done",
        ("flies", "track"): "submitted",
        ("mice", "centroid"): "done",
        ("mice", "centered_instance"): "done",
        ("mice", "track"): "done",
    }
    found = settle(jobs, out)
    assert found[("flies", "centroid")] == "COMPLETED" and found[("flies", "track")] == "COMPLETED"
