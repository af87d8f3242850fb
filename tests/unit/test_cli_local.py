"""``sleap-rtc local``: rejections in the documented format and exit codes."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml
from click.testing import CliRunner

from sleap_rtc.cli import cli

CONFIG = (
    "data_config:\n  train_labels_path: [../labels.slp]\nmodel_config: {}\ntrainer_config: {}\n"
)


def _tree(tmp_path: Path) -> Path:
    (tmp_path / "proj" / "configs").mkdir(parents=True)
    (tmp_path / "proj" / "configs" / "c.yaml").write_text(CONFIG)
    (tmp_path / "proj" / "labels.slp").write_bytes(b"x")
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
