"""Pipeline job files: checked with every problem at once, resolved into stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sleap_rtc.jobs.problems import JobRejected
from sleap_rtc.pipeline.spec import Resources, load_job
from tests.configs import STAGE_CONFIG
from tests.labels import write_labels


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "configs").mkdir()
    for stage in ("centroid", "centered_instance", "single_instance"):
        (tmp_path / "configs" / f"{stage}.yaml").write_text(STAGE_CONFIG)
    (tmp_path / "data").mkdir()
    for name in ("mice", "flies"):
        write_labels(tmp_path / "data" / f"{name}.slp")
    write_labels(tmp_path / "data" / "mice.val.slp")
    registry = {
        "mice": {"labels": "data/mice.slp", "val_labels": "data/mice.val.slp"},
        "flies": {"labels": "data/flies.slp"},
    }
    (tmp_path / "datasets.json").write_text(json.dumps(registry))
    return tmp_path


def write(project: Path, spec: dict[str, Any], name: str = "job.json") -> Path:
    path = project / name
    path.write_text(json.dumps(spec))
    return path


TOPDOWN: dict[str, Any] = {
    "name": "topdown",
    "datasets": "all",
    "training_types": ["centroid", "centered_instance", "track"],
    "configs": {
        "centroid": "configs/centroid.yaml",
        "centered_instance": "configs/centered_instance.yaml",
    },
    "extra_args": {"max_epochs": 5, "batch_size": 8, "peak_threshold": 0.2},
    "slurm": {"time": "00:30:00", "mem": "4G", "cpus": 1, "partition": "debug"},
    "stages": {"centroid": {"slurm": {"gpus": 1, "extra": ["--exclusive"]}}},
    "setup": ["source /opt/venv/bin/activate"],
}


def problems(path: Path) -> dict[str, str]:
    with pytest.raises(JobRejected) as caught:
        load_job(path)
    found: dict[str, str] = {}
    for problem in caught.value.problems:
        found[problem.field] = " | ".join(filter(None, [found.get(problem.field), problem.message]))
    return found


def test_a_topdown_job_resolves_into_stages_per_dataset(project: Path) -> None:
    pipeline = load_job(write(project, TOPDOWN))
    assert [d.name for d in pipeline.datasets] == ["flies", "mice"]  # "all": the registry
    mice = {s.name: s for s in pipeline.for_dataset("mice")}
    assert list(mice) == ["centroid", "centered_instance", "track"]
    centroid, track = mice["centroid"], mice["track"]
    assert centroid.config == project / "configs" / "centroid.yaml"
    assert centroid.data.labels == project / "data" / "mice.slp"
    assert centroid.data.val_labels == project / "data" / "mice.val.slp"
    # Overrides go to the stages they apply to.
    assert centroid.extra_args == {"max_epochs": 5, "batch_size": 8}
    assert track.extra_args == {"batch_size": 8, "peak_threshold": 0.2}
    # Per-stage resources over the job's.
    assert centroid.resources.gpus == 1 and centroid.resources.time == "00:30:00"
    assert centroid.resources.extra == ["--exclusive"]
    assert mice["centered_instance"].resources.gpus is None
    # Track waits for both models; training stages tune the batch size by default.
    assert track.after == ("centroid", "centered_instance") and centroid.after == ()
    assert centroid.optimize_batch_size and not track.optimize_batch_size
    assert track.data.track == (project / "data" / "mice.slp",) and track.files == ()
    assert centroid.key == "mice/centroid" and centroid.slurm_name == "topdown/mice/centroid"
    assert track.parents == ("mice/centroid", "mice/centered_instance")
    assert centroid.setup == ["source /opt/venv/bin/activate"]


def test_yaml_job_files_work_too(project: Path) -> None:
    import yaml

    path = project / "job.yaml"
    path.write_text(yaml.safe_dump({**TOPDOWN, "datasets": ["mice"]}))
    assert [d.name for d in load_job(path).datasets] == ["mice"]


def test_every_problem_is_reported_at_once(project: Path) -> None:
    bad = {
        **TOPDOWN,
        "datasets": ["mice", "rats"],
        "configs": {"centroid": "configs/nope.yaml"},
        "extra_args": {"max_epochs": 0, "epochs": 5, "batch_size": "8"},
        "dependency_manifests": {"bottomup": "/m/{dataset}_{run}.json"},
    }
    found = problems(write(project, bad))
    assert "rats" in found["datasets[1]"] and "known: flies, mice" in found["datasets[1]"]
    assert found["configs.centroid"].startswith("Path not found:")
    assert "set configs.centered_instance" in found["configs.centered_instance"]
    valid = found["extra_args.epochs"].split("valid ones: ")[1].split(", ")
    assert {"batch_size", "frames", "learning_rate", "max_epochs"} <= set(valid)
    assert valid == sorted(valid)
    assert found["extra_args.max_epochs"] == "max_epochs must be greater than 0"
    assert found["extra_args.batch_size"] == 'batch_size must be int, got "8"'
    assert "'default' or a stage" in found["dependency_manifests.bottomup"]
    assert "unknown placeholder(s) {run}" in found["dependency_manifests.bottomup"]
    assert len(found) >= 7


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"name": "my job"}, "name", "letters, digits"),
        ({"training_types": ["centroid", "tracking"]}, "training_types[1]", "Input should be"),
        ({"slurm": {"time": "half an hour"}}, "slurm.time", "1-00:00:00"),
        ({"slurm": {"mem": "lots"}}, "slurm.mem", "16G"),
        ({"slurm": {"partition": "gpu\n#SBATCH --x"}}, "slurm.partition", "one word"),
        ({"slurm": {"extra": ["exclusive"]}}, "slurm.extra", "options like --exclusive"),
        ({"setup": ["module load cuda\nrm -rf /"]}, "setup", "single line"),
        ({"slurm": {"cpus": 0}}, "slurm.cpus", "greater than or equal to 1"),
        ({"colour": "blue"}, "colour", "unknown field"),
    ],
)
def test_bad_fields_name_the_field(
    project: Path, change: dict[str, Any], field: str, words: str
) -> None:
    found = problems(write(project, {**TOPDOWN, **change}))
    assert field in found, found
    assert words in found[field]


def test_track_needs_models_from_this_job_or_a_manifest(project: Path) -> None:
    only_track = {"name": "t", "datasets": ["mice"], "training_types": ["track"]}
    assert "track needs models" in problems(write(project, only_track))["training_types"]
    pinned = {**only_track, "dependency_manifests": {"default": "{experiment_root}/{dataset}.json"}}
    stage = load_job(write(project, pinned)).stages[0]
    assert stage.manifest == "{experiment_root}/{dataset}.json" and stage.after == ()
    half = {
        **TOPDOWN,
        "training_types": ["centered_instance", "track"],
        "configs": {"centered_instance": "configs/centered_instance.yaml"},
        "stages": {},
    }
    assert "centroid model too" in problems(write(project, half))["training_types"]


def test_registry_problems_name_the_dataset_and_file(project: Path) -> None:
    (project / "datasets.json").write_text(
        json.dumps({"mice": {"labels": "data/gone.slp"}, "bad name": {"labels": "x"}})
    )
    found = problems(write(project, TOPDOWN))
    assert "Path not found" in found["datasets_registry.mice.labels"]
    assert "no spaces" in found["datasets_registry.bad name"]
    (project / "datasets.json").unlink()
    assert "datasets registry not found" in problems(write(project, TOPDOWN))["datasets_registry"]


def test_a_broken_registry_entry_only_stops_jobs_that_use_it(project: Path) -> None:
    registry = json.loads((project / "datasets.json").read_text())
    registry["flies"] = {"labels": "data/gone.slp"}
    registry["bad name"] = {"labels": "x"}
    (project / "datasets.json").write_text(json.dumps(registry))
    mice_only = load_job(write(project, {**TOPDOWN, "datasets": ["mice"]}))
    assert [d.name for d in mice_only.datasets] == ["mice"]
    found = problems(write(project, {**TOPDOWN, "datasets": ["mice", "flies"]}))
    assert "Path not found" in found["datasets_registry.flies.labels"]
    assert "datasets_registry.bad name" not in found  # not used by this job
    assert "datasets_registry.bad name" in problems(write(project, TOPDOWN))  # "all" uses it


def test_unreadable_job_files_are_clear(project: Path) -> None:
    path = project / "broken.json"
    path.write_text("{not json")
    assert "is not valid" in problems(path)["job"]
    assert "job file not found" in problems(project / "missing.json")["job"]
    path.write_text("[1, 2]")
    assert "must hold a mapping" in problems(path)["job"]


def test_stage_resources_fill_in_from_the_job() -> None:
    job = Resources(partition="gpu", time="01:00:00", extra=["--exclusive"])
    stage = Resources(time="02:00:00", gpus=1, extra=["--requeue"])
    merged = stage.over(job)
    assert merged.partition == "gpu" and merged.time == "02:00:00" and merged.gpus == 1
    assert merged.extra == ["--exclusive", "--requeue"]


@pytest.mark.parametrize("name", ["topdown.json", "single_instance.json", "topdown_eval.json"])
def test_the_example_job_files_load(tmp_path: Path, name: str) -> None:
    import shutil

    from sleap_rtc.demo.data import make_demo_data

    examples = Path(__file__).parents[2] / "examples" / "jobs"
    copy = tmp_path / "jobs"
    shutil.copytree(examples, copy, ignore=shutil.ignore_patterns("data"))
    for dataset in ("mice", "flies"):
        make_demo_data(copy / "data" / dataset)
    pipeline = load_job(copy / name)
    assert pipeline.stages
    assert all(s.dataset is None or s.dataset.labels.is_file() for s in pipeline.stages)
    assert all(s.config is None or s.config.is_file() for s in pipeline.stages)


def test_overrides_are_the_job_options_of_each_stage_s_kind(project: Path) -> None:
    """``extra_args`` keys come from the option table: per stage, its kind's options."""
    job = {
        **TOPDOWN,
        "extra_args": {"max_epochs": 2, "learning_rate": 0, "only_suggested_frames": "yes"},
        "stages": {"track": {"extra_args": {"max_epochs": 3, "peak_threshold": 0}}},
    }
    found = problems(write(project, job))
    assert found["extra_args.learning_rate"] == "learning_rate must be greater than 0"
    assert found["extra_args.only_suggested_frames"] == (
        'only_suggested_frames must be bool, got "yes"'
    )
    from sleap_rtc.jobs.options import job_file_options

    track_keys = sorted(job_file_options("track"))
    assert {"batch_size", "frames", "only_suggested_frames", "path_map"} <= set(track_keys)
    assert found["stages.track.extra_args.max_epochs"] == (
        f"unknown override 'max_epochs'; valid ones: {', '.join(track_keys)}"
    )
    assert "stages.track.extra_args.peak_threshold" not in found  # 0 is a threshold
    # A job that only trains may not set track's options.
    train_only = {**TOPDOWN, "training_types": ["centroid"], "stages": {}}
    train_only["configs"] = {"centroid": "configs/centroid.yaml"}
    train_only["extra_args"] = {"frames": "0-9"}
    train_keys = ", ".join(sorted(job_file_options("train")))
    assert problems(write(project, train_only))["extra_args.frames"] == (
        f"unknown override 'frames'; valid ones: {train_keys}"
    )


def test_path_maps_from_the_job_file_and_the_registry_reach_each_stage_s_spec(
    project: Path,
) -> None:
    from sleap_rtc.pipeline.sbatch import stage_spec

    registry = json.loads((project / "datasets.json").read_text())
    registry["mice"]["path_map"] = {"D:\\mice": "/vast/mice"}
    (project / "datasets.json").write_text(json.dumps(registry))
    job = {**TOPDOWN, "extra_args": {"path_map": {"/Volumes/lab": "/vast/lab"}}}
    job["stages"] = {"track": {"extra_args": {"path_map": [["/Volumes/t", "/vast/t"]]}}}
    pipeline = load_job(write(project, job))
    specs = {(s.dataset.name, s.name): stage_spec(s) for s in pipeline.stages}
    assert specs["mice", "centroid"].path_map == [
        ("/Volumes/lab", "/vast/lab"),
        ("D:\\mice", "/vast/mice"),
    ]
    assert specs["flies", "centroid"].path_map == [("/Volumes/lab", "/vast/lab")]
    assert specs["flies", "track"].path_map == [("/Volumes/t", "/vast/t")]


def test_bad_path_maps_in_a_job_file_or_registry_are_named(project: Path) -> None:
    registry = json.loads((project / "datasets.json").read_text())
    registry["mice"]["path_map"] = {"/Volumes/lab": "relative/folder"}
    (project / "datasets.json").write_text(json.dumps(registry))
    found = problems(write(project, {**TOPDOWN, "extra_args": {"path_map": ["/a", "/b"]}}))
    assert found["extra_args.path_map"].startswith("path_map must map OLD to NEW folders")
    assert "absolute folder on the worker" in found["datasets_registry.mice.path_map[0]"]


def test_schema_and_rule_problems_come_in_one_round(project: Path) -> None:
    """A bad type doesn't hide the rest: the fields that parse are checked too."""
    job = {
        **TOPDOWN,
        "datasets": ["mice", "nope"],  # a rule: not in the registry
        "slurm": {"mem": "lots"},  # schema
        "stages": {"track": {"retries": "many"}},  # schema, inside one stage
        "extra_args": {"max_epochs": 5, "bogus": 1},  # a rule: not a job option
    }
    found = problems(write(project, job))
    assert "slurm.mem" in found
    assert "stages.track.retries" in found
    assert "datasets[1]" in found and "not in the registry" in found["datasets[1]"]
    assert any(field.startswith("extra_args") for field in found)
