"""Retries and resumption on a real SLURM: an attempt that fails is tried again with more
memory and its dependents wait for it; an end the stage doesn't retry stops there; a
training stage requeued mid-run goes on from its last checkpoint (real sleap-nn)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sleap_rtc.engine.backends.slurm.tools import FINAL_STATES
from tests.labels import write_labels

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("slurm")]
EXAMPLES = Path(__file__).parents[2] / "examples" / "jobs"


def flaky_job(retry_on: list[str]) -> dict[str, Any]:
    return {
        "name": "flaky",
        "datasets": ["mice"],
        "slurm": {"time": "00:05:00", "mem": "100M", "cpus": 1},
        "stages": {
            "flaky": {  # fails on its first attempt, as a job out of memory would
                "command": [
                    'echo "attempt $SLEAP_RTC_ATTEMPT"',
                    '[ "$SLEAP_RTC_ATTEMPT" != 1 ] || exit 3',
                    "echo done > out.txt",
                ],
                "outputs": ["out.txt"],
                "retries": 1,
                "retry_on": retry_on,
                "retry_resources": {"mem": ["100M", "200M"]},
            },
            "after": {"command": "cat ../flaky/out.txt > seen.txt", "needs": ["flaky"]},
        },
    }


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root

    def cli(self, job: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(sys.executable, "-m", "sleap_rtc", "pipeline", *args),
                *("--job", str(self.root / job), "--output-dir", str(self.root)),
            ],
            capture_output=True,
            text=True,
            cwd=self.root,
            timeout=600,
        )

    def settle(self, job: str, timeout: float = 120) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        found: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            done = self.cli(job, "status", "--json")
            assert done.returncode == 0, done.stderr
            found = {s["stage"]: s for s in json.loads(done.stdout)}
            if all(s["state"] in FINAL_STATES | {"DONE"} for s in found.values()):
                return found
            time.sleep(1)
        raise AssertionError(f"still running after {timeout} s: {found}")

    def jobs(self) -> list[str]:
        jobs = []
        for record in self.root.glob("slurm_jobs/*/runs.json"):
            for entry in json.loads(record.read_text()).values():
                jobs += [str(a["job_id"]) for a in entry.get("attempts", [])]
                jobs += [str(entry[k]) for k in ("job_id", "gate") if entry.get(k)]
        return jobs


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    write_labels(tmp_path / "mice.slp", frames=3)
    (tmp_path / "datasets.json").write_text(json.dumps({"mice": {"labels": "mice.slp"}}))
    made = Project(tmp_path)
    yield made
    if jobs := made.jobs():  # failed or not, nothing of this test left queued
        subprocess.run(["scancel", *jobs], capture_output=True, timeout=30)


def req_mem(job_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "ReqMem", "-j", job_id],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return out.strip()


@pytest.mark.parametrize("chain", ["--chain", "--chain=poll"])
def test_a_failed_attempt_is_retried_with_more_memory_and_its_dependent_waits(
    project: Project, chain: str
) -> None:
    (project.root / "job.json").write_text(json.dumps(flaky_job(["FAILED"])))
    args = ["run", "--submit", chain, "--poll-interval", "0.5"]
    submitted = project.cli("job.json", *args)
    assert submitted.returncode == 0, submitted.stderr
    found = project.settle("job.json")
    assert found["flaky"]["state"] == "COMPLETED" and found["flaky"]["reason"] == "attempt 2 of 2"
    assert found["after"]["state"] == "COMPLETED"
    second = str(found["flaky"]["job_id"])
    assert req_mem(second) == "200M"
    seen = project.root / "experiment_runs" / "flaky" / "mice" / "after" / "seen.txt"
    assert seen.read_text().strip() == "done"
    if chain == "--chain=poll":
        assert "attempt 2 of 2: submitted job" in submitted.stdout


def test_an_end_the_stage_does_not_retry_stops_its_attempts_and_dependents(
    project: Project,
) -> None:
    (project.root / "job.json").write_text(json.dumps(flaky_job(["TIMEOUT"])))
    submitted = project.cli("job.json", "run", "--submit", "--chain")
    assert submitted.returncode == 0, submitted.stderr
    found = project.settle("job.json")
    assert found["flaky"]["state"] == "FAILED"
    assert found["flaky"]["reason"] == "attempt 1 of 2: exit code 3"
    assert found["after"]["state"] == "CANCELLED"


def test_a_training_stage_requeued_mid_run_goes_on_from_its_last_checkpoint(
    project: Project,
) -> None:
    from sleap_rtc.demo.data import make_demo_data

    jobs = project.root / "jobs"
    shutil.copytree(EXAMPLES, jobs, ignore=shutil.ignore_patterns("data"))
    make_demo_data(jobs / "data" / "mice")
    spec = json.loads((jobs / "single_instance.json").read_text())
    spec["extra_args"] = {"max_epochs": 8}
    (project.root / "train.json").write_text(
        json.dumps(
            {
                **spec,
                "datasets_registry": str(jobs / "datasets.json"),
                "configs": {"single_instance": str(jobs / spec["configs"]["single_instance"])},
            }
        )
    )
    submitted = project.cli("train.json", "run", "--submit", "--json")
    assert submitted.returncode == 0, submitted.stderr
    (run,) = json.loads(submitted.stdout)
    job_id = str(run["job_id"])
    model = project.root / "experiment_runs" / "single" / "mice" / "single_instance" / "model"
    log_csv = model / "training_log.csv"
    deadline = time.monotonic() + 300
    while not ((model / "last.ckpt").is_file() and log_csv.is_file() and epochs(log_csv) >= 2):
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(1)
    before = epochs(log_csv)
    requeued = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    assert requeued.returncode == 0, requeued.stderr
    found = project.settle("train.json", timeout=600)
    assert found["single_instance"]["state"] == "COMPLETED", found
    log = Path(found["single_instance"]["log"]).read_text()
    assert "resuming from" in log, log[-3000:]
    rows = [int(r["epoch"]) for r in csv.DictReader(log_csv.open())]
    assert max(rows) == 7  # all 8 epochs, counted on from where it stopped
    assert rows.count(0) <= 1 and before >= 2, rows
    assert not (model.parent / "model.previous").exists()  # nothing started over


def epochs(log_csv: Path) -> int:
    try:
        return len(list(csv.DictReader(log_csv.open())))
    except (OSError, csv.Error):
        return 0
