"""A DAG of command stages on a real SLURM: fan-out per dataset, fan-in with afterany,
cleanup with afternotok, and reruns of exactly what a changed input reaches.

Command stages run the job file's own shell lines, so these pipelines take seconds;
the training stages use the same planner and scripts (tests/e2e/test_pipeline_slurm.py
trains for real).
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

from sleap_rtc.engine.backends.slurm.tools import FINAL_STATES
from tests.labels import write_labels
from tests.slurm import sacct_states

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("slurm")]

JOB: dict[str, Any] = {
    "name": "dag",
    "datasets": ["mice", "flies"],
    "slurm": {"time": "00:05:00", "mem": "100M", "cpus": 1},
    "stages": {
        # Per dataset; fails for flies while the job file's folder holds a "fail" file.
        "count": {
            "command": [
                'if [ "$SLEAP_RTC_DATASET" = flies ] && [ -e "$SLEAP_RTC_JOB_DIR/fail" ]; then '
                "exit 3; fi",
                'stat -c %s "$SLEAP_RTC_LABELS" > count.txt',
            ],
            "outputs": ["count.txt"],
        },
        "summary": {
            "command": 'cat "$SLEAP_RTC_EXPERIMENT/$SLEAP_RTC_DATASET/count/count.txt" > sum.txt',
            "needs": ["count"],
            "outputs": ["sum.txt"],
        },
        # Once, after every dataset's summary however it ended.
        "report": {
            "command": 'ls "$SLEAP_RTC_EXPERIMENT"/*/summary/sum.txt | wc -l > report.txt',
            "scope": "pipeline",
            "needs": ["summary"],
            "dependency": "afterany",
            "outputs": ["report.txt"],
        },
        # Once, only when a count failed.
        "cleanup": {
            "command": "echo cleaned > cleaned.txt",
            "scope": "pipeline",
            "needs": ["count"],
            "dependency": "afternotok",
        },
    },
}


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.job = root / "job.json"
        self.artifacts = root / "experiment_runs" / "dag"

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

    def submit(self) -> dict[str, dict[str, Any]]:
        done = self.cli("run", "--submit", "--chain", "--json")
        assert done.returncode == 0, done.stderr
        return {f"{r['dataset']}/{r['stage']}": r for r in json.loads(done.stdout)}

    def plan(self) -> dict[str, tuple[str, str]]:
        done = self.cli("run", "--dry-run", "--json")
        assert done.returncode == 0, done.stderr
        return {
            f"{s['dataset']}/{s['stage']}": (s["action"], s["reason"])
            for s in json.loads(done.stdout)
        }

    def settle(self, timeout: float = 120) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.cli("status", "--json")
            assert done.returncode == 0, done.stderr
            found = {f"{s['dataset']}/{s['stage']}": s for s in json.loads(done.stdout)}
            if all(s["state"] in FINAL_STATES | {"DONE"} for s in found.values()):
                return found
            time.sleep(1)
        raise AssertionError(f"still running after {timeout} s: {found}")

    def record(self) -> dict[str, dict[str, Any]]:
        return json.loads((self.root / "slurm_jobs" / "dag" / "runs.json").read_text())


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    for name in ("mice", "flies"):
        write_labels(tmp_path / f"{name}.slp", frames=3)
    registry = {name: {"labels": f"{name}.slp"} for name in ("mice", "flies")}
    (tmp_path / "datasets.json").write_text(json.dumps(registry))
    job = json.loads(json.dumps(JOB))
    job["setup"] = [f"export SLEAP_RTC_JOB_DIR={tmp_path}"]
    (tmp_path / "job.json").write_text(json.dumps(job))
    made = Project(tmp_path)
    yield made
    try:
        ids = [str(e["job_id"]) for e in made.record().values() if e.get("job_id")]
    except FileNotFoundError:
        return
    if ids:  # failed or not, nothing of this test left queued
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def test_fan_in_afterany_and_afternotok_with_slurm_dependencies(project: Project) -> None:
    (project.root / "fail").touch()
    runs = project.submit()
    assert [key for key in runs][-2:] == ["_pipeline/report", "_pipeline/cleanup"]
    report = runs["_pipeline/report"]
    assert sorted(report["after"]) == sorted(
        [runs["mice/summary"]["job_id"], runs["flies/summary"]["job_id"]]
    )
    found = project.settle()
    states = {key: s["state"] for key, s in found.items()}
    assert states == {
        "mice/count": "COMPLETED",
        "mice/summary": "COMPLETED",
        "flies/count": "FAILED",
        "flies/summary": "CANCELLED",  # afterok on a failure: cancelled, not pending forever
        "_pipeline/report": "COMPLETED",  # afterany: it ran all the same
        "_pipeline/cleanup": "COMPLETED",  # afternotok: a count failed
    }
    # Honest status: why each ended so, and where its log is.
    assert found["flies/count"]["reason"] == "exit code 3"
    assert "dependency never satisfied" in found["flies/summary"]["reason"], found
    log = Path(found["flies/count"]["log"])
    assert (
        log
        == project.root
        / "slurm_logs"
        / "dag"
        / "flies"
        / f"count-{runs['flies/count']['job_id']}.out"
    )
    assert log.is_file()
    assert (project.artifacts / "_pipeline" / "report" / "report.txt").read_text().strip() == "1"
    assert (project.artifacts / "_pipeline" / "cleanup" / "cleaned.txt").is_file()
    manifest = json.loads(
        (project.artifacts / "_pipeline" / "report" / "manifest.json").read_text()
    )
    assert [a["path"] for a in manifest["artifacts"]] == ["report.txt"]
    assert len(manifest["inputs_key"]) == 64


def test_a_changed_input_reruns_its_stage_and_what_needs_it_nothing_else(
    project: Project,
) -> None:
    first = project.submit()
    found = project.settle()
    states = {key: s["state"] for key, s in found.items()}
    assert states.pop("_pipeline/cleanup") == "CANCELLED"  # nothing failed: never needed
    assert "dependency never satisfied" in found["_pipeline/cleanup"]["reason"]
    assert set(states.values()) == {"COMPLETED"}, found
    assert (project.artifacts / "_pipeline" / "report" / "report.txt").read_text().strip() == "2"

    # Nothing changed: the plan runs nothing, and says why.
    plan = project.plan()
    assert {action for action, _ in plan.values()} == {"skip"}, plan
    assert plan["mice/count"][1].startswith("its outputs are current (made by job ")

    # New labels for mice: its count reruns, then its summary and the report; flies
    # stays, and the cleanup reruns only as a dependent of the count that reruns.
    write_labels(project.root / "mice.slp", frames=5)
    plan = project.plan()
    assert plan["mice/count"] == ("run", "labels changed (mice.slp)")
    assert plan["mice/summary"] == ("run", "it needs mice/count, which runs")
    assert plan["_pipeline/report"] == ("run", "it needs mice/summary, which runs")
    assert plan["flies/count"][0] == plan["flies/summary"][0] == "skip"
    second = project.submit()
    assert {k for k, r in second.items() if r["action"] == "submitted"} == {
        "mice/count",
        "mice/summary",
        "_pipeline/report",
        "_pipeline/cleanup",
    }
    found = project.settle()
    assert found["mice/summary"]["state"] == found["_pipeline/report"]["state"] == "COMPLETED"
    # sacct holds new jobs for what reran; flies' stages kept their first jobs.
    reran = [str(second[k]["job_id"]) for k in ("mice/count", "mice/summary", "_pipeline/report")]
    assert set(sacct_states(reran).values()) == {"COMPLETED"}
    for key in ("mice/count", "mice/summary", "_pipeline/report"):
        assert second[key]["job_id"] != first[key]["job_id"]
    assert project.record()["flies/count"]["job_id"] == first["flies/count"]["job_id"]
    count = (project.artifacts / "mice" / "count" / "count.txt").read_text().strip()
    assert count == str((project.root / "mice.slp").stat().st_size)
