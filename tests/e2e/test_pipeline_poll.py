"""``pipeline run --submit --chain=poll`` on a real SLURM: each stage goes in as a plain
job once its parents completed; a failure keeps its dependents from ever being submitted.

The stages are trivial (their generated scripts edited to sleep a moment and write
what a real stage leaves behind: a model folder with its manifest, predictions), so
a rerun sees which stages are done.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from sleap_rtc.pipeline.driver import STOPPED_REASON
from sleap_rtc.pipeline.sbatch import INPUTS_FILE, NEXT_INPUTS
from tests.configs import STAGE_CONFIG
from tests.labels import write_labels
from tests.slurm import wait_states

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("slurm")]
STAGES = ("centroid", "centered_instance", "track")
JOB = {
    "name": "td",
    "datasets": ["mice", "flies"],
    "training_types": list(STAGES),
    "configs": {
        "centroid": "configs/centroid.yaml",
        "centered_instance": "configs/centered_instance.yaml",
    },
    "optimize_batch_size": False,
    "slurm": {"time": "00:05:00", "mem": "100M", "cpus": 1},
}


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sleap_rtc", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def trivial(script: Path, *, fail: bool = False, sleep: float = 1) -> None:
    """Keep the script's header (resources, root, inputs); sleep, then leave what the
    stage would, and its manifest (or exit 7)."""
    text = script.read_text()
    training = script.stem != "track"
    name = NEXT_INPUTS if training else INPUTS_FILE
    start = text.index(f"{name} <<'JSON'\n")
    end = text.index("\nJSON\n", start) + len("\nJSON\n")
    head, body = text[:end], text[end:]
    old = body.splitlines()
    manifest = [i for i, line in enumerate(old) if "pipeline manifest write" in line]
    assert manifest, "the generated script changed shape"
    lines = [f"sleep {sleep}", *(["exit 7"] if fail else [])]
    if training:
        lines += [
            f'mv "$ARTIFACTS"/{NEXT_INPUTS} "$ARTIFACTS"/{INPUTS_FILE}',
            'mkdir -p "$ARTIFACTS/model"',
            'echo trained > "$ARTIFACTS/model/best.ckpt"',
        ]
    else:
        lines.append('touch "$ARTIFACTS/predictions.slp"')
    lines += old[manifest[0] :]  # the command that writes it, to the end
    script.write_text(head + "# trivial stand-in\n" + "\n".join(lines) + "\n")


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.job = str(root / "job.json")
        self.scripts = root / "slurm_jobs"
        self.drivers: list[subprocess.Popen[str]] = []

    def script(self, dataset: str, stage: str) -> Path:
        return self.scripts / "td" / dataset / f"{stage}.sbatch"

    def run_args(self, *extra: str) -> list[str]:
        return [
            "pipeline",
            "run",
            "--job",
            self.job,
            "--output-dir",
            str(self.root),
            "--submit",
            "--chain=poll",
            "--poll-interval",
            "0.5",
            *extra,
        ]

    def drive(self) -> tuple[int, dict[tuple[str, str], dict[str, object]], str]:
        """Run the driver to its end: exit code, per-stage results, event lines."""
        result = cli(*self.run_args("--json"), cwd=self.root)
        assert result.stdout, result.stderr
        found = {(r["dataset"], r["stage"]): r for r in json.loads(result.stdout)}
        return result.returncode, found, result.stderr

    def record(self) -> dict[str, dict[str, object]]:
        return json.loads((self.scripts / "td" / "runs.json").read_text())

    def status(self) -> dict[tuple[str, str], dict[str, object]]:
        args = ["pipeline", "status", "--job", self.job, "--output-dir", str(self.root), "--json"]
        result = cli(*args, cwd=self.root)
        assert result.returncode == 0, result.stderr
        return {(s["dataset"], s["stage"]): s for s in json.loads(result.stdout)}


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    root = tmp_path / "lab"
    (root / "configs").mkdir(parents=True)
    for stage in ("centroid", "centered_instance"):
        (root / "configs" / f"{stage}.yaml").write_text(STAGE_CONFIG)
    for dataset in JOB["datasets"]:
        write_labels(root / f"{dataset}.slp")
    registry = {d: {"labels": f"{d}.slp"} for d in JOB["datasets"]}
    (root / "datasets.json").write_text(json.dumps(registry))
    (root / "job.json").write_text(json.dumps(JOB))
    made = Project(root)
    generated = cli(
        "pipeline", "run", "--job", made.job, "--generate-only", "--output-dir", str(root), cwd=root
    )
    assert generated.returncode == 0, generated.stderr
    for script in made.scripts.rglob("*.sbatch"):
        trivial(script)
    yield made
    # Failed or not: no driver left behind, no job of this project left queued.
    for driver in made.drivers:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=30)
    try:
        record = made.record()
    except FileNotFoundError:
        return
    ids = [str(e["job_id"]) for e in record.values() if e.get("job_id")]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def sacct_rows(job_ids: list[str]) -> dict[str, dict[str, str]]:
    fields = ["JobID", "State", "Submit", "End", "SubmitLine"]
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", ",".join(fields), "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    rows = {}
    for line in out.splitlines():
        row = dict(zip(fields, line.split("|", len(fields) - 1), strict=True))
        rows[row["JobID"]] = row
    return rows


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def jobs_named(name: str, workdir: Path, since: float) -> list[str]:
    """Jobs called ``name`` submitted from ``workdir`` since ``since``, whatever their state."""
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since - 1))
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,WorkDir", "--name", name, "-S", start],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return [line.split("|")[0] for line in out.splitlines() if line.endswith(f"|{workdir}")]


def test_each_track_goes_in_after_both_its_parents_ended_without_a_dependency(
    project: Project,
) -> None:
    code, found, events = project.drive()
    assert code == 0, events
    assert {r["state"] for r in found.values()} == {"COMPLETED"}, found
    ids = {key: str(r["job_id"]) for key, r in found.items()}
    assert wait_states(list(ids.values()), {"COMPLETED"}, timeout=60)
    rows = sacct_rows(list(ids.values()))
    for dataset in JOB["datasets"]:
        track = rows[ids[(dataset, "track")]]
        for parent in ("centroid", "centered_instance"):
            assert when(track["Submit"]) >= when(rows[ids[(dataset, parent)]]["End"])
    for row in rows.values():
        assert "--dependency" not in row["SubmitLine"], row
    entry = project.record()["mice/track"]
    assert entry["after"] == [] and entry["chain"] == "poll"
    assert entry["parents"] == ["centroid", "centered_instance"]
    # One line per event, then the summary.
    lines = events.splitlines()
    assert lines[-1] == "6 stage(s): 6 completed"
    mice_track = ids[("mice", "track")]
    submitted = [line for line in lines if f"submitted job {mice_track}" in line]
    assert len(submitted) == 1 and "(centroid, centered_instance done)" in submitted[0]
    assert sum("COMPLETED" in line for line in lines[:-1]) == 6


def test_a_failed_parent_keeps_its_track_from_being_submitted_and_a_rerun_fills_the_gap(
    project: Project,
) -> None:
    broken = project.script("flies", "centroid")
    trivial(broken, fail=True)
    started = time.time()
    code, found, events = project.drive()
    assert code == 1, events
    failed_id = str(found[("flies", "centroid")]["job_id"])
    assert {key: r["state"] for key, r in found.items()} == {
        ("flies", "centroid"): "FAILED",
        ("flies", "centered_instance"): "COMPLETED",
        ("flies", "track"): "NOT SUBMITTED",
        ("mice", "centroid"): "COMPLETED",
        ("mice", "centered_instance"): "COMPLETED",
        ("mice", "track"): "COMPLETED",
    }
    reason = f"parent centroid FAILED (job {failed_id})"
    assert found[("flies", "track")]["reason"] == reason
    assert found[("flies", "track")]["job_id"] is None
    assert f"flies        track              not submitted: {reason}" in events
    assert events.splitlines()[-1] == "6 stage(s): 4 completed, 1 FAILED, 1 not submitted"
    entry = project.record()["flies/track"]
    assert entry["state"] == "NOT SUBMITTED" and entry["reason"] == reason
    assert entry["blocked_by"] == {"stage": "centroid", "job_id": failed_id, "state": "FAILED"}
    shown = project.status()[("flies", "track")]
    assert shown["state"] == "NOT SUBMITTED" and shown["reason"] == reason

    # Fixed, and the same command again: only what is missing is submitted.
    trivial(broken)
    code, found, events = project.drive()
    assert code == 0, events
    assert {key: r["state"] for key, r in found.items()} == {
        ("flies", "centroid"): "COMPLETED",
        ("flies", "centered_instance"): "DONE",
        ("flies", "track"): "COMPLETED",
        ("mice", "centroid"): "DONE",
        ("mice", "centered_instance"): "DONE",
        ("mice", "track"): "DONE",
    }
    assert found[("flies", "centroid")]["job_id"] != failed_id
    assert sum("submitted job" in line for line in events.splitlines()) == 2
    assert events.splitlines()[-1] == "6 stage(s): 2 completed, 4 already done"
    # Accounting holds one track job for flies: the rerun's (sacct may lag a moment).
    deadline = time.monotonic() + 30
    while not (tracks := jobs_named("td/flies/track", project.root, started)):
        assert time.monotonic() < deadline, "the rerun's track job is not in sacct"
        time.sleep(0.5)
    assert tracks == [found[("flies", "track")]["job_id"]]


def test_sigterm_leaves_the_jobs_running_and_the_same_command_resumes(project: Project) -> None:
    trivial(project.script("mice", "centroid"), sleep=12)
    driver = subprocess.Popen(
        [sys.executable, "-m", "sleap_rtc", *project.run_args()],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    project.drivers.append(driver)
    # From another process, `pipeline status` sees the track waiting for this driver.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            waiting = project.status()[("mice", "track")]
        except (FileNotFoundError, AssertionError):
            waiting = {}
        if waiting.get("state") == "WAITING":
            break
        time.sleep(0.5)
    assert waiting.get("state") == "WAITING", waiting
    assert waiting["job_id"] is None
    assert waiting["reason"] == (
        f"submitted when centroid, centered_instance complete (driver pid {driver.pid})"
    )

    driver.send_signal(signal.SIGTERM)
    out, err = driver.communicate(timeout=60)
    assert driver.returncode == 128 + signal.SIGTERM, err
    assert "left queued or running" in out and "Run the same command again" in out
    entry = project.record()["mice/track"]
    assert entry["state"] == "NOT SUBMITTED" and entry["reason"] == STOPPED_REASON
    centroid = str(project.record()["mice/centroid"]["job_id"])
    assert project.status()[("mice", "centroid")]["state"] in ("PENDING", "RUNNING")
    assert project.status()[("mice", "track")]["state"] == "NOT SUBMITTED"

    code, found, events = project.drive()
    assert code == 0, events
    assert {r["state"] for r in found.values()} <= {"COMPLETED", "DONE"}
    mice = found[("mice", "centroid")]
    # Followed, not submitted again (or done already, if it finished in between).
    assert mice["job_id"] == centroid or mice["state"] == "DONE"
    if mice["state"] == "COMPLETED":
        assert f"as job {centroid}" in events
    assert found[("mice", "track")]["state"] == "COMPLETED"
