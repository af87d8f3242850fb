"""The room flow as a user types it, against a real server, worker and database.

Every test runs twice: on SQLite and on a real PostgreSQL (``database_url``).
"""

from __future__ import annotations

import json
import signal
import stat
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import (
    PASSWORD,
    Proc,
    ServerFactory,
    ServerProcess,
    Users,
    ok,
    sleap_rtc,
    start_worker,
    wait_for,
)

pytestmark = pytest.mark.slow


def _status(users: Users, user: str, room: str, worker_id: str) -> str | None:
    listed = users.json(user, "rooms", "workers", "--room", room)
    for worker in listed:
        if worker["id"] == worker_id:
            return str(worker["status"])
    return None


def test_seed_flow_login_room_key_worker_online_then_offline(
    server_factory: ServerFactory, procs: list[Proc], tmp_path: Path
) -> None:
    server: ServerProcess = server_factory()
    users = Users(tmp_path, server)
    alice = users.add("alice")

    # The session file is private to the user.
    creds = alice / "config" / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert PASSWORD not in creds.read_text()
    assert "alice on " + server.url in ok(users.run("alice", "whoami"))

    ok(users.run("alice", "rooms", "create", "my-room"))
    rooms = users.json("alice", "rooms", "list")
    assert [(r["name"], r["role"], r["workers_online"]) for r in rooms] == [("my-room", "owner", 0)]
    key = users.json("alice", "keys", "create", "--room", "my-room", "--name", "gpu-box")
    assert key["secret"].startswith("srk_") and key["name"] == "gpu-box"
    listed_keys = users.json("alice", "keys", "list", "--room", "my-room")
    assert "secret" not in listed_keys[0] and listed_keys[0]["name"] == "gpu-box"

    data = tmp_path / "lab data"
    data.mkdir()
    worker = start_worker(
        tmp_path / "worker-home", server.url, key["secret"], "my-room", "lab-gpu-1", data
    )
    procs.append(worker)
    worker_id = worker.wait_line(r"online in room my-room", timeout=60)
    worker_id_text = worker.stdout[-1].split("(")[1].split(")")[0]
    assert worker_id_text.startswith("worker-"), worker_id

    listed = users.json("alice", "rooms", "workers", "--room", "my-room")
    assert len(listed) == 1
    entry = listed[0]
    assert {k: entry[k] for k in ("id", "name", "status")} == {
        "id": worker_id_text,
        "name": "lab-gpu-1",
        "status": "online",
    }
    assert entry["mounts"] == ["data", "models", "uploads"]
    assert entry["accelerator"] == "cpu" and entry["gpus"] == []
    assert entry["max_concurrent_jobs"] == 1 and entry["running_jobs"] == 0
    assert entry["sleap_nn_version"], entry
    table = ok(users.run("alice", "rooms", "workers", "--room", "my-room"))
    assert "lab-gpu-1" in table and "online" in table and "CPU only" in table
    assert users.json("alice", "rooms", "list")[0]["workers_online"] == 1

    # bob joins with an invite code and sees the same worker; he is a member.
    users.add("bob")
    invite = users.json("alice", "rooms", "invite", "my-room")
    assert "joined room my-room" in ok(users.run("bob", "rooms", "join", invite["code"]))
    assert [w["status"] for w in users.json("bob", "rooms", "workers", "--room", "my-room")] == [
        "online"
    ]
    info = users.json("bob", "rooms", "info", "my-room")
    assert (info["role"], info["owner"], info["workers_online"]) == ("member", "alice", 1)
    assert [m["username"] for m in info["member_list"]] == ["alice", "bob"]
    reused = users.run("bob", "rooms", "join", invite["code"])
    assert reused.returncode == 0  # already a member: joining again changes nothing
    carol = users.add("carol")
    used_up = sleap_rtc(carol, "rooms", "join", invite["code"])
    assert used_up.returncode == 2 and "invite code is not valid" in used_up.stderr

    # A GPU filter the worker can't meet hides it.
    none = users.json("alice", "rooms", "workers", "--room", "my-room", "--min-gpu-memory", "1")
    assert none == []

    # Kill the worker outright: the server notices the dropped connection.
    worker.signal(signal.SIGKILL)
    wait_for(
        lambda: _status(users, "alice", "my-room", worker_id_text) == "offline",
        timeout=20,
        what="the killed worker to be listed offline",
    )
    # It is still known (with when it was last seen), not forgotten.
    assert users.json("alice", "rooms", "workers", "--room", "my-room")[0]["name"] == "lab-gpu-1"

    # The server's log never holds secrets.
    server.stop()
    log = server.output()
    assert key["secret"] not in log and PASSWORD not in log
    assert "eyJ" not in log  # no JWT


def test_worker_keeps_its_id_and_comes_back_after_a_server_restart(
    server_factory: ServerFactory, procs: list[Proc], tmp_path: Path
) -> None:
    server: ServerProcess = server_factory("--heartbeat-interval", "1", "--heartbeat-timeout", "4")
    users = Users(tmp_path, server)
    users.add("alice")
    ok(users.run("alice", "rooms", "create", "lab"))
    key = users.json("alice", "keys", "create", "--room", "lab")["secret"]
    data = tmp_path / "data"
    data.mkdir()
    worker_home = tmp_path / "worker-home"
    worker = start_worker(worker_home, server.url, key, "lab", "w1", data)
    procs.append(worker)
    worker.wait_line(r"online in room lab", timeout=60)
    first_id = users.json("alice", "rooms", "workers", "--room", "lab")[0]["id"]

    server.stop()
    time.sleep(1.0)
    server.start()  # same port, same database
    # Users, rooms and keys are intact, and the old login session still works
    # (the signing key lives in the database).
    assert "alice on" in ok(users.run("alice", "whoami"))
    assert [r["name"] for r in users.json("alice", "rooms", "list")] == ["lab"]
    assert len(users.json("alice", "keys", "list", "--room", "lab")) == 1

    started = time.monotonic()
    worker.wait_line(r"online in room lab", timeout=60)
    assert time.monotonic() - started < 60
    listed = users.json("alice", "rooms", "workers", "--room", "lab")
    assert [(w["id"], w["status"]) for w in listed] == [(first_id, "online")]

    # A restarted worker process keeps its id too.
    worker.stop()
    again = start_worker(worker_home, server.url, key, "lab", "w1", data)
    procs.append(again)
    again.wait_line(r"online in room lab", timeout=60)
    listed = users.json("alice", "rooms", "workers", "--room", "lab")
    assert [(w["id"], w["status"]) for w in listed] == [(first_id, "online")]


def test_silent_worker_is_marked_offline_then_reconnects(
    server_factory: ServerFactory, procs: list[Proc], tmp_path: Path
) -> None:
    server: ServerProcess = server_factory(
        "--heartbeat-interval", "0.5", "--heartbeat-timeout", "2"
    )
    users = Users(tmp_path, server)
    users.add("alice")
    ok(users.run("alice", "rooms", "create", "lab"))
    key = users.json("alice", "keys", "create", "--room", "lab")["secret"]
    data = tmp_path / "data"
    data.mkdir()
    worker = start_worker(tmp_path / "wh", server.url, key, "lab", "w1", data)
    procs.append(worker)
    worker.wait_line(r"online in room lab", timeout=60)
    worker_id = users.json("alice", "rooms", "workers", "--room", "lab")[0]["id"]

    # A frozen worker keeps its TCP connection open but sends no heartbeats.
    worker.signal(signal.SIGSTOP)
    try:
        wait_for(
            lambda: _status(users, "alice", "lab", worker_id) == "offline",
            timeout=15,
            what="the silent worker to be marked offline",
        )
    finally:
        worker.signal(signal.SIGCONT)
    worker.wait_line(r"online in room lab", timeout=60)
    assert _status(users, "alice", "lab", worker_id) == "online"


def test_revoking_a_key_disconnects_its_worker_within_seconds(
    server_factory: ServerFactory, procs: list[Proc], tmp_path: Path
) -> None:
    server: ServerProcess = server_factory()
    users = Users(tmp_path, server)
    users.add("alice")
    ok(users.run("alice", "rooms", "create", "lab"))
    key = users.json("alice", "keys", "create", "--room", "lab", "--name", "k1")["secret"]
    data = tmp_path / "data"
    data.mkdir()
    worker = start_worker(tmp_path / "wh", server.url, key, "lab", "w1", data)
    procs.append(worker)
    worker.wait_line(r"online in room lab", timeout=60)

    revoked_at = time.monotonic()
    assert "revoked" in ok(users.run("alice", "keys", "revoke", "--room", "lab", "k1"))
    worker.process.wait(timeout=20)
    assert time.monotonic() - revoked_at < 10
    assert worker.process.returncode == 3, worker.output()
    assert "revoked" in "\n".join(worker.stderr)
    assert users.json("alice", "rooms", "workers", "--room", "lab")[0]["status"] == "offline"
    listed = users.json("alice", "keys", "list", "--room", "lab")
    assert listed[0]["revoked_at"] is not None

    # Starting it again with the revoked key is refused at once, with the reason.
    again = start_worker(tmp_path / "wh", server.url, key, "lab", "w1", data)
    procs.append(again)
    assert again.process.wait(timeout=60) == 3
    assert "revoked" in "\n".join(again.stderr)


def test_worker_with_a_key_for_another_room_refuses_to_start(
    server_factory: ServerFactory, procs: list[Proc], tmp_path: Path
) -> None:
    server: ServerProcess = server_factory()
    users = Users(tmp_path, server)
    users.add("alice")
    ok(users.run("alice", "rooms", "create", "lab"))
    key = users.json("alice", "keys", "create", "--room", "lab")["secret"]
    data = tmp_path / "data"
    data.mkdir()
    worker = start_worker(tmp_path / "wh", server.url, key, "other-room", "w1", data)
    procs.append(worker)
    assert worker.process.wait(timeout=60) == 3
    assert "for room 'lab', not 'other-room'" in "\n".join(worker.stderr)


def test_login_errors_are_clear_and_failures_are_rate_limited(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server: ServerProcess = server_factory("--login-failures-per-minute", "3")
    users = Users(tmp_path, server)
    users.add("alice", login=False)
    home = users.home("alice")
    for _ in range(3):
        bad = sleap_rtc(
            home,
            "login",
            "--server",
            server.url,
            "-u",
            "alice",
            "--password-stdin",
            input="wrong password\n",
        )
        assert bad.returncode == 1 and "wrong username or password" in bad.stderr
    limited = sleap_rtc(
        home,
        "login",
        "--server",
        server.url,
        "-u",
        "alice",
        "--password-stdin",
        input=PASSWORD + "\n",
    )
    assert limited.returncode == 1 and "too many failed logins" in limited.stderr
    # Other users are not locked out by alice's failures.
    users.add("bob")
    # Not logged in anywhere yet: a clear message.
    fresh = sleap_rtc(tmp_path / "nobody", "rooms", "list", "--server", server.url)
    assert fresh.returncode == 1 and "not logged in" in fresh.stderr
    unreachable = sleap_rtc(
        tmp_path / "nobody",
        "login",
        "--server",
        "127.0.0.1:9",
        "-u",
        "bob",
        "--password-stdin",
        input=PASSWORD + "\n",
    )
    assert unreachable.returncode == 1 and "can't reach the sleap-rtc server" in unreachable.stderr


def test_logout_revokes_the_session_on_the_server(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server: ServerProcess = server_factory()
    users = Users(tmp_path, server)
    home = users.add("alice")
    creds = json.loads((home / "config" / "credentials.json").read_text())
    refresh = creds["servers"][server.url]["refresh_token"]
    assert "logged out" in ok(users.run("alice", "logout"))
    answer = httpx.post(server.url + "/v1/auth/refresh", json={"refresh_token": refresh})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "INVALID_REFRESH"
    after = users.run("alice", "whoami", "--server", server.url)
    assert after.returncode == 1 and "not logged in" in after.stderr
    # Without --server: the server logged out of is still the one meant.
    plain = users.run("alice", "whoami")
    assert plain.returncode == 1 and f"not logged in to {server.url}" in plain.stderr
