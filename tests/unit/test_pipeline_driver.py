"""The --chain=poll driver's bookkeeping, against a recorded cluster (no SLURM here).

The driver, ``submit``/``status``, :class:`PipelineRun` and the command line all take
the SLURM client they use; these tests hand them a :class:`FakeSlurm`.

The file is over 500 lines because :class:`FakeSlurm` and the helpers around it
(``driver_for``, ``write_stage_manifest``) live here, beside the driver's tests, and
the other pipeline tests import them from here rather than keep copies.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sleap_rtc.engine.backends.slurm.tools import JobInfo, SlurmClient
from sleap_rtc.pipeline.driver import STOPPED_REASON, Driver, Event, drive, summary
from sleap_rtc.pipeline.record import NOT_SUBMITTED, WAITING, AlreadyDriven, record_path
from sleap_rtc.pipeline.run import status, submit
from sleap_rtc.pipeline.sbatch import Layout
from sleap_rtc.pipeline.schedule import Node, Schedule
from sleap_rtc.pipeline.spec import load_job
from tests.configs import STAGE_CONFIG
from tests.labels import write_labels

# -- the schedule alone ------------------------------------------------------------------


def topdown(dataset: str = "mice") -> list[Node]:
    return [
        Node(f"{dataset}_centroid", dataset, "centroid"),
        Node(f"{dataset}_centered_instance", dataset, "centered_instance"),
        Node(
            f"{dataset}_track",
            dataset,
            "track",
            (f"{dataset}_centroid", f"{dataset}_centered_instance"),
        ),
    ]


def keys(nodes: list[Node]) -> list[str]:
    return [n.key for n in nodes]


def test_a_stage_is_ready_once_all_its_parents_completed() -> None:
    schedule = Schedule(topdown())
    assert keys(schedule.ready()) == ["mice_centroid", "mice_centered_instance"]
    for number, node in enumerate(schedule.ready()):
        node.job_id, node.state = str(number), "PENDING"
    assert schedule.ready() == []
    assert schedule.observe({"0": "COMPLETED", "1": "RUNNING"}) == [schedule.nodes["mice_centroid"]]
    assert schedule.ready() == [] and schedule.block() == []
    schedule.observe({"1": "COMPLETED"})
    assert keys(schedule.ready()) == ["mice_track"]


def test_done_stages_count_as_completed_parents() -> None:
    schedule = Schedule(topdown())
    schedule.nodes["mice_centroid"].state = "DONE"
    schedule.nodes["mice_centered_instance"].state = "DONE"
    assert keys(schedule.ready()) == ["mice_track"]


def test_a_job_missing_from_the_states_is_in_flight_until_it_is_lost() -> None:
    schedule = Schedule(topdown())
    node = schedule.nodes["mice_centroid"]
    node.job_id, node.state = "7", "PENDING"
    assert schedule.observe({}, now=100.0, lost_after_s=300) == []
    assert schedule.in_flight() == [node]
    assert schedule.observe({"7": "RUNNING"}, now=200.0) == []  # seen again: the clock resets
    assert schedule.observe({}, now=300.0, lost_after_s=300) == []
    assert schedule.observe({}, now=599.0, lost_after_s=300) == []
    assert schedule.observe({}, now=600.0, lost_after_s=300) == [node]
    assert node.state == "LOST" and "no longer knows job 7" in node.reason
    (blocked,) = schedule.block()  # its dependents don't wait for it
    assert blocked.key == "mice_track" and blocked.reason == "parent centroid LOST (job 7)"


@pytest.mark.parametrize("final", ["FAILED", "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "NODE_FAIL"])
def test_a_parent_that_does_not_complete_blocks_its_dependents(final: str) -> None:
    schedule = Schedule([*topdown("mice"), *topdown("flies")])
    for number, node in enumerate(schedule.ready()):
        node.job_id, node.state = str(number), "RUNNING"
    schedule.observe({"0": final, "1": "COMPLETED", "2": "COMPLETED", "3": "COMPLETED"})
    (blocked,) = schedule.block()
    assert blocked.key == "mice_track" and blocked.state == NOT_SUBMITTED
    assert blocked.reason == f"parent centroid {final} (job 0)"
    assert blocked.blocked_by == {"stage": "centroid", "job_id": "0", "state": final}
    assert keys(schedule.ready()) == ["flies_track"]  # the other dataset goes on
    assert schedule.block() == []  # once


def test_blocking_is_transitive_and_names_the_stage_that_failed() -> None:
    schedule = Schedule(
        [Node("a", "d", "a"), Node("b", "d", "b", ("a",)), Node("c", "d", "c", ("b",))]
    )
    schedule.nodes["a"].job_id, schedule.nodes["a"].state = "5", "TIMEOUT"
    blocked = schedule.block()
    assert keys(blocked) == ["b", "c"]
    assert schedule.nodes["c"].reason == "parent b not submitted: parent a TIMEOUT (job 5)"
    assert schedule.nodes["c"].blocked_by == {"stage": "a", "job_id": "5", "state": "TIMEOUT"}
    assert schedule.stuck() == [] and not schedule.succeeded()


def test_stages_waiting_on_each_other_are_stuck_not_waited_for_forever() -> None:
    schedule = Schedule([Node("a", "d", "a", ("b",)), Node("b", "d", "b", ("a",))])
    assert schedule.ready() == [] and keys(schedule.stuck()) == ["a", "b"]


def test_parents_outside_the_pipeline_hold_nothing_up() -> None:
    schedule = Schedule([Node("a", "d", "a", ("elsewhere", "a"))])
    assert schedule.nodes["a"].parents == () and keys(schedule.ready()) == ["a"]


# -- the driver, against a fake cluster -----------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "lab"
    (root / "configs").mkdir(parents=True)
    for stage in ("centroid", "centered_instance"):
        (root / "configs" / f"{stage}.yaml").write_text(STAGE_CONFIG)
    registry = {}
    for dataset in ("mice", "flies"):
        write_labels(root / f"{dataset}.slp")
        registry[dataset] = {"labels": f"{dataset}.slp"}
    (root / "datasets.json").write_text(json.dumps(registry))
    job = {
        "name": "td",
        "datasets": ["mice", "flies"],
        "training_types": ["centroid", "centered_instance", "track"],
        "configs": {
            "centroid": "configs/centroid.yaml",
            "centered_instance": "configs/centered_instance.yaml",
        },
        "optimize_batch_size": False,
    }
    (root / "job.json").write_text(json.dumps(job))
    return root


class FakeSlurm(SlurmClient):
    """Jobs run for ``polls`` looks, then end as ``outcomes`` says (COMPLETED otherwise).

    Records every submission (with its dependencies), query and cancel. Unless
    ``dependencies``, a submission with SLURM dependencies fails the test (the
    driver waits for parents itself).
    """

    def __init__(
        self,
        outcomes: dict[str, Any] | None = None,
        polls: int = 2,
        dependencies: bool = False,
    ) -> None:
        self.outcomes = outcomes or {}
        self.polls = polls
        self.dependencies = dependencies
        self.jobs: dict[str, dict[str, Any]] = {}
        self.queries: list[list[str]] = []
        #: The jobs each query named as array jobs.
        self.arrays: list[set[str]] = []
        self.submitted: list[str] = []
        self.after: dict[str, list[str]] = {}
        self.dependency: dict[str, str] = {}
        self.options: dict[str, list[str]] = {}
        self.cancelled: list[str] = []
        self.on_submit: Any = None

    def sbatch(
        self,
        script: Path,
        *,
        after: Sequence[str] = (),
        dependency: str = "afterok",
        singleton: bool = False,
        cwd: Path | None = None,
        env: Any = None,
        options: Sequence[str] = (),
    ) -> str:
        assert self.dependencies or not after, "the driver submits without SLURM dependencies"
        job_id = str(100 + len(self.jobs))
        key = f"{script.parent.name}/{script.stem}"  # slurm_jobs/{job}/{dataset}/{stage}
        self.jobs[job_id] = {"key": key, "looks": 0, "nth": self.submitted.count(key)}
        self.options[job_id] = list(options)
        self.submitted.append(key)
        self.after[key] = list(after)
        self.dependency[key] = dependency
        if self.on_submit is not None:
            self.on_submit(key)
        return job_id

    def test_only(self, script: Path, *, cwd: Path | None = None) -> str | None:
        return None  # every script would queue

    def scancel(self, job_ids: Sequence[str]) -> None:
        self.cancelled.extend(job_ids)

    def job_details(self, job_ids: Sequence[str], *, arrays: Any = ()) -> dict[str, JobInfo]:
        return {job: JobInfo(job, state) for job, state in self.job_states(job_ids).items()}

    def job_states(self, job_ids: Sequence[str], *, arrays: Any = ()) -> dict[str, str]:
        self.arrays.append(set(arrays))
        self.queries.append(list(job_ids))
        found = {}
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job is None:
                continue
            job["looks"] += 1
            done = job["looks"] >= self.polls
            outcome = self.outcomes.get(job["key"], "COMPLETED")
            if isinstance(outcome, list):  # one per submission of the stage: its attempts
                outcome = outcome[min(job["nth"], len(outcome) - 1)]
            found[job_id] = outcome if done else "RUNNING"
        return found


def driver_for(project: Path, fake: FakeSlurm, events: list[Event], **kw: Any) -> Driver:
    return Driver(
        load_job(project / "job.json"),
        Layout.under(project / "run"),
        interval=0,
        on_event=events.append,
        slurm=fake,
        **kw,
    )


def write_stage_manifest(project: Path, key: str) -> None:
    """What a stage's script leaves when it succeeds: its manifest, with its inputs."""
    from sleap_rtc.pipeline.manifest import write_manifest

    layout = Layout.under(project / "run")
    meta = json.loads((layout.scripts / "td" / f"{key}.meta.json").read_text())
    folder = Path(meta["paths"]["artifacts"])
    folder.mkdir(parents=True, exist_ok=True)
    dataset, stage = key.split("/")
    write_manifest(folder, job="td", dataset=dataset, stage=stage, models=[], inputs=meta["inputs"])


def record(project: Path) -> dict[str, dict[str, Any]]:
    pipeline = load_job(project / "job.json")
    return json.loads(record_path(pipeline, Layout.under(project / "run")).read_text())


def test_the_driver_submits_each_stage_after_its_parents_one_query_per_poll(
    project: Path,
) -> None:
    fake = FakeSlurm()
    events: list[Event] = []
    waiting_seen: dict[str, Any] = {}

    def look(key: str) -> None:  # what `pipeline status` would see meanwhile
        if key == "mice/centroid":
            waiting_seen.update(record(project)["mice/track"])

    fake.on_submit = look
    driver = driver_for(project, fake, events)
    results = driver.run()

    assert {(r.dataset, r.stage): r.state for r in results} == {
        (d, s): "COMPLETED"
        for d in ("mice", "flies")
        for s in ("centroid", "centered_instance", "track")
    }
    assert driver.succeeded()
    assert waiting_seen["state"] == WAITING and waiting_seen["job_id"] is None
    assert waiting_seen["waits_for"] == ["centroid", "centered_instance"]
    assert waiting_seen["driver"] == {"host": socket.gethostname(), "pid": os.getpid()}
    # Tracks last, each after both of its parents were seen COMPLETED.
    assert fake.submitted[-2:] == ["mice/track", "flies/track"]
    order = [(e.kind, e.dataset, e.stage) for e in events]
    for dataset in ("mice", "flies"):
        submitted = order.index(("submitted", dataset, "track"))
        for parent in ("centroid", "centered_instance"):
            assert order.index(("completed", dataset, parent)) < submitted
    # One query per poll, for exactly the jobs in flight; none asked about twice after it ended.
    polls = fake.queries[1:]  # the first looks for jobs of earlier runs
    assert len(polls) == driver.polls
    assert all(len(set(q)) == len(q) for q in polls)
    assert polls[0] == ["100", "101", "102", "103"]
    assert record(project)["mice/track"]["after"] == []
    assert summary(results) == "6 stage(s): 6 completed"


def test_a_failure_blocks_only_its_dataset_and_a_rerun_submits_only_the_rest(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeSlurm({"flies/centroid": "FAILED"})
    events: list[Event] = []
    driver = driver_for(project, fake, events)
    results = {(r.dataset, r.stage): r for r in driver.run()}

    assert not driver.succeeded()
    track = results[("flies", "track")]
    assert track.state == NOT_SUBMITTED and track.job_id is None
    assert track.reason == "parent centroid FAILED (job 102)"
    assert results[("mice", "track")].state == "COMPLETED"
    assert "flies/track" not in fake.submitted
    (failed,) = [e for e in events if e.kind == "failed"]
    assert failed.text.startswith("job 102 FAILED; log: ") and failed.text.endswith(
        "td/flies/centroid-102.out"
    )
    (skipped,) = [e for e in events if e.kind == "skipped"]
    assert skipped.stage == "track" and "parent centroid FAILED (job 102)" in skipped.text
    entry = record(project)["flies/track"]
    assert entry["state"] == NOT_SUBMITTED and entry["job_id"] is None
    assert entry["blocked_by"] == {"stage": "centroid", "job_id": "102", "state": "FAILED"}
    assert summary(list(results.values())) == "6 stage(s): 4 completed, 1 FAILED, 1 not submitted"

    # `pipeline status` shows it, with the reason.
    pipeline = load_job(project / "job.json")
    layout = Layout.under(project / "run")
    shown = {(s.dataset, s.stage): s for s in status(pipeline, layout, slurm=fake)}
    assert shown[("flies", "track")].state == NOT_SUBMITTED
    assert shown[("flies", "track")].reason == "parent centroid FAILED (job 102)"

    # Stages whose outputs are current count as done (their scripts would have written
    # these manifests): the rerun submits the failed stage and its dependent.
    for dataset, stage in [(d, s) for d, s in results if results[(d, s)].state == "COMPLETED"]:
        write_stage_manifest(project, f"{dataset}/{stage}")
    again = FakeSlurm()
    rerun = driver_for(project, again, [])
    assert {r.state for r in rerun.run()} == {"COMPLETED", "DONE"}
    assert again.submitted == ["flies/centroid", "flies/track"]


def test_a_stopped_driver_leaves_jobs_running_and_a_rerun_follows_them(project: Path) -> None:
    fake = FakeSlurm(polls=1000)
    stop = threading.Event()
    events: list[Event] = []
    driver = driver_for(project, fake, events)
    fake.on_submit = lambda key: stop.set() if key == "mice/centered_instance" else None
    results = {(r.dataset, r.stage): r for r in driver.run(stop=stop)}

    assert driver.stopped and not driver.succeeded()
    assert driver.in_flight_ids() == ["100", "101"]  # it stopped before submitting more
    assert fake.submitted == ["mice/centroid", "mice/centered_instance"]
    assert results[("flies", "track")].reason == STOPPED_REASON
    assert record(project)["flies/centroid"]["state"] == NOT_SUBMITTED
    assert [e.kind for e in events].count("stopped") == 4

    # Again: the running jobs are followed, not submitted twice.
    fake.polls = 2
    again = driver_for(project, fake, events)
    assert {r.state for r in again.run()} == {"COMPLETED"}
    assert fake.submitted.count("mice/centroid") == 1 and len(fake.submitted) == 6
    assert [e.kind for e in events if e.dataset == "mice" and e.stage == "centroid"] == [
        "submitted",
        "queued",
        "completed",
    ]


def test_a_second_driver_on_this_host_is_refused_and_a_dead_ones_waits_end(
    project: Path,
) -> None:
    pipeline = load_job(project / "job.json")
    layout = Layout.under(project / "run")
    path = record_path(pipeline, layout)
    path.parent.mkdir(parents=True)
    alive = {"host": socket.gethostname(), "pid": os.getppid()}
    entry = {"job_id": None, "state": WAITING, "waits_for": ["centroid"], "driver": alive}
    path.write_text(json.dumps({"mice/track": entry}))
    nothing = FakeSlurm()
    shown = {(s.dataset, s.stage): s for s in status(pipeline, layout, slurm=nothing)}
    assert shown[("mice", "track")].state == WAITING
    assert (
        shown[("mice", "track")].reason
        == f"submitted when centroid complete (driver pid {alive['pid']})"
    )
    with pytest.raises(AlreadyDriven, match=f"process {alive['pid']} is already driving"):
        driver_for(project, FakeSlurm(), []).run()
    with pytest.raises(AlreadyDriven):  # nor does a plain submit go alongside it
        submit(pipeline, layout, chain=True, slurm=nothing)
    assert nothing.submitted == []

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    entry["driver"] = {"host": socket.gethostname(), "pid": int(gone.stdout)}
    path.write_text(json.dumps({"mice/track": entry}))
    shown = {(s.dataset, s.stage): s for s in status(pipeline, layout, slurm=nothing)}
    assert shown[("mice", "track")].state == NOT_SUBMITTED
    assert "driver is gone" in shown[("mice", "track")].reason
    assert driver_for(project, FakeSlurm(), []).run()  # no longer refused


def test_drive_cancels_what_a_stopped_driver_leaves_only_when_told_or_asked(
    project: Path,
) -> None:
    fake = FakeSlurm(polls=1000)
    stop = threading.Event()
    fake.on_submit = lambda key: stop.set()
    asked: list[list[str]] = []
    first = driver_for(project, fake, [])
    drive(first, stop=stop, ask=lambda left: asked.append(left) or False)
    assert asked == [["100"]] and fake.cancelled == [] and first.cancelled == []

    stop.clear()  # the next run follows job 100 and submits 101, then stops
    second = driver_for(project, fake, [])
    results = drive(second, stop=stop, ask=lambda left: True)
    assert second.cancelled == ["100", "101"] and fake.cancelled == ["100", "101"]
    assert {r.state for r in results if r.job_id} == {"CANCELLED"}

    def interrupted(key: str) -> None:
        raise KeyboardInterrupt

    fake.on_submit, fake.cancelled = interrupted, []
    third = driver_for(project, fake, [])
    with pytest.raises(KeyboardInterrupt):  # the jobs in flight go first
        drive(third, cancel_on_exit=True, ask=lambda left: False)
    assert third.cancelled == ["100", "101"] == fake.cancelled


# -- the command line --------------------------------------------------------------------


def test_chain_alone_means_afterok_and_poll_options_need_poll(project: Path) -> None:
    from sleap_rtc.cli import cli

    runner = CliRunner()

    def after(*flags: str) -> dict[str, list[str]]:
        """Each submitted stage's SLURM dependencies, from a fresh output folder."""
        fake = FakeSlurm(dependencies=True)
        out = project / f"out-{len(list(project.glob('out-*')))}"
        base = ["pipeline", "run", "--job", str(project / "job.json"), "--output-dir", str(out)]
        result = runner.invoke(cli, [*base, *flags], obj=fake)
        assert result.exit_code == 0, result.output
        return fake.after

    chained = after("--submit", "--chain")
    assert chained["mice/track"] == ["100", "101"] and chained["flies/track"] == [
        "103",
        "104",
    ]
    assert after("--chain", "--submit") == chained
    assert after("--submit", "--chain=afterok") == chained
    assert all(parents == [] for parents in after("--submit").values())
    base = ["pipeline", "run", "--job", str(project / "job.json"), "--output-dir", str(project)]
    wrong = runner.invoke(cli, [*base, "--submit", "--chain=sometimes"], obj=FakeSlurm())
    assert wrong.exit_code == 2 and "afterok" in wrong.output
    refused = runner.invoke(cli, [*base, "--submit", "--chain", "--cancel-on-exit"])
    assert refused.exit_code == 2 and "goes with --chain=poll" in refused.output
    refused = runner.invoke(cli, [*base, "--submit", "--poll-interval", "1"], obj=FakeSlurm())
    assert refused.exit_code == 2 and "goes with --chain or --chain=poll" in refused.output


def test_chain_poll_prints_events_a_summary_json_and_exits_1_on_a_failure(
    project: Path,
) -> None:
    from sleap_rtc.cli import cli

    fake = FakeSlurm({"mice/centered_instance": "OUT_OF_MEMORY"})
    args = ["pipeline", "run", "--job", str(project / "job.json"), "--output-dir", str(project)]
    args += ["--submit", "--chain=poll", "--poll-interval", "0.1"]
    result = CliRunner().invoke(cli, args, obj=fake)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert any(
        line.endswith(
            "mice         track              not submitted: parent "
            "centered_instance OUT_OF_MEMORY (job 101)"
        )
        for line in lines
    ), result.output
    assert lines[-1] == "6 stage(s): 4 completed, 1 OUT_OF_MEMORY, 1 not submitted"

    fake.outcomes.clear()  # fixed; nothing was written, so every stage runs again
    again = CliRunner().invoke(cli, [*args, "--json"], obj=fake)
    assert again.exit_code == 0, again.output
    assert {r["state"] for r in json.loads(again.stdout)} == {"COMPLETED"}
    assert again.stderr.splitlines()[-1] == "6 stage(s): 6 completed"


def test_the_pipeline_object_drives_and_can_cancel_what_it_leaves(project: Path) -> None:
    from sleap_rtc.pipeline import PipelineRun

    fake = FakeSlurm(polls=1000)
    cancelled = fake.cancelled
    run = PipelineRun(project / "job.json", output_dir=project / "run", slurm=fake)
    stop = threading.Event()
    fake.on_submit = lambda key: stop.set()
    results = run.drive(interval=0, stop=stop, cancel_on_exit=True)
    assert cancelled == ["100"] and fake.submitted == ["mice/centroid"]
    states = {(r.dataset, r.stage): r.state for r in results}
    assert states[("mice", "centroid")] == "CANCELLED"
    assert list(states.values()).count(NOT_SUBMITTED) == 5
    assert run.job_ids() == ["100"]

    fake.polls = 1
    assert {r.state for r in run.drive(interval=0)} == {"COMPLETED"}


def test_status_names_the_parent_when_slurm_cancels_a_dependent_without_a_reason(
    project: Path,
) -> None:
    # SLURM may cancel a job whose afterok parent failed before it notes why (Reason None).
    pipeline = load_job(project / "job.json")
    layout = Layout.under(project / "run")
    fake = FakeSlurm(
        {"mice/centroid": "FAILED", "mice/track": "CANCELLED"}, polls=0, dependencies=True
    )
    runs = {f"{r.dataset}/{r.stage}": r for r in submit(pipeline, layout, chain=True, slurm=fake)}
    shown = {(s.dataset, s.stage): s for s in status(pipeline, layout, slurm=fake)}
    failed = runs["mice/centroid"].job_id
    assert shown[("mice", "track")].state == "CANCELLED"
    assert shown[("mice", "track")].reason == (
        f"a job it depends on did not end as it needs: mice/centroid FAILED (job {failed}) "
        "(dependency never satisfied)"
    )
    assert shown[("flies", "track")].reason == ""  # completed: nothing to explain
