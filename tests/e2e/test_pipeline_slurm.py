"""Generated scripts on a real SLURM: accepted by sbatch, and a stage trains for real."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sleap_rtc.demo.data import make_demo_data
from sleap_rtc.pipeline.sbatch import Layout
from sleap_rtc.pipeline.scripts import generate
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
    log = next(logs.rglob(f"*-{job_id}.out"))
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
    script = tmp_path / "slurm_jobs" / "single" / "mice" / "single_instance.sbatch"
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

    # A second job tracks three files with the pinned model, from another run folder:
    # one array job, at most two tasks at once, each file into its own folder.
    labels = jobs / "data" / "mice" / "demo.pkg.slp"
    for name in ("a/s1.slp", "a/s2.slp", "b/s1.slp"):
        (tmp_path / "videos" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(labels, tmp_path / "videos" / name)
    registry = {"mice": {"labels": str(labels), "track": ["videos/*/*.slp"]}}
    (tmp_path / "videos.json").write_text(json.dumps(registry))
    track_job = {
        "name": "tracked",
        "datasets": ["mice"],
        "datasets_registry": "videos.json",
        "training_types": ["track"],
        "dependency_manifests": {"track": str(stage_dir / "manifest.json")},
        "extra_args": {"frames": "0-9"},
        "array_parallelism": 2,
        "slurm": {"time": "00:10:00", "cpus": 1},
    }
    job_file = tmp_path / "track.json"
    job_file.write_text(json.dumps(track_job))
    out = tmp_path / "second"
    (item,) = generate(load_job(job_file), Layout.under(out))
    assert str(stage_dir / "model") in item.script.read_text()
    assert "#SBATCH --array=0-2%2" in item.script.read_text()
    array = submit(item.script)
    tasks = wait_states([f"{array}_{n}" for n in range(3)], FINISHED, timeout=300)
    logs = sorted((out / "slurm_logs").rglob(f"track-{array}_*.out"))
    assert set(tasks.values()) == {"COMPLETED"}, "\n".join(log.read_text()[-2000:] for log in logs)
    assert len(logs) == 3
    folders = out / "experiment_runs" / "tracked" / "mice" / "track"
    for name in ("a_s1", "s2", "b_s1"):
        assert (folders / name / "predictions.slp").is_file()
        manifest = json.loads((folders / name / "manifest.json").read_text())
        assert manifest["inputs"]["files"]["data"]["path"].endswith(".slp")
    assert most_at_once(array) <= 2

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


def most_at_once(array: str) -> int:
    """The most tasks of an array job that ran at the same time, by sacct's times."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,Start,End", "-j", array],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spans = [line.split("|")[1:3] for line in out.splitlines() if "_" in line.split("|")[0]]
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


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
    broken = out / "slurm_jobs" / "topdown" / "flies" / "centroid.sbatch"
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


def test_status_of_jobs_slurm_forgot_is_lost_with_why_and_watch_ends(
    jobs: Path, tmp_path: Path
) -> None:
    """Without accounting, squeue forgets a finished job after MinJobAge: its stage is
    LOST (final, with the reason), not UNKNOWN forever, and `status --watch` ends."""
    import time

    job = str(jobs / "topdown.json")
    out = tmp_path
    generated = cli(
        "pipeline", "run", "--job", job, "--generate-only", "--output-dir", str(out), cwd=out
    )
    assert generated.returncode == 0, generated.stderr
    folder = out / "slurm_jobs" / "topdown"
    keys = [str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.sbatch")]
    long_ago = time.time() - 3600
    record = {
        key: {"job_id": str(99999900 + i), "submitted_at": long_ago, "after": []}
        for i, key in enumerate(sorted(keys))
    }
    (folder / "runs.json").write_text(json.dumps(record))
    args = ["pipeline", "status", "--job", job, "--output-dir", str(out)]
    shown = cli(*args, "--json", cwd=out)
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    assert {s["state"] for s in found} == {"LOST"}
    assert all("SLURM no longer knows job" in s["reason"] for s in found)
    watched = subprocess.run(
        [sys.executable, "-m", "sleap_rtc", *args, "--watch", "--interval", "1"],
        capture_output=True,
        text=True,
        cwd=out,
        timeout=60,
    )
    assert watched.returncode == 0, watched.stderr
    assert "LOST" in watched.stdout


def test_nothing_is_submitted_when_a_later_stage_would_be_refused(
    jobs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All or nothing: a bad gres on track is found by `sbatch --test-only` before the
    training stages are queued; an sbatch that fails midway cancels what it queued."""
    import os

    spec = json.loads((jobs / "topdown.json").read_text())
    spec["stages"] = {**spec.get("stages", {}), "track": {"slurm": {"gres": "nosuchthing:1"}}}
    bad = jobs / "topdown-badgres.json"
    bad.write_text(json.dumps({**spec, "name": "badgres"}))
    args = ["pipeline", "run", "--job", str(bad), "--submit", "--chain", "--output-dir"]
    refused = cli(*args, str(tmp_path), cwd=tmp_path)
    assert refused.returncode != 0
    assert "nothing was submitted" in refused.stderr, refused.stderr
    said = refused.stderr.replace("\n", "")
    assert "badgres/mice/track.sbatch" in said and "badgres/flies/track.sbatch" in said
    record = tmp_path / "slurm_jobs" / "badgres" / "runs.json"
    assert not record.exists() or json.loads(record.read_text()) == {}

    # sbatch that fails on its third submission (test-only calls pass through).
    real = shutil.which("sbatch")
    shims = tmp_path / "bin"
    shims.mkdir()
    count = tmp_path / "count"
    (shims / "sbatch").write_text(
        "#!/bin/sh\n"
        f'case "$*" in *--test-only*) exec {real} "$@";; esac\n'
        f"echo x >> {count}\n"
        f'if [ "$(wc -l < {count})" -ge 3 ]; then\n'
        '  echo "sbatch: error: Batch job submission failed" >&2; exit 1\n'
        "fi\n"
        f'exec {real} "$@"\n'
    )
    (shims / "sbatch").chmod(0o755)
    env_path = f"{shims}:{os.environ['PATH']}"
    out = tmp_path / "midway"
    out.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sleap_rtc",
            "pipeline",
            "run",
            "--job",
            str(jobs / "topdown.json"),
            "--submit",
            "--chain",
            "--output-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=out,
        env={**os.environ, "PATH": env_path},
    )
    assert result.returncode != 0
    assert "cancelled the 2 job(s) it had submitted" in result.stderr, result.stderr
    recorded = json.loads((out / "slurm_jobs" / "topdown" / "runs.json").read_text())
    assert recorded == {}
