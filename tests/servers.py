"""Real processes for server tests: `sleap-rtc server`, `sleap-rtc worker`, the CLI.

Every process is started in its own session and stopped (TERM, then KILL) by the
fixture that started it, also when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from sleap_rtc.client import ServerClient

PASSWORD = "correct horse battery"
_LISTENING = re.compile(r"listening on (http://\S+)")


class Proc:
    """A child process whose stdout/stderr lines are collected by reader threads."""

    def __init__(self, argv: list[str], env: dict[str, str], name: str) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for stream, sink, feed in (
            (self.process.stdout, self.stdout, True),
            (self.process.stderr, self.stderr, False),
        ):
            threading.Thread(target=self._pump, args=(stream, sink, feed), daemon=True).start()

    def _pump(self, stream: Any, sink: list[str], feed: bool) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))
            if feed:
                self.lines.put(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_line(self, pattern: str, timeout: float) -> re.Match[str]:
        """The next stdout line matching ``pattern``; fails with the output so far."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.05, min(0.5, deadline - time.monotonic())))
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            match = regex.search(line)
            if match:
                return match
        raise AssertionError(
            f"{self.name}: no line matching {pattern!r} within {timeout} s "
            f"(exit code {self.process.poll()})\n" + self.output()
        )

    def output(self) -> str:
        return "stdout:\n" + "\n".join(self.stdout) + "\nstderr:\n" + "\n".join(self.stderr[-60:])

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(5)
        # Anything left in the process group goes too.
        self.signal(signal.SIGKILL)
        return self.process.returncode


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLEAP_RTC_")}
    env["SLEAP_RTC_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def sleap_rtc(
    home: Path, *args: str, input: str | None = None, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI as a user would, with its own home folder."""
    return subprocess.run(
        [sys.executable, "-m", "sleap_rtc", *args],
        env=cli_env(home, **env),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


class ServerProcess:
    """``sleap-rtc server`` on a loopback port, restartable on the same port and data."""

    def __init__(self, database_url: str, home: Path, args: tuple[str, ...] = ()) -> None:
        self.database_url = database_url
        self.home = home
        self.args = args
        self.port = 0
        self.url = ""
        self.proc: Proc | None = None

    def start(self) -> ServerProcess:
        argv = [
            sys.executable,
            "-m",
            "sleap_rtc",
            "server",
            "--port",
            str(self.port),
            "--database-url",
            self.database_url,
            *self.args,
        ]
        self.proc = Proc(argv, cli_env(self.home), "server")
        self.url = self.proc.wait_line(r"listening on (http://\S+)", timeout=60).group(1)
        self.port = int(self.url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("server never became healthy\n" + self.proc.output())
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def add_user(self, name: str, *, admin: bool = False) -> None:
        args = ["server", "add-user", name, "--password-stdin", "--database-url"]
        args.append(self.database_url)
        if admin:
            args.append("--admin")
        ok(sleap_rtc(self.home, *args, input=PASSWORD + "\n"))

    def output(self) -> str:
        return self.proc.output() if self.proc else ""


class Users:
    """One home folder per user, as if each sat at their own machine."""

    def __init__(self, root: Path, server: ServerProcess) -> None:
        self.root = root
        self.server = server

    def home(self, name: str) -> Path:
        path = self.root / f"home-{name}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add(self, name: str, *, login: bool = True) -> Path:
        self.server.add_user(name)
        home = self.home(name)
        if login:
            out = ok(
                sleap_rtc(
                    home,
                    "login",
                    "--server",
                    self.server.url,
                    "-u",
                    name,
                    "--password-stdin",
                    input=PASSWORD + "\n",
                )
            )
            assert f"as {name}" in out
        return home

    def run(self, name: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return sleap_rtc(self.home(name), *args, **kwargs)

    def json(self, name: str, *args: str) -> Any:
        return json.loads(ok(self.run(name, *args, "--json")))


def start_worker(
    home: Path,
    server_url: str,
    key: str,
    room: str,
    name: str,
    mount: Path,
    *extra: str,
    env: dict[str, str] | None = None,
) -> Proc:
    argv = [
        sys.executable,
        "-m",
        "sleap_rtc",
        "worker",
        "--server",
        server_url,
        "--room",
        room,
        "--name",
        name,
        "--mount",
        f"{mount}:data",
        "--device",
        "cpu",
        *extra,
    ]
    return Proc(argv, cli_env(home, SLEAP_RTC_WORKER_KEY=key, **(env or {})), f"worker {name}")


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


@contextlib.contextmanager
def running(*procs: Proc | ServerProcess) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            proc.stop()


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def server_factory(database_url: str, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def make(*args: str) -> ServerProcess:
        server = ServerProcess(database_url, tmp_path / "server-home", args)
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes a test starts; all stopped at the end."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.stop()


@dataclass
class Room:
    """A server with users alice (owner) and bob (member) of room ``lab``, and one worker."""

    server: ServerProcess
    users: Users
    worker: Proc
    worker_id: str
    data: Path

    def restart_worker(self, timeout: float = 90) -> Proc:
        """Stop the worker (SIGTERM) and start it again with the same options and home."""
        self.worker.stop()
        self.worker = Proc(self.worker.argv, self.worker.env, self.worker.name)
        self.worker.wait_line(r"online in room", timeout=timeout)
        return self.worker

    def client(self, user: str = "alice") -> Any:
        from sleap_rtc.client import ServerClient
        from sleap_rtc.client.credentials import CredentialStore

        store = CredentialStore(self.users.home(user) / "config" / "credentials.json")
        return ServerClient(self.server.url, store=store)


@contextlib.contextmanager
def open_room(
    root: Path,
    mount: Path,
    *,
    room: str = "lab",
    worker_name: str = "lab-cpu",
    worker_args: tuple[str, ...] = (),
    server_args: tuple[str, ...] = (),
) -> Iterator[Room]:
    """Start the server and a CPU worker that mounts ``mount`` (as ``data``); stop both after.

    ``worker_args`` are more ``sleap-rtc worker`` options (e.g. ``--backend slurm``),
    ``server_args`` more ``sleap-rtc server`` ones (e.g. ``--allow-private-webhooks``).
    """
    server = ServerProcess(f"sqlite:///{root}/server.db", root / "server-home", server_args).start()
    worker: Proc | None = None
    opened: Room | None = None
    try:
        users = Users(root, server)
        users.add("alice")
        users.add("bob")
        ok(users.run("alice", "rooms", "create", room))
        invite = users.json("alice", "rooms", "invite", room)
        ok(users.run("bob", "rooms", "join", invite["code"]))
        key = users.json("alice", "keys", "create", "--room", room)["secret"]
        worker = start_worker(
            root / "worker-home",
            server.url,
            key,
            room,
            worker_name,
            mount,
            "--models-dir",
            str(mount / "models"),
            *worker_args,
            env={"SLEAP_RTC_ICE_HOSTS": "127.0.0.1"},
        )
        worker.wait_line(rf"online in room {room}", timeout=90)
        listed = users.json("alice", "rooms", "workers", "--room", room)
        opened = Room(server, users, worker, listed[0]["id"], mount)
        yield opened
    finally:
        if worker is not None:
            worker.stop()
        if opened is not None:
            opened.worker.stop()  # the one running now, if the test restarted it
        server.stop()


# -- speaking the server's WebSocket protocol directly, as a hostile peer would -------------


def ws_url(server: ServerProcess, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


async def recv(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    """The next message on ``ws``, decoded; fails after ``timeout`` seconds."""
    return dict(json.loads(await asyncio.wait_for(ws.recv(), timeout)))


async def register_raw(
    server: ServerProcess, key: str, worker_id: str, name: str | None = None
) -> tuple[ClientConnection, dict[str, Any]]:
    """A simulated worker: connect with ``key``, register ``worker_id``; the first answer.

    A server that refuses the key answers and hangs up before reading the register
    message; sending it may then fail, and the answer is read all the same.
    """
    ws = await connect(
        ws_url(server, "/v1/worker"), additional_headers={"Authorization": f"Bearer {key}"}
    )
    register = {
        "type": "register",
        "v": 1,
        "worker_id": worker_id,
        "capabilities": {"name": name or worker_id},
    }
    with contextlib.suppress(ConnectionClosed):
        await ws.send(json.dumps(register))
    return ws, await recv(ws)


async def client_for(server: ServerProcess, tmp_path: Path, name: str) -> ServerClient:
    """A new account ``name`` on ``server``, logged in through the client API."""
    from sleap_rtc.client import ServerClient
    from sleap_rtc.client.credentials import CredentialStore

    server.add_user(name)
    client = ServerClient(server.url, store=CredentialStore(tmp_path / f"{name}.json"))
    await client.login(name, PASSWORD)
    return client


async def user_socket(server: ServerProcess, client: ServerClient) -> tuple[ClientConnection, str]:
    """A client socket of ``client``'s user, and the session id the server gave it."""
    token = await client.access_token()
    ws = await connect(
        ws_url(server, "/v1/client"), additional_headers={"Authorization": f"Bearer {token}"}
    )
    welcome = await recv(ws)
    assert welcome["type"] == "welcome"
    return ws, str(welcome["session_id"])


async def room_with_two_members(
    server: ServerProcess, tmp_path: Path
) -> tuple[ServerClient, ServerClient]:
    """alice owns room ``lab``; bob is a member (and so may make worker keys)."""
    alice = await client_for(server, tmp_path, "alice")
    bob = await client_for(server, tmp_path, "bob")
    await alice.create_room("lab")
    await bob.join((await alice.invite("lab")).code)
    return alice, bob


class LaneDropper:
    """An ``on_progress`` that aborts ``session``'s lane once, a third of the way in;
    :attr:`dropped` says at which byte (empty: it never did). :meth:`again` re-arms it."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.dropped: list[int] = []

    def __call__(self, done: int, total: int) -> None:
        lane = self.session.lanes.live()
        if not self.dropped and done > total // 3 and lane is not None:
            self.dropped.append(done)
            lane.abort()

    def again(self) -> LaneDropper:
        self.dropped.clear()
        return self
