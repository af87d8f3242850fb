"""Notifications with real processes: a real server posts to a real HTTP receiver when a
real worker's real training ends; the hook is set with the real CLI; a failing hook is
retried; a server that doesn't allow private addresses won't post to one."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hooks import SECRET_PATH, Receiver, receiver
from tests.servers import Room, ServerProcess, Users, ok, open_room, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("loopback_candidates")]

ICE = {"SLEAP_RTC_ICE_HOSTS": "127.0.0.1"}
#: How long to keep listening for a post that must not come.
QUIET_S = 3.0


@pytest.fixture(scope="module")
def hook() -> Iterator[Receiver]:
    with receiver() as opened:
        yield opened


@pytest.fixture(scope="module")
def room(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    root = tmp_path_factory.mktemp("notify")
    with open_room(root, demo_root, server_args=("--allow-private-webhooks",)) as opened:
        yield opened


def train(room: Room, demo_dir: Path, *extra: str) -> str:
    config = str(demo_dir / "configs" / "single_instance.yaml")
    args = ["train", "--room", "lab", "--config", config, "--max-epochs", "1", *extra]
    out = ok(room.users.run("alice", *args, timeout=600, **ICE))
    return re.search(r"job (\w+) accepted by lab-cpu", out).group(1)  # type: ignore[union-attr]


def indexed(room: Room, job_id: str) -> dict[str, Any] | None:
    jobs = room.users.json("alice", "jobs", "list", "--room", "lab")
    return next((j for j in jobs if j["job_id"] == job_id), None)


def test_a_job_that_ends_is_posted_once_and_no_notify_keeps_one_quiet(
    room: Room, hook: Receiver, demo_dir: Path
) -> None:
    where = f"http://127.0.0.1:{hook.port}"
    out = ok(room.users.run("alice", "notify", "set", hook.url))
    assert f"posts to {where}/… when a job ends" in out and SECRET_PATH not in out, out
    shown = ok(room.users.run("alice", "notify", "show"))
    assert f"your webhook posts to {where}/…" in shown and SECRET_PATH not in shown
    quiet = ok(room.users.run("bob", "notify", "show", "--room", "lab"))
    assert "room lab has no webhook" in quiet, quiet

    job_id = train(room, demo_dir)
    (post,) = hook.wait(1, 60)
    time.sleep(QUIET_S)
    assert len(hook.posts) == 1, hook.bodies()
    assert post.path == SECRET_PATH and post.headers["content-type"] == "application/json"
    record = post.body["sleap_rtc"]
    assert record["job_id"] == job_id and record["state"] == "COMPLETE"
    assert record["owner"] == "alice" and record["worker"] == "lab-cpu" and record["room"] == "lab"
    assert record["kind"] == "train" and record["elapsed_s"] > 0 and record["outputs"]
    text = post.body["text"]
    assert text.startswith(f"sleap-rtc: train job {job_id} COMPLETE in 0:"), text
    assert "(owner alice, worker lab-cpu, room lab)" in text and "best val loss" in text, text

    silent = train(room, demo_dir, "--no-notify")
    wait_for(
        lambda: (j := indexed(room, silent)) and j["state"] == "COMPLETE" and j,
        30,
        "the quiet job's end in the index",
    )
    assert indexed(room, silent)["notify"] is False  # type: ignore[index]
    time.sleep(QUIET_S)
    assert len(hook.posts) == 1, hook.bodies()

    log = "\n".join(room.server.proc.stderr if room.server.proc else [])
    assert f"posted job {job_id} COMPLETE for user alice to {where}" in log, log[-3000:]
    assert SECRET_PATH not in log


def test_a_failing_hook_is_retried_and_config_toml_is_synced(room: Room, hook: Receiver) -> None:
    config = room.users.home("alice") / "config" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[notify]\nwebhook = "{hook.url}/synced"\non_start = true\n')
    synced = ok(room.users.run("alice", "notify", "sync"))
    assert "when a job starts and when it ends" in synced, synced

    before = len(hook.posts)
    hook.statuses = [500, 500]
    tested = ok(room.users.run("alice", "notify", "test"))
    assert "test message delivered" in tested and "HTTP 200" in tested, tested
    posts = hook.posts[before:]
    assert [p.status for p in posts] == [500, 500, 200]
    assert all(p.path == SECRET_PATH + "/synced" for p in posts)
    assert posts[-1].body["sleap_rtc"] == {
        "test": True,
        "scope": "user",
        "name": "alice",
        "by": "alice",
    }

    hook.statuses = [500, 500, 500]
    failed = room.users.run("alice", "notify", "test")
    assert failed.returncode == 1 and "answered HTTP 500 3 times" in failed.stderr, failed.stderr

    members = room.users.run("bob", "notify", "set", hook.url + "/room", "--room", "lab")
    assert members.returncode != 0 and "only an owner of room 'lab'" in members.stderr
    assert "webhook is removed" in ok(room.users.run("alice", "notify", "off"))
    assert "was not set" in ok(room.users.run("alice", "notify", "off"))


def test_a_server_that_keeps_to_public_addresses_refuses_loopback(
    tmp_path: Path, hook: Receiver
) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path}/server.db", tmp_path / "server-home").start()
    try:
        users = Users(tmp_path, server)
        users.add("carol")
        ok(users.run("carol", "notify", "set", hook.url))
        before = len(hook.posts)
        refused = users.run("carol", "notify", "test")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "127.0.0.1 is a loopback address" in refused.stderr
        assert "--allow-private-webhooks" in refused.stderr
        time.sleep(1.0)
        assert len(hook.posts) == before
        log = "\n".join(server.proc.stderr if server.proc else [])
        assert "127.0.0.1 is a loopback address" in log, log[-3000:]
        assert f"http://127.0.0.1:{hook.port}" in log and SECRET_PATH not in log
    finally:
        server.stop()
