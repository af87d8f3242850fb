"""``sleap-rtc doctor`` as a user runs it, against a real server, worker and CLI.

A good set-up exits 0 with every line ok; each broken one exits 2 with a line that
names the problem and what to do.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sleap_rtc.engine import sandbox
from tests.servers import Room, ok, open_room, sleap_rtc

pytestmark = pytest.mark.slow

SANDBOX = "landlock" if sandbox.unavailable_reason() is None else "off"


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    data = tmp_path_factory.mktemp("doctor-data")
    with open_room(tmp_path_factory.mktemp("doctor"), data) as opened:
        yield opened


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stdout.splitlines()


def line(result: subprocess.CompletedProcess[str], status: str, name: str) -> str:
    """The one output line of check ``name`` with ``status`` (ok or problem)."""
    start = re.compile(rf"{status} +{re.escape(name)}  ")
    found = [x for x in lines(result) if start.match(x)]
    assert len(found) == 1, f"no single {status} line for {name}:\n{result.stdout}"
    return found[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_toml(tmp_path: Path, room: Room, *mounts: Path) -> Path:
    tables = "".join(f'[[mounts]]\npath = "{m}"\nlabel = "{m.name}"\n' for m in mounts)
    path = tmp_path / "worker.toml"
    path.write_text(
        f'name = "box"\nserver = "{room.server.url}"\nroom = "lab"\ndevice = "cpu"\n'
        f'sandbox = "{SANDBOX}"\nmodels_dir = "{tmp_path / "models"}"\n'
        f'state_dir = "{tmp_path / "state"}"\n' + tables,
        encoding="utf-8",
    )
    return path


def test_a_good_setup_exits_0_with_every_line_ok(room: Room) -> None:
    # The server from the last login, the room from SLEAP_RTC_ROOM, as other commands.
    result = room.users.run("alice", "doctor", SLEAP_RTC_ROOM="lab")
    out = ok(result)
    assert lines(result)[-1] == "all 5 checks ok", out
    assert all(x.startswith("ok ") for x in lines(result)[:-1]), out
    assert room.server.url in line(result, "ok", "server")
    assert "logged in as alice" in line(result, "ok", "login")
    assert "lab: you are owner" in line(result, "ok", "room")
    assert "1 online in room lab" in line(result, "ok", "workers")
    worker = line(result, "ok", "worker lab-cpu")
    assert "sleap-nn " in worker and "CPU only" in worker
    assert "mounts data, models, uploads" in worker

    listed = json.loads(ok(room.users.run("bob", "doctor", "--room", "lab", "--json")))
    assert [(c["name"], c["ok"]) for c in listed] == [
        ("server", True),
        ("login", True),
        ("room", True),
        ("workers", True),
        ("worker lab-cpu", True),
    ]
    assert "you are member" in listed[2]["detail"]


def test_a_wrong_server_port_is_named_with_the_fix(room: Room) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = room.users.run("alice", "doctor", "--server", url, "--room", "lab")
    assert result.returncode == 2, result.stdout + result.stderr
    problem = line(result, "problem", "server")
    assert f"can't reach the sleap-rtc server at {url}" in problem
    assert "→ fix: start the server (`sleap-rtc server`)" in problem
    assert lines(result)[-1] == "1 problem(s) in 1 checks"


def test_an_address_that_is_not_sleap_rtc_is_named(room: Room) -> None:
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{web.server_address[1]}"
        result = room.users.run("alice", "doctor", "--server", url, "--room", "lab")
    finally:
        web.shutdown()
        web.server_close()
    assert result.returncode == 2, result.stdout + result.stderr
    problem = line(result, "problem", "server")
    assert "not a sleap-rtc server" in problem and "→ fix: pass the address" in problem


def test_not_logged_in_says_to_log_in(room: Room, tmp_path: Path) -> None:
    result = sleap_rtc(tmp_path / "nobody", "doctor", "--server", room.server.url, "-r", "lab")
    assert result.returncode == 2, result.stdout + result.stderr
    assert line(result, "ok", "server")
    problem = line(result, "problem", "login")
    assert f"not logged in to {room.server.url}" in problem
    assert f"→ fix: run `sleap-rtc login --server {room.server.url}`" in problem


def test_rooms_without_workers_or_membership_and_no_room(room: Room) -> None:
    ok(room.users.run("alice", "rooms", "create", "empty"))
    result = room.users.run("alice", "doctor", "--room", "empty")
    assert result.returncode == 2, result.stdout + result.stderr
    assert line(result, "ok", "room")
    problem = line(result, "problem", "workers")
    assert "no worker online in room empty" in problem
    assert "sleap-rtc keys create --room empty" in problem
    assert "sleap-rtc worker --room empty --mount /data" in problem

    # bob isn't a member of alice's new room: to him it doesn't exist.
    result = room.users.run("bob", "doctor", "--room", "empty")
    assert result.returncode == 2
    problem = line(result, "problem", "room")
    assert "room empty doesn't exist, or you are not a member" in problem
    assert "sleap-rtc rooms join CODE" in problem

    result = room.users.run("bob", "doctor")
    assert result.returncode == 2
    problem = line(result, "problem", "room")
    assert "no room given; you belong to lab" in problem and "pass --room ROOM" in problem


def test_a_worker_toml_with_a_missing_mount_folder(room: Room, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = worker_toml(tmp_path, room, data, tmp_path / "raw")
    # alice's machine, also a worker: worker.toml gives the server and the room.
    result = room.users.run("alice", "doctor", "--worker-config", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    for name in ("server", "login", "room", "workers", "worker config", "GPU", "sandbox"):
        assert line(result, "ok", name)
    assert "cpu configured" in line(result, "ok", "GPU")
    assert line(result, "ok", "mount data")
    problem = line(result, "problem", "mount raw")
    assert f"{tmp_path / 'raw'} does not exist" in problem
    assert f"→ fix: create the folder, or fix or remove mounts[1] in {path}" in problem
    assert lines(result)[-1].startswith("1 problem(s) in ")


def test_a_good_worker_machine_needs_no_login(room: Room, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    home = tmp_path / "worker-home"
    path = worker_toml(tmp_path, room, data)
    default = home / "config" / "worker.toml"  # where `sleap-rtc worker` looks for it
    default.parent.mkdir(parents=True)
    default.write_text(path.read_text(), encoding="utf-8")
    result = sleap_rtc(home, "doctor")
    out = ok(result)
    assert all(x.startswith("ok ") for x in lines(result)[:-1]), out
    assert "a worker needs only its key" in line(result, "ok", "login")
    assert "sleap-nn " in line(result, "ok", "sleap-nn")
    assert line(result, "ok", "mount data") and line(result, "ok", "disk space")
    assert not (tmp_path / "models").exists()
