"""Submission throttling and polling backoff, against a recorded cluster (pure logic; the
real cluster's timings are in bench/pipeline_dag.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sleap_rtc.pipeline.run import submit
from sleap_rtc.pipeline.sbatch import Layout
from sleap_rtc.pipeline.spec import load_job
from sleap_rtc.pipeline.throttle import Backoff, Throttle, ThrottleSettings
from tests.labels import write_labels
from tests.unit.test_pipeline_driver import FakeSlurm, driver_for


def test_sbatch_calls_are_spaced_by_the_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    throttle = Throttle(ThrottleSettings(max_submit_per_s=4), clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        throttle.wait_turn()
    assert throttle.submitted_at == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert Throttle().room(10**6) is None  # no cap
    assert Throttle(ThrottleSettings(max_queued=3)).room(2) == 1
    assert Throttle(ThrottleSettings(max_queued=3)).room(5) == 0


def test_backoff_doubles_while_nothing_changes_and_resets() -> None:
    backoff = Backoff(10)
    assert [backoff.next(changed=False) for _ in range(5)] == [20, 40, 80, 80, 80]
    assert backoff.next(changed=True) == 10


def project(tmp_path: Path, throttle: dict[str, Any]) -> Path:
    registry = {}
    for index in range(5):
        write_labels(tmp_path / f"d{index}.slp", frames=2)
        registry[f"d{index}"] = {"labels": f"d{index}.slp"}
    (tmp_path / "datasets.json").write_text(json.dumps(registry))
    job = {
        "name": "td",
        "datasets": "all",
        "throttle": throttle,
        "stages": {
            "a": {"command": "true"},
            "b": {"command": "true", "needs": ["a"]},
        },
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    return tmp_path


def test_the_driver_keeps_at_most_max_queued_in_the_queue(tmp_path: Path) -> None:
    root = project(tmp_path, {"max_queued": 2})
    fake = FakeSlurm(polls=2)
    driver = driver_for(root, fake, [])
    queued_at_submit: list[int] = []
    fake.on_submit = lambda key: queued_at_submit.append(len(driver.schedule.in_flight()))
    results = driver.run()
    assert {r.state for r in results} == {"COMPLETED"} and len(results) == 10
    assert len(fake.submitted) == 10 and max(queued_at_submit) == 1  # so never more than 2


def test_chained_submit_waits_for_room_and_parents_go_first(tmp_path: Path) -> None:
    root = project(tmp_path, {"max_queued": 3, "max_submit_per_s": 1000})
    fake = FakeSlurm(polls=1, dependencies=True)
    unfinished: list[int] = []

    def count(key: str) -> None:  # jobs still in the queue besides the one just submitted
        unfinished.append(sum(1 for j in fake.jobs.values() if j["looks"] < fake.polls) - 1)

    fake.on_submit = count
    runs = submit(
        load_job(root / "job.json"),
        Layout.under(root / "run"),
        chain=True,
        slurm=fake,
        poll_interval=0,
    )
    assert len(runs) == 10 and all(r.action == "submitted" for r in runs)
    assert max(unfinished) <= 2  # three at most with the new one
    assert fake.submitted.index("d0/a") < fake.submitted.index("d0/b")
    assert len(fake.queries) > 1  # it looked for room
