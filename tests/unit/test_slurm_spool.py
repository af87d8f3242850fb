"""The SLURM backend's pure parts: the spool event format, following a growing
file, the batch script and the environment a job inherits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sleap_rtc.engine.backend import EngineJob, Step
from sleap_rtc.engine.backends.slurm.script import job_environment, render_script
from sleap_rtc.engine.backends.slurm.settings import SlurmSettings
from sleap_rtc.engine.backends.slurm.spool import (
    SpoolFinished,
    SpoolLine,
    SpoolProgress,
    SpoolStep,
    Tail,
    decode,
    encode,
    read_job,
    write_job,
)
from sleap_rtc.jobs.events import TrainProgress
from sleap_rtc.worker.config import WorkerConfigError, load_worker_config


def _job() -> EngineJob:
    step = Step(
        name="centroid",
        kind="train",
        argv=["sleap-nn", "train", "--config", "/data/it's here/c.yaml"],
        index=1,
        total=1,
        total_epochs=5,
        output=Path("/models/run"),
    )
    return EngineJob(job_id="abc123", kind="train", steps=[step], env={"A": "1"})


def test_events_round_trip() -> None:
    events = [
        SpoolStep(index=1, pid=42),
        SpoolLine(text="Epoch 1 ✓"),
        SpoolProgress(progress=TrainProgress(epoch=1, total_epochs=5, loss=0.5)),
        SpoolFinished(state="COMPLETE", exit_code=0, outputs=["/models/run"]),
    ]
    assert [decode(encode(e).rstrip(b"\n")) for e in events] == events


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b'{"type": "finished", "state": "DONE"}',  # not a state
        b'{"type": "step", "index": 0, "pid": 1}',  # steps count from 1
        b'{"type": "log", "text": "x", "extra": 1}',  # unknown field
        b'{"type": "exec", "argv": ["rm", "-rf", "/"]}',  # not an event
        json.dumps({"type": "log", "text": "x" * 300_000}).encode(),  # too long
    ],
)
def test_invalid_event_lines_are_refused(line: bytes) -> None:
    assert decode(line) is None


def test_tail_returns_complete_lines_only_and_skips_overlong_ones(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    tail = Tail(path, max_line=10)
    assert tail.read() == []  # no file yet
    path.write_bytes(b"one\ntw")
    assert tail.read() == [b"one"]
    with path.open("ab") as f:
        f.write(b"o\n" + b"x" * 8)
    assert tail.read() == [b"two"]
    with path.open("ab") as f:
        f.write(b"y" * 8)  # the line is now over 10 bytes: dropped
    assert tail.read() == []
    with path.open("ab") as f:
        f.write(b"zz\nfine\n")
    assert tail.read() == [b"fine"]


def test_engine_job_survives_the_spool(tmp_path: Path) -> None:
    job = _job()
    write_job(tmp_path, job)
    assert read_job(tmp_path) == job


def test_script_runs_setup_under_set_e_then_the_job(tmp_path: Path) -> None:
    settings = SlurmSettings(
        partition="gpu",
        time="02:00:00",
        gpus=1,
        extra=["--exclusive"],
        setup=["module load cuda/12.1", "source '/envs/my env/bin/activate'"],
        python=["/opt/py 3/bin/python"],
    )
    script = render_script(_job(), tmp_path / "sp ool", settings, 5)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    header = [line for line in lines if line.startswith("#SBATCH")]
    assert header == [
        "#SBATCH --partition=gpu",
        "#SBATCH --time=02:00:00",
        "#SBATCH --gpus=1",
        "#SBATCH --exclusive",
    ]
    body = lines[lines.index("set -euo pipefail") :]
    assert body[1:3] == settings.setup
    assert body[3] == (
        f"exec '/opt/py 3/bin/python' -m sleap_rtc.engine.backends.slurm.node '{tmp_path}/sp ool' "
        "--cancel-grace-s 5"
    )


def test_default_python_is_the_workers() -> None:
    script = render_script(_job(), Path("/spool/x"), SlurmSettings(), 5)
    assert f"exec {sys.executable} -m sleap_rtc.engine.backends.slurm.node /spool/x" in script


def test_secrets_are_not_passed_to_jobs() -> None:
    env = job_environment(
        {"PATH": "/bin", "SLEAP_RTC_WORKER_KEY": "srk_secret", "SLEAP_RTC_DATABASE_URL": "pg://"}
    )
    assert env == {"PATH": "/bin"}


def test_worker_config_reads_a_slurm_table(tmp_path: Path) -> None:
    toml = tmp_path / "worker.toml"
    toml.write_text(
        'backend = "slurm"\n[slurm]\npartition = "gpu"\ngpus = 2\nsetup = ["ml cuda"]\n'
    )
    config = load_worker_config(toml)
    assert config.backend == "slurm"
    assert config.backend_settings().directives() == ["--partition=gpu", "--gpus=2"]
    assert config.backend_settings().setup == ["ml cuda"]


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ('partition = "two words"', "slurm.partition"),
        ('time = "soon"', "slurm.time"),
        ('setup = ["a\\nb"]', "slurm.setup"),
        ('extra = ["exclusive"]', "slurm.extra"),
        ("poll_interval_s = 0", "slurm.poll_interval_s"),
        ('queue = "gpu"', "slurm.queue"),
    ],
)
def test_bad_slurm_settings_name_the_field(tmp_path: Path, table: str, field: str) -> None:
    toml = tmp_path / "worker.toml"
    toml.write_text(f'backend = "slurm"\n[slurm]\n{table}\n')
    with pytest.raises(WorkerConfigError) as caught:
        load_worker_config(toml)
    assert field in str(caught.value), caught.value


def test_the_slurm_backend_refuses_a_machine_without_slurm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sleap_rtc.engine.backends.slurm.tools import SlurmError
    from sleap_rtc.worker.config import WorkerConfig

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    config = WorkerConfig(backend="slurm", state_dir=tmp_path / "state")
    with pytest.raises(SlurmError, match="sbatch is not on PATH; run the worker on a SLURM"):
        config.build_backend()
    assert WorkerConfig(state_dir=tmp_path / "state").build_backend().name == "local"
