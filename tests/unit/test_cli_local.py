"""``sleap-rtc local``: rejections in the documented format and exit codes."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import yaml
from click.testing import CliRunner

from sleap_rtc.cli import cli
from tests.configs import MODEL_CONFIG
from tests.labels import write_labels

CONFIG = (
    "data_config:\n  train_labels_path: [../labels.slp]\n" + MODEL_CONFIG + "trainer_config: {}\n"
)


def _tree(tmp_path: Path) -> Path:
    (tmp_path / "proj" / "configs").mkdir(parents=True)
    (tmp_path / "proj" / "configs" / "c.yaml").write_text(CONFIG)
    write_labels(tmp_path / "proj" / "labels.slp")
    return tmp_path / "proj"


def test_rejection_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    proj = _tree(tmp_path)
    result = CliRunner().invoke(
        cli,
        [
            "local",
            "train",
            "--mount",
            f"{proj}:proj",
            "--config",
            "/vast/wrong/path.yaml",
            "--labels",
            str(proj / "nope.slp"),
            "--max-epochs",
            "0",
            "--dry-run",
        ],
    )
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Job rejected by worker:"
    assert "  - max_epochs: max_epochs is 0; it must be between 1 and 100000" in lines
    assert f"  - labels_path: Path not found: {proj / 'nope.slp'}" in lines
    assert any(
        line.startswith("  - config_path: Access denied: /vast/wrong/path.yaml") for line in lines
    )


def test_dry_run_prints_commands(tmp_path: Path) -> None:
    proj = _tree(tmp_path)

    def dry_run(run_name: str):  # type: ignore[no-untyped-def]
        args = [
            "local",
            "train",
            "--mount",
            f"{proj}:proj",
            "--models-dir",
            str(tmp_path / "m"),
            "--config",
            str(proj / "configs" / "c.yaml"),
            "--run-name",
            run_name,
            "--dry-run",
        ]
        return CliRunner().invoke(cli, args)

    result = dry_run("exp 1")
    assert result.exit_code == 2  # "exp 1" is not a valid run name
    assert "run_name must be" in result.output
    result = dry_run("exp1")
    assert result.exit_code == 0, result.output
    assert "job is valid" in result.output
    lines = result.output.splitlines()
    command = next(line for line in lines if " train --config " in line)
    argv = shlex.split(command)
    assert argv[1:3] == ["train", "--config"] and argv[3].endswith("1-c.yaml")
    # The effective config follows: the user's labels, resolved, and the run name.
    effective = yaml.safe_load("\n".join(lines[lines.index(command) + 2 :]))
    assert effective["data_config"]["train_labels_path"] == [str(proj / "labels.slp")]
    assert effective["trainer_config"]["run_name"] == "exp1"


def test_bad_mount_flag_names_the_flag(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["local", "track", "--mount", "relative/dir", "-d", "/x.slp", "-m", "/m", "--dry-run"]
    )
    assert result.exit_code == 2
    assert "--mount" in result.output and "absolute" in result.output


def test_jobs_list_without_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["local", "jobs", "list"])
    assert result.exit_code == 1
    assert "no jobs have run here yet" in result.output


def test_a_spec_file_runs_with_its_paths_relative_to_it(tmp_path: Path) -> None:
    proj = _tree(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    spec = {"kind": "train", "config_paths": ["../proj/configs/c.yaml"], "max_epochs": 3}
    (runs / "spec.json").write_text(json.dumps(spec))
    base = ["local", "train", "--mount", str(proj), "--models-dir", str(tmp_path / "m")]
    result = CliRunner().invoke(
        cli, [*base, "--spec", str(runs / "spec.json"), "--batch-size", "16", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    command = next(line for line in lines if " train --config " in line)
    effective = yaml.safe_load("\n".join(lines[lines.index(command) + 2 :]))
    # The file's max_epochs, and the flag given as well.
    assert effective["trainer_config"]["max_epochs"] == 3
    assert effective["trainer_config"]["train_data_loader"]["batch_size"] == 16
    # Without --spec, --config is required as before.
    missing = CliRunner().invoke(cli, [*base, "--dry-run"])
    assert missing.exit_code == 2 and "Missing option '--config' / '-c'." in missing.output


def test_a_spec_file_of_the_other_kind_or_with_bad_fields_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"kind": "train", "config_paths": ["/c.yaml"]}))
    other = CliRunner().invoke(cli, ["local", "track", "--spec", str(path), "--dry-run"])
    assert other.exit_code == 2
    assert "holds a train job; run it with `sleap-rtc local train`" in other.output
    path.write_text(json.dumps({"kind": "train", "config_paths": [], "epochs": 3}))
    bad = CliRunner().invoke(cli, ["local", "train", "--spec", str(path), "--dry-run"])
    assert bad.exit_code == 2 and bad.output.startswith("Invalid spec ")
    assert "  - epochs: unknown field 'epochs'" in bad.output


FAKE_SLEAP_NN = """#!/bin/bash
out=""
while [ $# -gt 0 ]; do [ "$1" = "--output_path" ] && out="$2"; shift; done
echo "predicting"
echo "done" > "$out"
"""


def test_json_prints_the_protocol_s_messages(tmp_path: Path) -> None:
    """``local --json`` speaks the remote CLI's vocabulary: the job protocol's messages."""
    from sleap_rtc.protocol.jobs import decode_worker

    data = tmp_path / "data"
    (data / "model").mkdir(parents=True)
    (data / "model" / "training_config.yaml").write_text("a: 1\n")
    (data / "model" / "best.ckpt").write_bytes(b"w")
    write_labels(data / "labels.slp")
    fake = tmp_path / "fake-sleap-nn"
    fake.write_text(FAKE_SLEAP_NN)
    fake.chmod(0o755)
    config = tmp_path / "worker.toml"
    config.write_text(f'sleap_nn_command = ["{fake}"]\nsandbox = "off"\n')
    args = ["local", "track", "--worker-config", str(config), "--mount", str(data), "--json"]
    model = ["-m", str(data / "model")]
    result = CliRunner().invoke(cli, [*args, "-d", str(data / "labels.slp"), *model])
    assert result.exit_code == 0, result.output
    messages = [decode_worker(line) for line in result.stdout.splitlines()]
    types = [m.type for m in messages]
    assert types[0] == "JOB_ACCEPTED" and messages[0].request_id == "local"
    assert set(types[1:-1]) == {"JOB_PROGRESS"} and types[-1] == "JOB_COMPLETE"
    assert ["predicting"] in [m.lines for m in messages[1:-1]]
    assert messages[-1].outputs == [str(data / "predictions.slp")]

    refused = CliRunner().invoke(cli, [*args, "-d", str(data / "nope.slp"), *model])
    assert refused.exit_code == 2
    (rejected,) = [decode_worker(line) for line in refused.stdout.splitlines()]
    assert rejected.type == "JOB_REJECTED" and rejected.job_id
    assert [(e.field, e.code) for e in rejected.errors] == [("data_path", "PATH_NOT_FOUND")]
