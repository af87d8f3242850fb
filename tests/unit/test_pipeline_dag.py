"""Stages that need others (any DAG), command stages, stage inputs and the rerun plan.

The plan runs against a recorded cluster (:class:`FakeSlurm` from the driver's
tests); the real-SLURM proof is in ``tests/e2e/test_pipeline_slurm.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sleap_rtc.jobs.problems import JobRejected
from sleap_rtc.pipeline.graph import check_needs, stable_order
from sleap_rtc.pipeline.inputs import changes, inputs_key, stage_inputs
from sleap_rtc.pipeline.manifest import write_manifest
from sleap_rtc.pipeline.record import NOT_SUBMITTED
from sleap_rtc.pipeline.run import plan, submit
from sleap_rtc.pipeline.sbatch import Layout
from sleap_rtc.pipeline.schedule import NOT_NEEDED, Node, Schedule
from sleap_rtc.pipeline.spec import load_job
from tests.configs import STAGE_CONFIG
from tests.labels import write_labels
from tests.unit.test_pipeline_driver import FakeSlurm


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "configs").mkdir()
    for stage in ("centroid", "centered_instance"):
        (tmp_path / "configs" / f"{stage}.yaml").write_text(STAGE_CONFIG)
    for name in ("mice", "flies"):
        write_labels(tmp_path / f"{name}.slp")
    registry = {"mice": {"labels": "mice.slp"}, "flies": {"labels": "flies.slp"}}
    (tmp_path / "datasets.json").write_text(json.dumps(registry))
    return tmp_path


TOPDOWN: dict[str, Any] = {
    "name": "td",
    "datasets": ["mice", "flies"],
    "training_types": ["centroid", "centered_instance", "track"],
    "configs": {
        "centroid": "configs/centroid.yaml",
        "centered_instance": "configs/centered_instance.yaml",
    },
    "extra_args": {"max_epochs": 2},
    "optimize_batch_size": False,
}
REPORT = {
    "command": ["python3 report.py > report.txt"],
    "scope": "pipeline",
    "needs": ["track"],
    "dependency": "afterany",
    "outputs": ["report.txt"],
}


def write(project: Path, job: dict[str, Any]) -> Path:
    path = project / "job.json"
    path.write_text(json.dumps(job))
    return path


def rejected(project: Path, job: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(JobRejected) as caught:
        load_job(write(project, job))
    return {p.field: p.message for p in caught.value.problems}


# -- the graph ---------------------------------------------------------------------------


def test_needs_name_known_stages_without_cycles() -> None:
    stages = ["a", "b", "c"]
    assert check_needs(stages, {"b": ["a"], "c": ["a", "b"]}) == []
    found = {p.field: p.message for p in check_needs(stages, {"b": ["b", "x"]})}
    assert "can't need itself" in found["stages.b.needs[0]"]
    assert "which this job doesn't run; its stages: a, b, c" in found["stages.b.needs[1]"]
    [cycle] = check_needs(stages, {"a": ["c"], "b": ["a"], "c": ["b"]})
    assert "cycle" in cycle.message and cycle.field.startswith("stages.")
    assert " → " in cycle.message


def test_stable_order_puts_parents_first_and_keeps_the_rest_in_place() -> None:
    assert stable_order(["t", "a", "b", "x"], {"t": ["a", "b"]}) == ["a", "b", "t", "x"]
    assert stable_order(["a", "b"], {"a": ["elsewhere"]}) == ["a", "b"]


# -- job files with needs and command stages -----------------------------------------------


def test_a_fan_in_report_runs_once_after_every_dataset_s_track(project: Path) -> None:
    job = {**TOPDOWN, "stages": {"report": REPORT}}
    pipeline = load_job(write(project, job))
    keys = [s.key for s in pipeline.stages]
    assert keys[-1] == "_pipeline/report" and len(keys) == 7
    report = pipeline.by_key()["_pipeline/report"]
    assert report.kind == "command" and report.dataset is None
    assert report.parents == ("mice/track", "flies/track") and report.dependency == "afterany"
    assert report.slurm_name == "td/_pipeline/report"
    for key in report.parents:  # every parent before it
        assert keys.index(key) < keys.index(report.key)


def test_a_pipeline_stage_that_datasets_need_comes_first_fan_out(project: Path) -> None:
    prepare = {"command": "echo ready", "scope": "pipeline"}
    job = {
        **TOPDOWN,
        "training_types": ["centroid", "centered_instance", "track"],
        "stages": {"prepare": prepare, "centroid": {"needs": ["prepare"]}},
    }
    pipeline = load_job(write(project, job))
    keys = [s.key for s in pipeline.stages]
    assert keys[0] == "_pipeline/prepare"
    assert pipeline.by_key()["mice/centroid"].parents == ("_pipeline/prepare",)
    assert pipeline.by_key()["mice/track"].parents == ("mice/centroid", "mice/centered_instance")


def test_singleton_stages_of_all_datasets_share_one_slurm_name(project: Path) -> None:
    job = {**TOPDOWN, "stages": {"centroid": {"singleton": True}}}
    stages = load_job(write(project, job)).by_key()
    assert (
        stages["mice/centroid"].slurm_name == stages["flies/centroid"].slurm_name == ("td/centroid")
    )
    assert stages["mice/track"].slurm_name == "td/mice/track"


def test_dag_and_command_stage_problems_come_all_at_once(project: Path) -> None:
    job = {
        **TOPDOWN,
        "stages": {
            "report": {"needs": ["track", "nope"], "dependency": "afterany"},  # no command
            "clean": {"command": "rm -rf tmp", "dependency": "afternotok"},  # needs nothing
            "centroid": {"needs": ["track"], "dependency": "afterany"},  # a cycle; built-in
            "bad name": {"command": "true"},
            "out": {"command": "true", "outputs": ["../escape.txt"], "extra_args": {"x": 1}},
        },
    }
    found = rejected(project, job)
    assert "give it a command" in found["stages.report.command"]
    assert "which this job doesn't run" in found["stages.report.needs[1]"]
    assert "set stages.clean.needs" in found["stages.clean.dependency"]
    assert "built-in stage" in found["stages.centroid.dependency"]
    assert "a stage name is" in found["stages.bad name"]
    assert "without '..'" in found["stages.out.outputs[0]"]
    assert "no sleap-nn options" in found["stages.out.extra_args"]
    cycle = [message for message in found.values() if "cycle" in message]
    assert cycle and "track" in cycle[0] and "centroid" in cycle[0]


def test_track_that_needs_no_training_stage_has_no_models(project: Path) -> None:
    job = {**TOPDOWN, "stages": {"track": {"needs": []}}}
    assert "track needs models" in rejected(project, job)["training_types"]


# -- inputs ------------------------------------------------------------------------------


def test_changes_say_in_words_what_differs(tmp_path: Path) -> None:
    config = tmp_path / "centroid.yaml"
    config.write_text("a: 1\n")
    before = stage_inputs({"max_epochs": 3}, {"config": config}, None, {"mice/x": "k1"})
    config.write_text("a: 2\n")
    after = stage_inputs({"max_epochs": 5}, {"config": config}, None, {"mice/x": "k2"})
    assert inputs_key(before) != inputs_key(after)
    assert changes(before, after) == [
        "max_epochs 3 → 5",
        "config changed (centroid.yaml)",
        "mice/x has new inputs",
    ]
    assert changes(after, after) == []
    assert "older sleap-rtc" in changes(None, after)[0]


# -- the plan ----------------------------------------------------------------------------


def finish(project: Path, job: dict[str, Any], keys: list[str], job_id: str = "9") -> None:
    """Leave what these stages' scripts leave when they succeed: a manifest with inputs."""
    pipeline = load_job(write(project, job))
    layout = Layout.under(project / "run")
    for item in plan(pipeline, layout, slurm=FakeSlurm()):
        if item.stage.key in keys:
            folder = layout.artifacts_dir(item.stage)
            folder.mkdir(parents=True, exist_ok=True)
            write_manifest(
                folder,
                job="td",
                dataset=item.stage.group,
                stage=item.stage.name,
                models=[],
                inputs=item.written.inputs,
                slurm_job_id=job_id,
            )


def actions(project: Path, job: dict[str, Any]) -> dict[str, tuple[str, str]]:
    pipeline = load_job(write(project, job))
    steps = plan(pipeline, Layout.under(project / "run"), slurm=FakeSlurm())
    return {s.stage.key: (s.action, s.reason) for s in steps}


def test_a_changed_config_reruns_its_stage_and_everything_downstream(project: Path) -> None:
    everything = [f"{d}/{s}" for d in ("mice", "flies") for s in ("centroid", "centered_instance")]
    everything += ["mice/track", "flies/track"]
    assert {a for a, _ in actions(project, TOPDOWN).values()} == {"run"}
    finish(project, TOPDOWN, everything)
    assert {a for a, _ in actions(project, TOPDOWN).values()} == {"skip"}
    assert (
        actions(project, TOPDOWN)["mice/centroid"][1] == "its outputs are current (made by job 9)"
    )

    (project / "configs" / "centroid.yaml").write_text(STAGE_CONFIG + "\n# tuned\n")
    now = actions(project, TOPDOWN)
    assert now["mice/centroid"] == ("run", "config changed (centroid.yaml)")
    assert now["mice/centered_instance"][0] == "skip"
    assert now["mice/track"] == ("run", "it needs mice/centroid, which runs")
    assert now["flies/track"][0] == "run"

    # A changed labels file reruns its dataset only; a changed option, the stages it reaches.
    finish(project, TOPDOWN, everything)
    write_labels(project / "mice.slp", frames=7)
    now = actions(project, TOPDOWN)
    assert now["mice/centered_instance"] == ("run", "labels changed (mice.slp)")
    assert now["flies/centroid"][0] == now["flies/track"][0] == "skip"
    finish(project, TOPDOWN, everything)
    longer = {**TOPDOWN, "extra_args": {"max_epochs": 3}}
    now = actions(project, longer)
    assert now["mice/centroid"] == ("run", "max_epochs 2 → 3")


def test_predictions_without_a_manifest_are_not_taken_as_done(project: Path) -> None:
    trained = [f"{d}/{s}" for d in ("mice", "flies") for s in ("centroid", "centered_instance")]
    finish(project, TOPDOWN, trained)
    predictions = project / "run" / "experiment_runs" / "td" / "mice" / "track"
    predictions.mkdir(parents=True)
    (predictions / "predictions.slp").write_bytes(b"old")
    assert actions(project, TOPDOWN)["mice/track"] == ("run", "not run yet")


def test_a_job_still_queued_for_other_inputs_is_a_problem(project: Path) -> None:
    pipeline = load_job(write(project, TOPDOWN))
    layout = Layout.under(project / "run")
    fake = FakeSlurm(polls=1000)
    submit(pipeline, layout, chain=True, slurm=FakeSlurm(polls=1000, dependencies=True))
    fake = FakeSlurm(polls=1000, dependencies=True)
    fake.jobs = {str(100 + i): {"key": "", "looks": 0} for i in range(6)}
    assert {s.action for s in plan(pipeline, layout, slurm=fake)} == {"queued"}
    (project / "configs" / "centroid.yaml").write_text(STAGE_CONFIG + "\n# tuned\n")
    changed = load_job(write(project, TOPDOWN))
    with pytest.raises(JobRejected) as caught:
        plan(changed, layout, slurm=fake)
    fields = {p.field for p in caught.value.problems}
    assert fields == {"mice/centroid", "flies/centroid", "mice/track", "flies/track"}
    assert "other inputs" in caught.value.problems[0].message


def test_chain_passes_each_stage_s_dependency_type(project: Path) -> None:
    job = {**TOPDOWN, "stages": {"report": REPORT}}
    fake = FakeSlurm(dependencies=True)
    runs = submit(
        load_job(write(project, job)), Layout.under(project / "run"), chain=True, slurm=fake
    )
    assert [r.stage for r in runs][-1] == "report"
    assert fake.dependency["_pipeline/report"] == "afterany"
    assert len(fake.after["_pipeline/report"]) == 2  # both tracks
    record = json.loads((project / "run" / "slurm_jobs" / "td" / "runs.json").read_text())
    assert record["_pipeline/report"]["dependency"] == "afterany"
    assert len(record["_pipeline/report"]["inputs_key"]) == 64


# -- the poll driver's dependency types ---------------------------------------------------


def test_afterany_waits_for_every_parent_to_end_however_it_ended() -> None:
    nodes = [
        Node("a", "d", "a"),
        Node("b", "d", "b"),
        Node("report", "", "report", ("a", "b"), "afterany"),
        Node("next", "d", "next", ("a",)),
    ]
    schedule = Schedule(nodes)
    schedule.nodes["a"].job_id, schedule.nodes["a"].state = "1", "FAILED"
    schedule.nodes["b"].job_id, schedule.nodes["b"].state = "2", "RUNNING"
    assert [n.key for n in schedule.block()] == ["next"]  # afterok is blocked
    assert schedule.nodes["next"].state == NOT_SUBMITTED
    assert [n.key for n in schedule.ready()] == []  # b still runs
    schedule.nodes["b"].state = "COMPLETED"
    assert [n.key for n in schedule.ready()] == ["report"]


def test_afternotok_runs_after_a_failure_and_is_not_needed_otherwise() -> None:
    def schedule_with(outcome: str) -> Schedule:
        schedule = Schedule(
            [Node("a", "d", "a"), Node("clean", "d", "clean", ("a",), "afternotok")]
        )
        schedule.nodes["a"].job_id, schedule.nodes["a"].state = "1", outcome
        return schedule

    failed = schedule_with("TIMEOUT")
    assert failed.block() == [] and [n.key for n in failed.ready()] == ["clean"]
    fine = schedule_with("COMPLETED")
    assert fine.ready() == [] and [n.key for n in fine.block()] == ["clean"]
    assert fine.nodes["clean"].state == NOT_NEEDED and fine.succeeded()
