"""The CLI across a room, for what users ran into: another member's job, a worker that went
away mid-job, a run name that was taken, an incomplete model folder.

Real server, real workers, real sleap-nn; the CLI runs as a user runs it.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sleap_rtc.client.browse import BrowserModel, SessionSource
from sleap_rtc.client.jobs import WorkerSession
from sleap_rtc.client.pathfix import likely_models
from tests.servers import Proc, Room, cli_env, ok, open_room, start_worker
from tests.tmux import Terminal, need_tmux

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("loopback_candidates")]

ICE = {"SLEAP_RTC_ICE_HOSTS": "127.0.0.1"}


@pytest.fixture(scope="module")
def room(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    with open_room(tmp_path_factory.mktemp("fixes"), demo_root) as opened:
        yield opened


def config(demo_dir: Path) -> str:
    return str(demo_dir / "configs" / "single_instance.yaml")


def train_client(room: Room, user: str, worker_id: str, demo_dir: Path, epochs: int) -> Proc:
    argv = [sys.executable, "-m", "sleap_rtc", "train", "--room", "lab", "--json"]
    argv += ["--worker-id", worker_id, "--config", config(demo_dir), "--max-epochs", str(epochs)]
    return Proc(argv, cli_env(room.users.home(user), **ICE), f"train client ({user})")


def accepted(client: Proc) -> str:
    job_id: str = json.loads(client.wait_line(r'"JOB_ACCEPTED"', timeout=120).string)["job_id"]
    client.wait_line(r'"progress"', timeout=180)  # training has started
    return job_id


def test_a_member_attached_to_another_s_job_detaches_on_ctrl_c(
    room: Room, demo_dir: Path, tmp_path: Path
) -> None:
    need_tmux()
    alice = train_client(room, "alice", room.worker_id, demo_dir, epochs=200)
    bob: Proc | None = None
    try:
        job_id = accepted(alice)
        argv = [sys.executable, "-m", "sleap_rtc", "jobs", "attach", job_id, "--room", "lab"]
        bob = Proc([*argv, "--json"], cli_env(room.users.home("bob"), **ICE), "attach (bob)")
        bob.wait_line(r'"JOB_PROGRESS"', timeout=120)
        bob.signal(signal.SIGINT)
        assert bob.process.wait(timeout=60) == 130, bob.output()
        said = "\n".join(bob.stderr)
        assert f"Job {job_id} belongs to alice; only they can stop or cancel it" in said
        assert f"detached; job {job_id} keeps running" in said
        assert "Error" not in said, said
        status = room.users.json("alice", "jobs", "status", job_id, "--room", "lab")
        assert status["state"] == "RUNNING" and status["owner"] == "alice"

        # On a terminal, bob is asked, and offered detach (or watch) only.
        with Terminal(tmp_path / "bob-attach") as term:
            term.start([*argv, "--no-logs"], cli_env(room.users.home("bob"), **ICE))
            term.wait_for(r"train single_instance", 120)
            term.send("C-c")
            screen = term.wait_for(r"or \[w\]atch on \[w\]:$")
            said = " ".join(screen.split())
            assert f"Job {job_id} belongs to alice; only they can stop or cancel it." in said
            assert "[d]etach (job keeps running), or [w]atch on" in said
            assert "[s]top" not in said and "[c]ancel" not in said
            term.type("d")
            term.send("Enter")
            assert term.exit_code(timeout=60) == 130, term.screen()
            assert f"detached; job {job_id} keeps running" in " ".join(term.screen().split())
        status = room.users.json("alice", "jobs", "status", job_id, "--room", "lab")
        assert status["state"] == "RUNNING"

        # Its owner still can: without a terminal, Ctrl-C cancels.
        alice.signal(signal.SIGINT)
        assert alice.process.wait(timeout=60) == 130, alice.output()
        status = room.users.json("alice", "jobs", "status", job_id, "--room", "lab")
        assert status["state"] == "CANCELLED"
    finally:
        alice.stop()
        if bob is not None:
            bob.stop()


def test_a_worker_whose_key_is_revoked_mid_job_is_reported_offline(
    room: Room, demo_root: Path, demo_dir: Path, tmp_path: Path
) -> None:
    key = room.users.json("alice", "keys", "create", "--room", "lab", "--name", "k-rev")["secret"]
    worker = start_worker(
        tmp_path / "rev-home",
        room.server.url,
        key,
        "lab",
        "rev-cpu",
        demo_root,
        "--models-dir",
        str(demo_root / "models"),
        env=ICE,
    )
    client: Proc | None = None
    try:
        worker.wait_line(r"online in room lab", timeout=90)
        listed = room.users.json("alice", "rooms", "workers", "--room", "lab")
        worker_id = next(w["id"] for w in listed if w["name"] == "rev-cpu")
        client = train_client(room, "alice", worker_id, demo_dir, epochs=200)
        job_id = accepted(client)
        ok(room.users.run("alice", "keys", "revoke", "--room", "lab", "k-rev"))
        assert worker.process.wait(timeout=30) == 3, worker.output()
        assert client.process.wait(timeout=90) == 1, client.output()
        said = " ".join(" ".join(client.stderr).split())  # one line, as rich may wrap it
        assert f"Worker rev-cpu ({worker_id}) went offline in room lab" in said, said
        assert f"Job {job_id}'s record and log are kept on the worker" in said
        assert "run `sleap-rtc rooms workers --room lab` to see when it is back" in said
        assert f"then `sleap-rtc jobs attach {job_id} --room lab`" in said
        assert "may still be running" not in said
    finally:
        if client is not None:
            client.stop()
        worker.stop()


async def test_a_taken_run_name_is_said_and_only_complete_models_are_offered(
    room: Room, demo_root: Path, demo_dir: Path
) -> None:
    name = f"fixrun{uuid.uuid4().hex[:6]}"
    models = demo_root / "models"
    old = models / name
    old.mkdir(parents=True)
    (old / "best.ckpt").write_bytes(b"the old model")
    result = room.users.run(
        "alice",
        "train",
        "--room",
        "lab",
        "--worker-id",
        room.worker_id,
        "--config",
        config(demo_dir),
        "--max-epochs",
        "1",
        "--run-name",
        name,
        timeout=600,
        **ICE,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert f"note: run name {name} is taken; this run is {name}-2" in text, result.stdout
    assert (models / f"{name}-2" / "best.ckpt").is_file()
    assert (old / "best.ckpt").read_bytes() == b"the old model"
    jobs = room.users.json("alice", "jobs", "list", "--room", "lab")
    newest = max(jobs, key=lambda job: job["created_at"])["job_id"]
    logs = room.users.run(
        "alice", "jobs", "logs", newest, "--room", "lab", "--tail", "10000", **ICE
    )
    assert f"[sleap-rtc] note: run name {name} is taken; this run is {name}-2" in logs.stdout

    # A run cancelled before it saved best weights leaves its folder; it stays on disk,
    # but it is no model to offer.
    cut = models / f"{name}-3"
    cut.mkdir()
    for file in ("training_config.yaml", "initial_config.yaml"):
        (cut / file).write_text("x: 1\n")
    async with (
        room.client("bob") as client,
        await WorkerSession.open(client, "lab", room.worker_id, transport="relay") as session,
    ):
        source = SessionSource(session)
        found = await likely_models(source, f"{name}-3")
        assert str(models / f"{name}-2") in found and str(cut) not in found
        browser = BrowserModel(source, want="dir", models=True)
        await browser.start(str(models))
        await browser.type(name)
        notes = {row.name: row.note for row in browser.rows}
        assert notes[f"{name}-2"] == "model" and notes[f"{name}-3"] == "incomplete"
        await browser.open(str(cut))
        assert await browser.enter() is None and "incomplete model" in browser.message
    assert cut.is_dir()


def test_typing_in_the_folder_browser_filters_the_folders(
    room: Room, demo_root: Path, tmp_path: Path
) -> None:
    argv = [sys.executable, "-m", "sleap_rtc", "browse", "--room", "lab", "--folders"]
    with Terminal(tmp_path / "folders") as term:
        term.start([*argv, "--start", str(demo_root)], cli_env(room.users.home("bob"), **ICE))
        term.wait_for(r"\[Esc\] Cancel", 60)
        term.type("mod")
        screen = term.wait_for(r"^Filter: mod_")
        assert "Folders only" in screen
        rows = [line for line in screen.splitlines() if line.startswith("> ")]
        assert len(rows) == 1 and rows[0].endswith("models/"), screen
        assert "lab data" not in screen  # filtered out
        term.send("Enter")  # open models/: its subfolders, unfiltered
        screen = term.wait_for(rf"Path: {re.escape(str(demo_root / 'models'))}$")
        assert "Filter: _" in screen
        term.send("Enter")  # [ use this folder ]
        assert term.exit_code() == 0, term.screen()
        assert str(demo_root / "models") in term.screen().splitlines()
