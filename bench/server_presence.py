"""Presence at scale: N simulated workers on one real ``sleap-rtc server``.

For each N a fresh server process is started on loopback (SQLite in a temporary
folder, or ``--database-url`` for PostgreSQL), a user, a room and one worker key
are created, and N simulated workers connect to ``/v1/worker`` (concurrently, in
batches), register and then keep sending heartbeats at the server's interval.
Measured, per N:

* memory per connection: the server's RSS after all N registered minus its RSS
  before the first one connected (after a warm-up), divided by N;
* time to register all N (first connect to last ``registered``);
* discovery latency: ``GET /v1/rooms/{room}/workers`` repeated, one at a time, in
  the empty room first (the baseline) and then with N workers online and
  heartbeating; p50/p99 and the ratio N workers / empty room.

With ``--rooms R`` the N workers are spread over R rooms (one key each, N/R workers
per room) and the listed room is one of them: a listing must cost what its own
room holds, not what the server holds.

The listing must show exactly the N simulated workers ``online`` and none may have
been disconnected, or the run fails. The simulated workers and the HTTP client share
this process (one event loop); the server is a separate process, whose CPU time per
registration and per listing is reported too. ``--gc-stats`` runs the server under a
small wrapper (same CLI) that times its garbage collections, and reports the full
collections that happened while the N-worker listing was timed.

    .venv/bin/python bench/server_presence.py --quick          # N=20, 20 requests
    .venv/bin/python bench/server_presence.py                  # N=100 and N=1000
    .venv/bin/python bench/server_presence.py --workers 1000 --gc-stats
    .venv/bin/python bench/server_presence.py --workers 2000 --database-url postgresql://...
    .venv/bin/python bench/server_presence.py --workers 10000 --rooms 1000 --requests 100

With ``--database-url`` the user, room and worker rows stay in that database (the
room is deleted at the end, best effort); names are random so runs don't collide.

The file is over 500 lines because the server process, the simulated workers and the
report tables serve this one measurement and are read together.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sleap_rtc.client.credentials import CredentialStore
from sleap_rtc.client.session import ServerClient

HEARTBEAT_INTERVAL = 5.0
HEARTBEAT_TIMEOUT = 60.0
PASSWORD = "bench-presence-password"
_LISTENING = re.compile(r"listening on (http://\S+)")
_PROBLEM = re.compile(r" (WARNING|ERROR|CRITICAL) |Traceback")
_GC_LINE = re.compile(r"^bench-gc gen=(\d) ms=([\d.]+)$", re.MULTILINE)
#: With --gc-stats the server runs under this wrapper: the same CLI, plus one stderr line
#: per garbage collection of 1 ms or more.
_GC_WRAPPER = """
import gc, sys, time
_started = [0.0]
def _timed(phase, info):
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    ms = (time.perf_counter() - _started[0]) * 1000
    if ms >= 1:
        sys.stderr.write(f"bench-gc gen={info['generation']} ms={ms:.1f}\\n")
        sys.stderr.flush()
gc.callbacks.append(_timed)
sys.argv[0] = "sleap-rtc"
from sleap_rtc.cli import main
main()
"""


def raise_nofile_limit() -> int:
    """Raise the soft limit on open files to the hard limit (N sockets need N descriptors)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


@dataclass
class GcPauses:
    full: int
    full_max_ms: float
    total_ms: float


# -- the server process -----------------------------------------------------------------------


class Server:
    """One ``sleap-rtc server`` in its own session, output in files under ``root``."""

    def __init__(
        self, root: Path, env: dict[str, str], database_url: str | None, gc_stats: bool = False
    ) -> None:
        self.root = root
        self.env = env
        self.database_url = database_url
        self.gc_stats = gc_stats
        self.out = root / "server.out"
        self.log = root / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _db_args(self) -> list[str]:
        if self.database_url:
            return ["--database-url", self.database_url]
        return ["--data-dir", str(self.root / "server-data")]

    def add_user(self, username: str) -> None:
        subprocess.run(
            [
                *(sys.executable, "-m", "sleap_rtc", "server", "add-user", username),
                "--password-stdin",
                *self._db_args(),
            ],
            env=self.env,
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )

    def start(self, timeout: float = 60.0) -> str:
        launcher = ["-c", _GC_WRAPPER] if self.gc_stats else ["-m", "sleap_rtc"]
        argv = [
            sys.executable,
            *launcher,
            "server",
            "--port",
            "0",
            "--heartbeat-interval",
            str(HEARTBEAT_INTERVAL),
            "--heartbeat-timeout",
            str(HEARTBEAT_TIMEOUT),
            *self._db_args(),
        ]
        with self.out.open("wb") as out, self.log.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.out.read_text(errors="replace"))
            if match:
                return match.group(1)
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit(
            f"the server did not start (exit code {self.process.poll()}):\n{self.log_tail()}"
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def cpu_s(self) -> float:
        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)

    def log_offset(self) -> int:
        return self.log.stat().st_size

    def gc_pauses(self, start: int, end: int) -> GcPauses:
        """Collections the --gc-stats wrapper logged between two log offsets."""
        with self.log.open("rb") as handle:
            handle.seek(start)
            text = handle.read(end - start).decode(errors="replace")
        pauses = [(int(g), float(ms)) for g, ms in _GC_LINE.findall(text)]
        full = [ms for g, ms in pauses if g == 2]
        return GcPauses(
            full=len(full),
            full_max_ms=max(full, default=0.0),
            total_ms=sum(ms for _, ms in pauses),
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no server log)"
        return "\n".join(text[-lines:])

    def problems(self) -> list[str]:
        """Warnings, errors and tracebacks in the server's log."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        return [line for line in text if _PROBLEM.search(line)]

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self) -> int | None:
        """TERM, then KILL; anything left in its process group goes too."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(10)
        self._signal(signal.SIGKILL)
        return self.process.returncode


# -- simulated workers ------------------------------------------------------------------------


class SimWorker:
    """A WebSocket that registers like a worker and then only sends heartbeats."""

    HEARTBEAT = json.dumps({"type": "heartbeat", "v": 1, "status": "idle", "running_jobs": 0})

    def __init__(self, index: int, url: str, secret: str) -> None:
        self.worker_id = f"bench-{index:06d}"
        self.url = url
        self.secret = secret
        self.ws: ClientConnection | None = None
        self.interval = HEARTBEAT_INTERVAL
        self.heartbeats = 0
        self.closed: str | None = None
        self.unexpected: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def register(self, timeout: float) -> float:
        started = time.perf_counter()
        self.ws = await connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self.secret}"},
            open_timeout=timeout,
            ping_interval=None,  # the server pings; pongs are answered automatically
            close_timeout=5,
        )
        register = {
            "type": "register",
            "v": 1,
            "worker_id": self.worker_id,
            "capabilities": {"name": self.worker_id},
        }
        await self.ws.send(json.dumps(register))
        reply = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        if reply.get("type") != "registered" or reply.get("worker_id") != self.worker_id:
            raise RuntimeError(f"{self.worker_id}: expected 'registered', got {reply}")
        self.interval = float(reply["heartbeat_interval"])
        return time.perf_counter() - started

    async def heartbeat(self) -> None:
        assert self.ws is not None
        await self.ws.send(self.HEARTBEAT)
        self.heartbeats += 1

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._beat()), asyncio.create_task(self._listen())]

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + random.uniform(0, self.interval)  # spread the load over the interval
        try:
            while True:
                await asyncio.sleep(max(0.0, due - loop.time()))
                await self.heartbeat()
                due += self.interval
        except ConnectionClosed as exc:
            self.closed = self.closed or f"while sending: {exc}"

    async def _listen(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                self.unexpected.append(str(raw)[:200])
        except ConnectionClosed:
            pass
        self.closed = (
            self.closed or f"closed by server: {self.ws.close_code} {self.ws.close_reason}"
        )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()


# -- one measurement --------------------------------------------------------------------------


@dataclass
class Result:
    n: int
    rooms: int
    rss_before: int
    rss_registered: int
    rss_after: int
    register_s: float
    connect_p50_ms: float
    connect_p99_ms: float
    empty_p50_ms: float
    empty_p99_ms: float
    loaded_p50_ms: float
    loaded_p99_ms: float
    response_bytes: int
    heartbeats_during: int
    log_problems: int
    cpu_per_register_ms: float
    cpu_per_get_empty_ms: float
    cpu_per_get_loaded_ms: float
    gc_loaded: GcPauses | None

    @property
    def kib_per_conn(self) -> float:
        return (self.rss_registered - self.rss_before) / 1024 / self.n

    def summary(self) -> str:
        where = (
            f" over {self.rooms} rooms (listed: {self.n // self.rooms})" if self.rooms > 1 else ""
        )
        return (
            f"N={self.n}{where}: {self.kib_per_conn:.1f} KiB/conn, "
            f"register {self.register_s:.2f} s, "
            f"discovery p50 {self.loaded_p50_ms:.1f} ms p99 {self.loaded_p99_ms:.1f} ms "
            f"(x{self.loaded_p50_ms / self.empty_p50_ms:.1f} vs empty room)"
        )


async def time_listing(
    http: httpx.AsyncClient, path: str, token: str, requests: int
) -> tuple[list[float], int]:
    """Milliseconds of each sequential GET, and the size of the last answer."""
    headers = {"authorization": f"Bearer {token}"}
    times: list[float] = []
    size = 0
    for _ in range(requests):
        started = time.perf_counter()
        response = await http.get(path, headers=headers)
        body = response.content
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: HTTP {response.status_code}: {body[:300]!r}")
        size = len(body)
    return times, size


async def check_listing(client: ServerClient, room: str, workers: list[SimWorker]) -> None:
    """The room lists exactly the simulated workers, all online; fails loudly otherwise."""
    views = await client.workers(room)
    expected = {w.worker_id for w in workers}
    online = {v.id for v in views if v.status == "online"}
    others = sorted(f"{v.id}={v.status}" for v in views if v.status != "online")
    if online != expected or others:
        raise AssertionError(
            f"room {room} lists {len(online)} workers online, expected {len(expected)}; "
            f"missing {sorted(expected - online)[:10]}, unexpected {sorted(online - expected)[:10]}"
            f", not online {others[:10]}"
        )


def check_workers(workers: list[SimWorker], server: Server) -> None:
    closed = [f"{w.worker_id}: {w.closed}" for w in workers if w.closed]
    chatty = [f"{w.worker_id}: {w.unexpected[0]}" for w in workers if w.unexpected]
    if closed or chatty or not server.alive():
        raise AssertionError(
            f"{len(closed)} simulated workers were disconnected, {len(chatty)} got messages, "
            f"server alive: {server.alive()}\n"
            + "\n".join((closed + chatty)[:20])
            + f"\n--- server log tail ---\n{server.log_tail()}"
        )


async def register_all(
    workers: list[SimWorker], batch: int, timeout: float
) -> tuple[float, list[float]]:
    """Connect and register in concurrent batches; total seconds and per-connection times."""
    started = time.perf_counter()
    each: list[float] = []
    for first in range(0, len(workers), batch):
        chunk = workers[first : first + batch]
        results = await asyncio.gather(
            *(w.register(timeout) for w in chunk), return_exceptions=True
        )
        failed = [
            (w, r) for w, r in zip(chunk, results, strict=True) if isinstance(r, BaseException)
        ]
        if failed:
            detail = "\n".join(f"{w.worker_id}: {type(r).__name__}: {r}" for w, r in failed[:10])
            raise RuntimeError(
                f"{len(failed)} of {len(chunk)} registrations failed in the batch starting at "
                f"worker {first} (after {time.perf_counter() - started:.1f} s):\n{detail}"
            )
        for w, r in zip(chunk, results, strict=True):
            assert isinstance(r, float)
            each.append(r * 1000)
            w.start()
    return time.perf_counter() - started, each


async def close_all(workers: list[SimWorker], batch: int) -> None:
    for first in range(0, len(workers), batch):
        await asyncio.gather(*(w.close() for w in workers[first : first + batch]))


async def measure(
    n: int,
    requests: int,
    batch: int,
    database_url: str | None,
    keep_log: Path | None,
    gc_stats: bool,
    room_count: int = 1,
) -> Result:
    root = Path(tempfile.mkdtemp(prefix="sleap-rtc-presence-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLEAP_RTC_")}
    env["SLEAP_RTC_HOME"] = str(root / "home")
    env["PYTHONUNBUFFERED"] = "1"
    server = Server(root, env, database_url, gc_stats)
    tag = uuid.uuid4().hex[:8]
    user, room, warm_room = f"bench-{tag}", f"bench-{n}-{tag}", f"warmup-{tag}"
    workers: list[SimWorker] = []
    others: list[str] = []
    client: ServerClient | None = None
    try:
        server.add_user(user)
        url = server.start()
        client = ServerClient(url, store=CredentialStore(root / "home" / "credentials.json"))
        await client.login(user, PASSWORD)
        await client.create_room(room)
        await client.create_room(warm_room)
        secrets = [(await client.create_key(room)).secret]
        others += [f"{room}-{i}" for i in range(1, room_count)]
        for other in others:
            await client.create_room(other)
            secrets.append((await client.create_key(other)).secret)
        warm_secret = (await client.create_key(warm_room)).secret
        ws_url = client.websocket_url("/v1/worker")
        path = f"/v1/rooms/{room}/workers"

        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            # Warm-up: the WebSocket path once (another room), and the listing, also
            # concurrently so the server's thread pool has grown before the baseline.
            warm = SimWorker(0, ws_url, warm_secret)
            await warm.register(30)
            await warm.heartbeat()
            await warm.close()
            token = await client.access_token()
            headers = {"authorization": f"Bearer {token}"}
            for _ in range(3):
                answers = await asyncio.gather(
                    *(http.get(path, headers=headers) for _ in range(50))
                )
                if any(a.status_code != 200 for a in answers):
                    raise RuntimeError(f"warm-up GET {path} failed: {answers[0].text[:300]}")
            cpu = server.cpu_s()
            empty, _ = await time_listing(http, path, token, requests)
            cpu_empty = (server.cpu_s() - cpu) * 1000 / requests
            await asyncio.sleep(1.0)
            rss_before = server.rss()

            # Worker i goes to room i % R: the listed room (index 0) gets every R-th.
            workers = [SimWorker(i + 1, ws_url, secrets[i % room_count]) for i in range(n)]
            listed = workers[::room_count]
            cpu = server.cpu_s()
            register_s, each = await register_all(workers, batch, timeout=60)
            cpu_register = (server.cpu_s() - cpu) * 1000 / n
            rss_registered = server.rss()
            await check_listing(client, room, listed)

            beats = sum(w.heartbeats for w in workers)
            token = await client.access_token()
            cpu, log_at = server.cpu_s(), server.log_offset()
            loaded, size = await time_listing(http, path, token, requests)
            cpu_loaded = (server.cpu_s() - cpu) * 1000 / requests
            gc_loaded = server.gc_pauses(log_at, server.log_offset()) if gc_stats else None
            beats = sum(w.heartbeats for w in workers) - beats
            rss_after = server.rss()
            await check_listing(client, room, listed)
            check_workers(workers, server)

        problems = server.problems()
        for line in problems[:10]:
            print(f"  server log: {line}", flush=True)
        return Result(
            n=n,
            rooms=room_count,
            rss_before=rss_before,
            rss_registered=rss_registered,
            rss_after=rss_after,
            register_s=register_s,
            connect_p50_ms=statistics.median(each),
            connect_p99_ms=percentile(each, 99),
            empty_p50_ms=statistics.median(empty),
            empty_p99_ms=percentile(empty, 99),
            loaded_p50_ms=statistics.median(loaded),
            loaded_p99_ms=percentile(loaded, 99),
            response_bytes=size,
            heartbeats_during=beats,
            log_problems=len(problems),
            cpu_per_register_ms=cpu_register,
            cpu_per_get_empty_ms=cpu_empty,
            cpu_per_get_loaded_ms=cpu_loaded,
            gc_loaded=gc_loaded,
        )
    except BaseException:
        if server.process is not None:
            print(f"--- server log tail ---\n{server.log_tail()}", file=sys.stderr, flush=True)
        raise
    finally:
        with contextlib.suppress(Exception):
            await close_all(workers, batch)
        if client is not None:
            if database_url and server.alive():
                for name in (room, warm_room, *others):
                    with contextlib.suppress(Exception):
                        await client.delete_room(name)
            await client.aclose()
        server.stop()
        if keep_log is not None and server.log.exists():
            shutil.copy(server.log, keep_log.with_name(f"{keep_log.name}.N{n}.log"))
        shutil.rmtree(root, ignore_errors=True)


def _table(title: str, columns: list[tuple[str, int]], rows: list[list[str]]) -> None:
    print()
    print(title)
    print("  ".join(f"{name:>{width}}" for name, width in columns))
    print("  ".join("-" * width for _, width in columns))
    for row in rows:
        print("  ".join(f"{cell:>{width}}" for cell, (_, width) in zip(row, columns, strict=True)))


def print_tables(results: list[Result], requests: int, database: str, gc_stats: bool) -> None:
    mib = 1024 * 1024
    _table(
        f"memory and registration ({database}; RSS of the server process in MiB; "
        "'conn' = connect + register of one worker while its batch connects)",
        [
            ("N", 6),
            ("RSS before", 10),
            ("RSS all reg.", 12),
            ("RSS after", 9),
            ("KiB/conn", 8),
            ("register s", 10),
            ("workers/s", 9),
            ("conn p50 ms", 11),
            ("conn p99 ms", 11),
            ("srv CPU ms/reg", 14),
        ],
        [
            [
                str(r.n),
                f"{r.rss_before / mib:.1f}",
                f"{r.rss_registered / mib:.1f}",
                f"{r.rss_after / mib:.1f}",
                f"{r.kib_per_conn:.1f}",
                f"{r.register_s:.2f}",
                f"{r.n / r.register_s:.0f}",
                f"{r.connect_p50_ms:.1f}",
                f"{r.connect_p99_ms:.1f}",
                f"{r.cpu_per_register_ms:.2f}",
            ]
            for r in results
        ],
    )
    columns = [
        ("N", 6),
        ("answer KiB", 10),
        ("empty p50", 9),
        ("empty p99", 9),
        ("N p50", 8),
        ("N p99", 8),
        ("x p50", 6),
        ("x p99", 6),
        ("srv CPU ms/GET empty", 20),
        ("srv CPU ms/GET N", 16),
        ("heartbeats", 10),
    ]
    if gc_stats:
        columns += [("full GCs", 8), ("max GC ms", 9), ("GC ms/GET", 9)]
    rows = []
    for r in results:
        row = [
            str(r.n),
            f"{r.response_bytes / 1024:.1f}",
            f"{r.empty_p50_ms:.2f}",
            f"{r.empty_p99_ms:.2f}",
            f"{r.loaded_p50_ms:.2f}",
            f"{r.loaded_p99_ms:.2f}",
            f"{r.loaded_p50_ms / r.empty_p50_ms:.1f}",
            f"{r.loaded_p99_ms / r.empty_p99_ms:.1f}",
            f"{r.cpu_per_get_empty_ms:.2f}",
            f"{r.cpu_per_get_loaded_ms:.2f}",
            str(r.heartbeats_during),
        ]
        if gc_stats and r.gc_loaded is not None:
            row += [
                str(r.gc_loaded.full),
                f"{r.gc_loaded.full_max_ms:.0f}",
                f"{r.gc_loaded.total_ms / requests:.1f}",
            ]
        rows.append(row)
    _table(
        f"discovery: GET /v1/rooms/{{room}}/workers, {requests} sequential requests, ms; "
        "'empty' = the same room before any worker connected; 'heartbeats' = sent by the "
        f"simulated workers (every {HEARTBEAT_INTERVAL:g} s) while the N-worker listing was timed"
        + ("; GC = the server's garbage collections during it" if gc_stats else ""),
        columns,
        rows,
    )
    print()
    for r in results:
        extra = f"; {r.log_problems} warnings/errors in the server log" if r.log_problems else ""
        print(r.summary() + extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[100, 1000], metavar="N")
    parser.add_argument("--requests", type=int, default=200, help="GETs per latency measurement")
    parser.add_argument("--batch", type=int, default=100, help="connections opened at once")
    parser.add_argument(
        "--rooms", type=int, default=1, help="spread the workers over this many rooms"
    )
    parser.add_argument(
        "--database-url", metavar="URL", help="PostgreSQL instead of a temporary SQLite file"
    )
    parser.add_argument(
        "--keep-log", type=Path, metavar="PREFIX", help="copy each server log to PREFIX.N<n>.log"
    )
    parser.add_argument(
        "--gc-stats",
        action="store_true",
        help="run the server under a wrapper that times its garbage collections",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="N=20 and 20 requests (overrides --workers/--requests): a self-check",
    )
    args = parser.parse_args()
    if args.quick:
        args.workers, args.requests = [20], 20
    limit = raise_nofile_limit()
    if max(args.workers) + 256 > limit:
        raise SystemExit(
            f"open-file limit is {limit}: too low for {max(args.workers)} connections "
            "(raise the hard limit, e.g. `ulimit -Hn`)"
        )
    database = "PostgreSQL" if args.database_url else "SQLite"
    results: list[Result] = []
    for n in args.workers:
        print(f"N={n}: starting a server and {n} simulated workers ...", flush=True)
        result = asyncio.run(
            measure(
                n,
                args.requests,
                args.batch,
                args.database_url,
                args.keep_log,
                args.gc_stats,
                args.rooms,
            )
        )
        print("  " + result.summary(), flush=True)
        results.append(result)
    print_tables(results, args.requests, database, args.gc_stats)


if __name__ == "__main__":
    main()
