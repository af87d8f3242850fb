"""Track over several files as one array job on a real SLURM: per-task status, a
rerun that submits only the task whose file changed, and chunking under a small
MaxArraySize.

The tracking itself is a stand-in here (the task copies its file as predictions,
then writes the manifest as generated), so these take seconds; real sleap-nn
tracks a 3-file array in ``tests/e2e/test_pipeline_slurm.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sleap_rtc.engine.backends.slurm.tools import FINAL_STATES, SlurmClient
from sleap_rtc.pipeline.run import PipelineRun
from tests.labels import write_labels
from tests.unit.test_pipeline_arrays import FILES, POST, array_lab

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("slurm")]
FOLDERS = ("a_s1", "s2", "b_s1")


class SmallArrays(SlurmClient):
    """This machine's SLURM, as if its MaxArraySize were 2."""

    def max_array_size(self) -> int:
        return 2


def stand_in(script: Path, fail: int | None = None) -> None:
    """The generated script, with the `local track` line of its loop copying the file
    (or, for file ``fail``, failing)."""
    lines = script.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "local track" in line)
    end = next(i for i in range(start, len(lines)) if not lines[i].endswith("\\"))
    lines[start : end + 1] = [
        *([f'    if [ "$i" = {fail} ]; then exit 3; fi'] if fail is not None else []),
        '    sleep 2; cp "${FILES[$i]}" "$OUT"/predictions.slp',
    ]
    script.write_text("\n".join(lines) + "\n")


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.job = root / "job.json"
        self.script = root / "slurm_jobs" / "arr" / "mice" / "track.sbatch"
        self.track = root / "experiment_runs" / "arr" / "mice" / "track"
        self.jobs: list[str] = []

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(sys.executable, "-m", "sleap_rtc", "pipeline", *args),
                *("--job", str(self.job), "--output-dir", str(self.root)),
            ],
            capture_output=True,
            text=True,
            cwd=self.root,
            timeout=300,
        )

    def generate(self, fail: int | None = None, **run: Any) -> None:
        """The script as written for the files now, with the stand-in."""
        self.script.unlink(missing_ok=True)
        PipelineRun(self.job, output_dir=self.root, **run).generate()
        stand_in(self.script, fail)

    def submit(self, *extra: str) -> dict[str, Any]:
        result = self.cli("run", "--submit", "--json", *extra)
        assert result.returncode == 0, result.stderr
        runs = json.loads(result.stdout)
        self.jobs += [str(r["job_id"]) for r in runs if r["job_id"]]
        return {r["stage"]: r for r in runs} if len(runs) > 1 else dict(runs[0])

    def statuses(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        return {s["stage"]: s for s in json.loads(result.stdout)}

    def settle(self, timeout: float = 120) -> dict[str, Any]:
        """The status once every stage ended: track's alone when it is the only one."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.statuses()
            if all(s["state"] in FINAL_STATES for s in shown.values()):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        return shown["track"] if len(shown) == 1 else shown


def sacct_tasks(job_id: str, timeout: float = 30) -> dict[str, tuple[str, str]]:
    """Each task of an array job: its state and the line it was submitted with, once
    accounting lists its tasks (for a moment after an array ends it may list the array
    alone)."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "JobID,State,SubmitLine", "-j", job_id],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        rows = [line.split("|", 2) for line in out.splitlines()]
        if (rows and all("_" in row[0] for row in rows)) or time.monotonic() > deadline:
            return {row[0]: (row[1], row[2]) for row in rows}
        time.sleep(0.5)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    array_lab(tmp_path)
    job = {
        "name": "arr",
        "datasets": ["mice"],
        "training_types": ["track"],
        "dependency_manifests": {"track": "pinned/manifest.json"},
        "array_parallelism": 2,
        "slurm": {"time": "00:05:00", "mem": "100M", "cpus": 1},
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    made = Project(tmp_path)
    yield made
    if made.jobs:  # failed or not, nothing of this test left queued
        subprocess.run(["scancel", *made.jobs], capture_output=True, timeout=30)


def test_an_array_reports_each_task_and_a_rerun_redoes_only_the_changed_file(
    project: Project,
) -> None:
    project.generate()
    first = project.submit()
    shown = project.settle()
    assert shown["state"] == "COMPLETED", shown
    assert shown["tasks"] == {"0": "COMPLETED", "1": "COMPLETED", "2": "COMPLETED"}
    assert shown["reason"] == "tasks: 3 COMPLETED"
    job_id = str(first["job_id"])
    assert set(sacct_tasks(job_id)) == {f"{job_id}_{n}" for n in range(3)}
    for index, folder in enumerate(FOLDERS):
        manifest = json.loads((project.track / folder / "manifest.json").read_text())
        assert manifest["slurm_job_id"] == f"{job_id}_{index}"
        assert (project.track / folder / "predictions.slp").read_bytes() == (
            project.root / FILES[index]
        ).read_bytes()
    again = project.cli("run", "--dry-run")
    assert "skip   its outputs are current (3 files)" in again.stdout

    # One file changes: only its task runs, in a new array job of one task.
    write_labels(project.root / FILES[2], frames=14)
    edited = project.cli("run", "--dry-run")  # the stand-in is an edit the change can't keep
    assert edited.returncode == 2 and "was edited by hand" in edited.stderr
    project.script.unlink()
    planned = project.cli("run", "--dry-run")
    assert "run    1 of 3 files: s1.slp: data changed (s1.slp)" in planned.stdout
    project.generate()
    rerun = project.submit()
    assert project.settle()["state"] == "COMPLETED"
    rerun_id = str(rerun["job_id"])
    ((task, (state, line)),) = sacct_tasks(rerun_id).items()
    assert (task, state) == (f"{rerun_id}_2", "COMPLETED") and "--array=2%2" in line
    manifest = json.loads((project.track / "b_s1" / "manifest.json").read_text())
    assert manifest["slurm_job_id"] == f"{rerun_id}_2"
    untouched = json.loads((project.track / "a_s1" / "manifest.json").read_text())
    assert untouched["slurm_job_id"] == f"{job_id}_0"


def test_more_files_than_max_array_size_share_tasks(project: Project) -> None:
    project.generate(slurm=SmallArrays())
    assert "#SBATCH --array=0-1%2" in project.script.read_text()
    run = PipelineRun(project.job, output_dir=project.root, slurm=SmallArrays())
    (submitted,) = run.submit()
    project.jobs.append(str(submitted.job_id))
    shown = project.settle()
    assert shown["state"] == "COMPLETED" and set(shown["tasks"]) == {"0", "1"}, shown
    made_by = [
        json.loads((project.track / folder / "manifest.json").read_text())["slurm_job_id"]
        for folder in FOLDERS
    ]
    job_id = submitted.job_id
    assert made_by == [f"{job_id}_0", f"{job_id}_0", f"{job_id}_1"]  # two files, then one


def test_a_stage_after_track_with_aftercorr_goes_on_for_the_files_that_tracked(
    project: Project,
) -> None:
    job = json.loads(project.job.read_text())
    job["stages"] = {"post": POST}  # wc -c of its file's predictions, task by task
    project.job.write_text(json.dumps(job))
    project.generate(fail=1)  # the second file fails to track
    runs = project.submit("--chain")
    assert runs["post"]["after"] == [str(runs["track"]["job_id"])]
    shown = project.settle()
    assert shown["track"]["state"] == "FAILED"
    assert shown["track"]["tasks"] == {"0": "COMPLETED", "1": "FAILED", "2": "COMPLETED"}
    assert "exit code 3" in shown["track"]["reason"]
    # Task by task: the files that tracked went on; the one that didn't was cancelled.
    post = shown["post"]
    assert post["tasks"] == {"0": "COMPLETED", "1": "CANCELLED", "2": "COMPLETED"}, post
    folders = project.root / "experiment_runs" / "arr" / "mice" / "post"
    sizes = {f.parent.name for f in folders.glob("*/size.txt")}
    assert sizes == {FOLDERS[0], FOLDERS[2]}
    for index in (0, 2):
        size = int((folders / FOLDERS[index] / "size.txt").read_text())
        assert size == (project.root / FILES[index]).stat().st_size


def test_the_poll_driver_follows_an_array_and_its_file_by_file_stage(project: Project) -> None:
    job = json.loads(project.job.read_text())
    job["stages"] = {"post": POST}  # wc -c of its file's predictions, task by task
    project.job.write_text(json.dumps(job))
    project.generate()
    driven = project.cli("run", "--submit", "--chain=poll", "--poll-interval", "0.5", "--json")
    assert driven.returncode == 0, driven.stderr
    found = {r["stage"]: r for r in json.loads(driven.stdout)}
    project.jobs += [str(r["job_id"]) for r in found.values() if r["job_id"]]
    assert {r["state"] for r in found.values()} == {"COMPLETED"}, found
    # The driver waited for the whole array, then submitted the next without a dependency.
    track, post = (
        sacct_tasks(str(found["track"]["job_id"])),
        sacct_tasks(str(found["post"]["job_id"])),
    )
    assert len(track) == len(post) == 3
    assert all("--dependency" not in line for _, line in post.values())
    shown = project.statuses()
    assert shown["post"]["reason"] == "tasks: 3 COMPLETED"
    folders = project.root / "experiment_runs" / "arr" / "mice" / "post"
    assert {f.parent.name for f in folders.glob("*/size.txt")} == set(FOLDERS)
