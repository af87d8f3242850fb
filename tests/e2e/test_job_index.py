"""The server's job index with real processes: a real worker trains with real sleap-nn,
reports to a real server, and the CLI reads the index through restarts, an offline
worker and a job that ended while the worker couldn't reach the server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sleap_rtc.client import ServerClient
from sleap_rtc.client.jobs import WorkerSession
from sleap_rtc.jobs.specs import TrainSpec
from tests.servers import Room, ok, open_room, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("loopback_candidates")]

ICE = {"SLEAP_RTC_ICE_HOSTS": "127.0.0.1"}


@pytest.fixture(scope="module")
def room(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    with open_room(tmp_path_factory.mktemp("index"), demo_root) as opened:
        yield opened


def config(demo_dir: Path) -> str:
    return str(demo_dir / "configs" / "single_instance.yaml")


def indexed(room: Room, job_id: str, user: str = "alice") -> dict[str, Any] | None:
    jobs = room.users.json(user, "jobs", "list", "--room", "lab", "--json")
    return next((j for j in jobs if j["job_id"] == job_id), None)


def test_a_real_train_is_quiet_indexed_shown_and_downloadable_later(
    room: Room, demo_dir: Path, tmp_path: Path
) -> None:
    args = ["train", "--room", "lab", "--config", config(demo_dir), "--max-epochs", "3"]
    result = room.users.run("alice", *args, "--run-name", "indexed", timeout=600, **ICE)
    out = ok(result)
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) <= 15, out
    job_id = re.search(r"job (\w+) accepted by lab-cpu", out).group(1)  # type: ignore[union-attr]
    assert re.search(rf"job {job_id} complete in \d+:\d\d:\d\d", out), out
    assert re.search(r"model: \S+/indexed\b", out), out
    assert "3 epochs" in out and "best val loss" in out, out
    assert "next: sleap-rtc track --room lab --data-path " in out, out
    assert f"next: sleap-rtc jobs download {job_id} . --room lab" in out, out

    job = wait_for(
        lambda: (j := indexed(room, job_id)) and j["state"] == "COMPLETE" and j,
        30,
        "the completed job in the index",
    )
    assert job["owner"] == "alice" and job["worker_name"] == "lab-cpu"
    assert job["worker_status"] in ("online", "busy") and job["kind"] == "train"
    assert job["results"][0]["epochs"] == 3 and job["elapsed_s"] > 0
    assert [h["state"] for h in job["history"]] == ["QUEUED", "RUNNING", "COMPLETE"]

    # Another member reads it by a prefix of its id; the table has the columns.
    status = ok(room.users.run("bob", "jobs", "status", job_id[:5], "--room", "lab"))
    assert f"job {job_id} (train, alice): COMPLETE" in status, status
    table = ok(room.users.run("bob", "jobs", "list", "--room", "lab", "--state", "complete"))
    assert job_id in table and "3 epochs" in table and "lab-cpu" in table, table

    shown = room.users.json("alice", "jobs", "show", job_id[:6], "--room", "lab", "--json")
    assert [p["epoch"] for p in shown["points"]] == [1, 2, 3]
    assert all(p["loss"] is not None for p in shown["points"])
    chart = ok(room.users.run("alice", "jobs", "show", job_id[:6], "--room", "lab"))
    assert "loss" in chart and "val loss" in chart and "epoch" in chart, chart

    # The model, fetched long after the job ended.
    dest = tmp_path / "fetched"
    fetched = ok(room.users.run("bob", "jobs", "download", job_id[:6], str(dest), "--room", "lab"))
    assert (dest / "indexed" / "best.ckpt").is_file(), fetched
    assert "downloaded:" in fetched

    # The index survives a server restart.
    room.server.restart()
    again = wait_for(lambda: indexed(room, job_id), 30, "the job after a server restart")
    assert again["state"] == "COMPLETE" and again["results"] == job["results"]

    # An ambiguous or unknown id is a usage error that says what to do.
    missing = room.users.run("alice", "jobs", "status", "ffffffffffff", "--room", "lab")
    text = missing.stderr + missing.stdout
    assert missing.returncode == 2 and "no job 'ffffffffffff' in room lab" in text, text


async def test_a_job_that_ends_while_the_server_is_down_reaches_the_index(
    room: Room, demo_dir: Path
) -> None:
    from sleap_rtc.client.credentials import CredentialStore

    store = CredentialStore(room.users.home("alice") / "config" / "credentials.json")
    online = wait_for(
        lambda: [
            w
            for w in room.users.json("alice", "rooms", "workers", "--room", "lab")
            if w["status"] != "offline"
        ],
        90,
        "the worker online (it reconnects after the last test's server restart)",
    )
    async with (
        ServerClient(room.server.url, store=store) as alice,
        await WorkerSession.open(alice, "lab", online[0]["id"]) as session,
    ):
        handle = await session.submit(
            TrainSpec(config_paths=[config(demo_dir)], max_epochs=4, run_name="offline-end")
        )
        job_id = handle.job_id
    # The whole job runs while the server is down: sleap-nn has barely started.
    room.server.stop()
    ended = re.compile(rf"job {job_id} \(train\) complete")
    wait_for(
        lambda: any(ended.search(line) for line in room.worker.stderr),
        600,
        "the job's end on the worker while the server is down",
        interval=1,
    )
    room.server.start()

    done = wait_for(
        lambda: (j := indexed(room, job_id)) and j["state"] == "COMPLETE" and j,
        90,
        "the job's end reported after the worker reconnected",
    )
    assert done["results"][0]["epochs"] == 4
    assert [h["state"] for h in done["history"]] == ["QUEUED", "RUNNING", "COMPLETE"]
    shown = room.users.json("alice", "jobs", "show", job_id, "--room", "lab", "--json")
    assert [p["epoch"] for p in shown["points"]] == [1, 2, 3, 4]


def test_an_offline_workers_jobs_still_list_marked_offline(room: Room) -> None:
    jobs = room.users.json("alice", "jobs", "list", "--room", "lab", "--json")
    assert jobs, "the earlier tests' jobs are indexed"
    room.worker.stop()
    try:
        offline = wait_for(
            lambda: (
                (js := room.users.json("alice", "jobs", "list", "--room", "lab", "--json"))
                and all(j["worker_status"] == "offline" for j in js)
                and js
            ),
            30,
            "every job marked offline",
        )
        assert {j["job_id"] for j in offline} == {j["job_id"] for j in jobs}
        table = ok(room.users.run("alice", "jobs", "list", "--room", "lab", "--worker", "lab-cpu"))
        assert all(j["job_id"] in table for j in jobs), table
        # What needs the worker says it is offline, not "no such job".
        attach = room.users.run("alice", "jobs", "logs", jobs[0]["job_id"][:6], "--room", "lab")
        text = attach.stdout + attach.stderr
        assert attach.returncode != 0 and "which is offline" in text, text
        # A stranger's room listing says nothing about this room.
        room.users.add("mallory")
        stranger = room.users.run("mallory", "jobs", "list", "--room", "lab")
        assert stranger.returncode == 2 and jobs[0]["job_id"] not in stranger.stdout
    finally:
        room.restart_worker()
