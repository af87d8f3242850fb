"""Retries with more resources per attempt, and training that goes on from its last
checkpoint. Against a recorded cluster and the real scripts run by bash; the real-SLURM
proof is in tests/e2e/test_pipeline_retries.py."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sleap_rtc.jobs.problems import JobRejected
from sleap_rtc.pipeline.run import status, submit
from sleap_rtc.pipeline.sbatch import Layout
from sleap_rtc.pipeline.scripts import generate
from sleap_rtc.pipeline.spec import load_job
from tests.configs import STAGE_CONFIG
from tests.labels import write_labels
from tests.unit.test_pipeline_driver import FakeSlurm, driver_for

RETRIED = {
    "retries": 2,
    "retry_resources": {"mem": ["1G", "2G", "4G"], "time": ["00:10:00", "00:20:00"]},
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "single_instance.yaml").write_text(STAGE_CONFIG)
    write_labels(tmp_path / "mice.slp", frames=3)
    (tmp_path / "datasets.json").write_text(json.dumps({"mice": {"labels": "mice.slp"}}))
    return tmp_path


def job(project: Path, **stage: Any) -> Path:
    spec = {
        "name": "td",
        "datasets": ["mice"],
        "training_types": ["single_instance"],
        "configs": {"single_instance": "configs/single_instance.yaml"},
        "optimize_batch_size": False,
        "slurm": {"mem": "500M", "time": "00:05:00"},
        "stages": {
            "single_instance": stage,
            "after": {"command": "true", "needs": ["single_instance"]},
        },
    }
    path = project / "job.json"
    path.write_text(json.dumps(spec))
    return path


def test_per_attempt_resources_are_checked_and_the_first_is_in_the_script(project: Path) -> None:
    pipeline = load_job(job(project, **RETRIED))
    stage = pipeline.by_key()["mice/single_instance"]
    assert stage.attempts == 3 and stage.resources.mem == "1G"
    assert stage.attempt_options(1) == []
    assert stage.attempt_options(2) == ["--mem=2G", "--time=00:20:00"]
    assert stage.attempt_options(3) == ["--mem=4G", "--time=00:20:00"]  # the last repeats
    (written, *_) = generate(pipeline, Layout.under(project / "run"), sleap_rtc=["sleap-rtc"])
    assert "#SBATCH --mem=1G" in written.script.read_text()
    with pytest.raises(JobRejected) as caught:
        load_job(job(project, retries=1, retry_resources={"mem": ["lots"]}))
    assert any("retry_resources" in p.field for p in caught.value.problems)


def test_the_driver_retries_with_more_and_then_lets_dependents_go(project: Path) -> None:
    job(project, **RETRIED)
    fake = FakeSlurm({"mice/single_instance": ["OUT_OF_MEMORY", "COMPLETED"]})
    events: list[Any] = []
    driver = driver_for(project, fake, events)
    results = {r.stage: r for r in driver.run()}
    assert results["single_instance"].state == "COMPLETED" and driver.succeeded()
    assert fake.submitted == ["mice/single_instance", "mice/single_instance", "mice/after"]
    second = fake.options[str(results["single_instance"].job_id)]
    assert second == ["--mem=2G", "--time=00:20:00", "--export=ALL,SLEAP_RTC_ATTEMPT=2"]
    retried = [e.text for e in events if e.text.startswith("attempt 2 of 3")]
    assert retried == [
        "attempt 2 of 3: submitted job 101 with mem 2G, time 00:20:00 after job 100 OUT_OF_MEMORY"
    ]
    failed = [e.text for e in events if e.kind == "failed"]
    assert "ran out of memory (mem 1G)" in failed[0]
    shown = {
        s.stage: s
        for s in status(load_job(project / "job.json"), Layout.under(project / "run"), slurm=fake)
    }
    assert shown["single_instance"].reason == "attempt 2 of 3"


def test_an_end_not_in_retry_on_is_not_retried(project: Path) -> None:
    job(project, **RETRIED)
    fake = FakeSlurm({"mice/single_instance": ["FAILED", "COMPLETED"]})
    results = {r.stage: r for r in driver_for(project, fake, []).run()}
    assert results["single_instance"].state == "FAILED"
    assert results["after"].state == "NOT SUBMITTED"
    assert fake.submitted == ["mice/single_instance"]


def test_chain_submits_every_attempt_and_a_job_standing_for_them(project: Path) -> None:
    pipeline = load_job(job(project, **RETRIED))
    layout = Layout.under(project / "run")
    fake = FakeSlurm(dependencies=True)
    runs = {r.stage: r for r in submit(pipeline, layout, chain=True, slurm=fake)}
    assert fake.submitted == [
        "mice/single_instance",
        "mice/single_instance",
        "mice/single_instance",
        "mice/single_instance.attempts",
        "mice/after",
    ]
    ids = [str(100 + i) for i in range(4)]
    assert (
        fake.options[ids[1]][-1]
        == f"--export=ALL,SLEAP_RTC_ATTEMPT=2,SLEAP_RTC_PREVIOUS_JOB={ids[0]}"
    )
    assert fake.options[ids[3]] == [f"--export=ALL,SLEAP_RTC_ATTEMPTS={':'.join(ids[:3])}"]
    assert runs["after"].after == [ids[3]]  # the dependents wait for that one job
    record = json.loads((layout.scripts / "td" / "runs.json").read_text())
    entry = record["mice/single_instance"]
    assert [a["job_id"] for a in entry["attempts"]] == ids[:3] and entry["gate"] == ids[3]


def _fake_cli(folder: Path) -> Path:
    cli = folder / "fake-sleap-rtc"
    cli.write_text(f'#!/bin/bash\necho "$*" >> {shlex.quote(str(folder / "calls.log"))}\n')
    cli.chmod(0o755)
    return cli


def test_a_rerun_for_the_same_inputs_resumes_and_for_others_starts_over(
    project: Path, tmp_path: Path
) -> None:
    cli = _fake_cli(tmp_path)
    layout = Layout.under(project / "run")
    env = {"PATH": "/usr/bin:/bin", "SLEAP_RTC_EXPERIMENT_ROOT": str(tmp_path / "runs")}
    model = tmp_path / "runs" / "td" / "mice" / "single_instance" / "model"

    def run(path: Path) -> str:
        (item, *_) = generate(load_job(path), layout, sleap_rtc=[str(cli)])
        done = subprocess.run(["bash", str(item.script)], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        calls = (tmp_path / "calls.log").read_text().splitlines()
        return next(c for c in reversed(calls) if c.startswith("local train"))

    first = run(job(project, **RETRIED))
    assert "--resume" not in first
    model.mkdir(parents=True)  # what the first attempt left before it was killed
    (model / "last.ckpt").write_bytes(b"epoch 2")
    again = run(job(project, **RETRIED))
    assert f"--resume {model}/last.ckpt" in again
    # Other inputs: the old model must not be continued; it is kept aside.
    other = job(project, **{**RETRIED, "extra_args": {"max_epochs": 9}})
    assert "--resume" not in run(other)
    assert not model.exists() and (model.parent / "model.previous" / "last.ckpt").is_file()
    assert os.path.isfile(model.parent / "inputs.json")
