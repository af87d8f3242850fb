"""Remote jobs through one real server and one real worker: latency and overhead.

A ``sleap-rtc server`` (SQLite in a temporary folder) and a ``sleap-rtc worker
--device cpu`` are started as subprocesses on loopback (WebRTC host candidates pinned
to 127.0.0.1 on both sides), a user, a room and a worker key are created, and this
process talks to the worker through :class:`~sleap_rtc.client.jobs.WorkerSession`
as ``sleap-rtc train`` would. Measured:

1. **submit → answer**, for each transport (``webrtc``, ``relay``): ``--submissions``
   jobs that validation rejects (a config path that doesn't exist inside the mount:
   submit → JOB_REJECTED, no sleap-nn started) and ``--accepted`` real train jobs
   (submit → JOB_ACCEPTED; each is cancelled at once and its JOB_FAILED(CANCELLED)
   awaited before the next). Baseline: ``session.ping()`` (PING → PONG) on the same
   channel, timed alternately with the rejected submissions; p50/p99 and the ratios
   are printed. One unmeasured warm-up of each kind comes first.

2. **epoch end → client**: for every JOB_PROGRESS with ``progress.epoch_done`` of the
   remote training runs of (3), the client's receive time (``time.time()`` when the
   event comes out of ``handle.events()``) minus the time the worker learned that
   the epoch ended. sleap-nn's ZMQ messages carry no timestamp and its log lines and
   ``training_log.csv`` have none finer than a second, so the worker runs under a
   small wrapper (the same CLI, like ``server_presence.py --gc-stats``) that writes
   ``time.time()`` to a file each time the worker's progress tracker turns a ZMQ
   ``epoch_end`` into epoch-done progress, before that progress is queued. The lag
   thus covers the worker's own path (job store write, job service, channel) and the
   channel to this process, not sleap-nn's loopback ZMQ hop (sub-millisecond). Both
   stamps come from the same clock (one machine). Also reported: the lag from the
   COMPLETE record's ``updated_at`` in the worker's job store (``session.status()``)
   to this process receiving JOB_COMPLETE, which needs no wrapper. Baseline: the
   webrtc ping round trip from (1).

3. **remote vs direct**: the tiny demo ``single_instance`` config trained for
   ``--epochs`` epochs on generated demo data, ``sleap-nn train`` run directly as a
   subprocess (as in ``local_vs_direct.py``) vs submitted over webrtc and waited for
   (submit → JOB_COMPLETE; the session is opened before the clock starts),
   ``--repeat`` times each, in ABBA order. ``OMP_NUM_THREADS=1`` for both.

    .venv/bin/python bench/remote_jobs.py --quick     # self-check: 10 submissions, 1 epoch
    .venv/bin/python bench/remote_jobs.py             # 50 submissions, 3 epochs, 2 repeats
    .venv/bin/python bench/remote_jobs.py --submissions 200 --epochs 5 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from direct_sleap_nn import train_argv

from sleap_rtc.client.credentials import CredentialStore
from sleap_rtc.client.jobs import JobRejectedError, WorkerSession
from sleap_rtc.client.session import ServerClient
from sleap_rtc.demo.data import make_demo_data
from sleap_rtc.jobs.events import TrainProgress
from sleap_rtc.jobs.specs import TrainSpec
from sleap_rtc.protocol import jobs as p
from sleap_rtc.transport.webrtc import pin_host_addresses

PASSWORD = "bench-remote-jobs-password"
CONFIG = "single_instance"
_LISTENING = re.compile(r"listening on (http://\S+)")
_ONLINE = re.compile(r"worker \S+ \((\S+)\) online in room (\S+)")
_PROBLEM = re.compile(r" (WARNING|ERROR|CRITICAL) |Traceback")
STAMPS_ENV = "BENCH_EPOCH_STAMPS"
#: The worker runs under this wrapper: the same CLI, plus one line per finished epoch
#: (``time.time() model_index epoch``) in the file named by $BENCH_EPOCH_STAMPS, written
#: when the worker's progress tracker reports the epoch done, before it is queued.
_WORKER_WRAPPER = """
import os, sys, time
from sleap_rtc.engine import progress as _progress
_feed = _progress.TrainProgressTracker.feed
_stamps = open(os.environ["BENCH_EPOCH_STAMPS"], "a", buffering=1)
def _stamped(self, message):
    result = _feed(self, message)
    if result is not None and result.epoch_done:
        _stamps.write(f"{time.time():.6f} {result.model_index} {result.epoch}\\n")
    return result
_progress.TrainProgressTracker.feed = _stamped
sys.argv[0] = "sleap-rtc"
from sleap_rtc.cli import main
main()
"""


def percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLEAP_RTC_")}
    env["SLEAP_RTC_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# -- the server and worker processes ----------------------------------------------------------


class Proc:
    """A child process in its own session; stdout and stderr in files under ``root``."""

    def __init__(self, name: str, root: Path, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.out = root / f"{name}.out"
        self.log = root / f"{name}.log"
        with self.out.open("wb") as out, self.log.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                start_new_session=True,
            )

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first match of ``pattern`` in the process's stdout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = pattern.search(self.out.read_text(errors="replace"))
            if match:
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit(
            f"{self.name}: no {pattern.pattern!r} within {timeout:g} s "
            f"(exit code {self.process.poll()}):\n{self.log_tail()}"
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"(no {self.name} log)"
        return "\n".join(text[-lines:])

    def problems(self) -> list[str]:
        """Warnings, errors and tracebacks in the process's log."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        return [line for line in text if _PROBLEM.search(line)]

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def stop(self) -> int | None:
        """TERM, then KILL; anything left in its process group goes too."""
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(10)
        self._signal(signal.SIGKILL)
        return self.process.returncode


def start_server(root: Path) -> tuple[Proc, str]:
    data_dir = ["--data-dir", str(root / "server-data")]
    env = clean_env(root / "server-home")
    add_user = [sys.executable, "-m", "sleap_rtc", "server", "add-user", "bench"]
    subprocess.run(
        [*add_user, "--password-stdin", *data_dir],
        env=env,
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    server = Proc(
        "server",
        root,
        [sys.executable, "-m", "sleap_rtc", "server", "--port", "0", *data_dir],
        env,
    )
    return server, server.wait_for(_LISTENING, 60).group(1)


def start_worker(root: Path, url: str, room: str, key: str, mount: Path) -> tuple[Proc, str]:
    argv = [
        *(sys.executable, "-c", _WORKER_WRAPPER, "worker"),
        *("--server", url, "--room", room, "--name", "bench-worker"),
        *("--mount", f"{mount}:data", "--models-dir", str(root / "models"), "--device", "cpu"),
    ]
    env = clean_env(
        root / "worker-home",
        SLEAP_RTC_WORKER_KEY=key,
        SLEAP_RTC_ICE_HOSTS="127.0.0.1",
        OMP_NUM_THREADS="1",
        **{STAMPS_ENV: str(root / "epoch-stamps.txt")},
    )
    worker = Proc("worker", root, argv, env)
    return worker, worker.wait_for(_ONLINE, 120).group(1)


@dataclass
class BenchRoom:
    client: ServerClient
    room: str
    worker_id: str
    procs: list[Proc]


@contextlib.asynccontextmanager
async def bench_room(root: Path, mount: Path) -> AsyncIterator[BenchRoom]:
    """A server, a logged-in client, a new room and a worker in it that mounts ``mount``.

    On the way out the processes are stopped; after a failure their log tails are
    printed first.
    """
    procs: list[Proc] = []
    client: ServerClient | None = None
    try:
        server, url = start_server(root)
        procs.append(server)
        client = ServerClient(url, store=CredentialStore(root / "home" / "credentials.json"))
        await client.login("bench", PASSWORD)
        room = f"bench-{uuid.uuid4().hex[:8]}"
        await client.create_room(room)
        key = (await client.create_key(room)).secret
        worker, worker_id = start_worker(root, url, room, key, mount)
        procs.append(worker)
        yield BenchRoom(client, room, worker_id, procs)
    except BaseException:
        for proc in procs:
            print(f"--- {proc.name} log tail ---\n{proc.log_tail()}", file=sys.stderr, flush=True)
        raise
    finally:
        if client is not None:
            await client.aclose()
        for proc in reversed(procs):
            proc.stop()


# -- 1. submit → answer -----------------------------------------------------------------------


@dataclass
class Latency:
    transport: str
    ping_ms: list[float] = field(default_factory=list)
    rejected_ms: list[float] = field(default_factory=list)
    accepted_ms: list[float] = field(default_factory=list)
    cancel_ms: list[float] = field(default_factory=list)
    reject_codes: set[str] = field(default_factory=set)

    def summary(self) -> str:
        ping50, ping99 = statistics.median(self.ping_ms), percentile(self.ping_ms, 99)
        rej50, rej99 = statistics.median(self.rejected_ms), percentile(self.rejected_ms, 99)
        acc50, acc99 = statistics.median(self.accepted_ms), percentile(self.accepted_ms, 99)
        return (
            f"{self.transport}: submit→JOB_REJECTED p50 {rej50:.2f} ms p99 {rej99:.2f} ms "
            f"(x{rej50 / ping50:.1f}/x{rej99 / ping99:.1f} vs ping), submit→JOB_ACCEPTED "
            f"p50 {acc50:.1f} ms p99 {acc99:.1f} ms (x{acc50 / ping50:.1f}/x{acc99 / ping99:.1f} "
            f"vs ping); ping p50 {ping50:.2f} ms p99 {ping99:.2f} ms"
        )


async def timed_ping(session: WorkerSession) -> float:
    started = time.perf_counter()
    await session.ping()
    return (time.perf_counter() - started) * 1000


async def timed_reject(session: WorkerSession, spec: TrainSpec, codes: set[str]) -> float:
    started = time.perf_counter()
    try:
        handle = await session.submit(spec)
    except JobRejectedError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        codes.update(e.code for e in exc.errors)
        return elapsed
    raise AssertionError(f"job {handle.job_id} was accepted; expected a rejection")


async def timed_accept(session: WorkerSession, spec: TrainSpec) -> tuple[float, float]:
    """Submit → JOB_ACCEPTED, then cancel → JOB_FAILED(CANCELLED), both in ms."""
    started = time.perf_counter()
    handle = await session.submit(spec)
    accepted = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    await handle.cancel()
    result = await asyncio.wait_for(handle.wait(), 120)
    cancelled = (time.perf_counter() - started) * 1000
    if not isinstance(result, p.JobFailed) or result.state != "CANCELLED":
        raise AssertionError(f"job {handle.job_id}: expected CANCELLED, got {result!r}")
    return accepted, cancelled


async def measure_latency(
    client: ServerClient,
    room: str,
    worker_id: str,
    transport: str,
    config: Path,
    mount: Path,
    submissions: int,
    accepted: int,
) -> Latency:
    result = Latency(transport)
    missing = TrainSpec(config_paths=[str(mount / "no-such-config.yaml")], max_epochs=1)
    real = TrainSpec(config_paths=[str(config)], max_epochs=1)
    session = await WorkerSession.open(
        client,
        room,
        worker_id,
        transport="webrtc" if transport == "webrtc" else "relay",
    )
    try:
        if session.transport != transport:
            raise AssertionError(f"asked for {transport}, got a {session.transport} channel")
        codes: set[str] = set()
        for _ in range(5):  # warm-up
            await timed_ping(session)
            await timed_reject(session, missing, codes)
        await timed_accept(session, real)
        for _ in range(submissions):
            result.ping_ms.append(await timed_ping(session))
            result.rejected_ms.append(await timed_reject(session, missing, result.reject_codes))
        for _ in range(accepted):
            accept_ms, cancel_ms = await timed_accept(session, real)
            result.accepted_ms.append(accept_ms)
            result.cancel_ms.append(cancel_ms)
    finally:
        await session.close()
    return result


# -- 2. and 3. training: remote vs direct -----------------------------------------------------


@dataclass
class RemoteRun:
    wall_s: float
    epoch_lag_ms: list[float]
    complete_lag_ms: float


async def direct(config: Path, labels: Path, models: Path, name: str, epochs: int) -> float:
    """``sleap-nn train`` as a subprocess (as in local_vs_direct.py), in seconds."""
    argv = train_argv(config, labels, models, name, epochs)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    _, err = await proc.communicate()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join(err.decode(errors="replace").splitlines()[-20:])
        raise SystemExit(f"direct sleap-nn train failed (exit code {proc.returncode}):\n{tail}")
    return elapsed


def read_stamps(path: Path, offset: int) -> dict[tuple[int, int], float]:
    """The worker's epoch-end stamps written after ``offset``: (model, epoch) → time."""
    stamps: dict[tuple[int, int], float] = {}
    if not path.exists():
        return stamps
    with path.open("rb") as handle:
        handle.seek(offset)
        for line in handle.read().decode().splitlines():
            when, model, epoch = line.split()
            stamps[(int(model), int(epoch))] = float(when)
    return stamps


async def remote(
    client: ServerClient, room: str, worker_id: str, config: Path, epochs: int, stamps: Path
) -> RemoteRun:
    """Submit over webrtc, wait for JOB_COMPLETE; wall time and event lags."""
    spec = TrainSpec(config_paths=[str(config)], max_epochs=epochs)
    offset = stamps.stat().st_size if stamps.exists() else 0
    session = await WorkerSession.open(client, room, worker_id, transport="webrtc")
    try:
        received: dict[tuple[int, int], float] = {}
        done_at = 0.0
        started = time.perf_counter()
        handle = await session.submit(spec)
        async for event in handle.events():
            now = done_at = time.time()
            progress = getattr(event, "progress", None)
            if isinstance(progress, TrainProgress) and progress.epoch_done:
                received.setdefault((progress.model_index, progress.epoch), now)
        wall = time.perf_counter() - started
        if not isinstance(handle.result, p.JobComplete):
            raise SystemExit(f"remote training failed: {handle.result!r}")
        final = await session.status(handle.job_id)
    finally:
        await session.close()
    ended = read_stamps(stamps, offset)
    if set(received) != set(ended) or len(received) != epochs:
        raise AssertionError(
            f"epoch-done events {sorted(received)} vs worker stamps {sorted(ended)} "
            f"({epochs} epochs expected)"
        )
    lags = [(received[key] - ended[key]) * 1000 for key in sorted(received)]
    return RemoteRun(wall, lags, (done_at - final.updated_at) * 1000)


# -- the whole run ----------------------------------------------------------------------------


@dataclass
class Results:
    latency: list[Latency]
    direct_s: list[float]
    remote: list[RemoteRun]
    problems: dict[str, list[str]]


async def run(args: argparse.Namespace, root: Path) -> Results:
    pin_host_addresses(["127.0.0.1"])
    os.environ["SLEAP_RTC_HOME"] = str(root / "home")  # nothing here reads the user's own
    data = make_demo_data(root / "data")
    config = data.configs[CONFIG]
    async with bench_room(root, root / "data") as opened:
        client, room, worker_id, procs = opened.client, opened.room, opened.worker_id, opened.procs
        print(f"worker {worker_id} online", flush=True)

        latency = []
        for transport in ("webrtc", "relay"):
            result = await measure_latency(
                client,
                room,
                worker_id,
                transport,
                config,
                root / "data",
                args.submissions,
                args.accepted,
            )
            print("  " + result.summary(), flush=True)
            latency.append(result)

        stamps = root / "epoch-stamps.txt"
        direct_s: list[float] = []
        remotes: list[RemoteRun] = []
        for i in range(args.repeat):
            order = ("direct", "remote") if i % 2 == 0 else ("remote", "direct")
            for what in order:
                if what == "direct":
                    direct_s.append(
                        await direct(
                            config, data.labels_path, root / "direct", f"d{i}", args.epochs
                        )
                    )
                else:
                    remotes.append(
                        await remote(client, room, worker_id, config, args.epochs, stamps)
                    )
            print(
                f"  training run {i + 1}: direct {direct_s[-1]:.2f} s, "
                f"remote {remotes[-1].wall_s:.2f} s",
                flush=True,
            )
        for proc in procs:
            if not proc.alive():
                raise SystemExit(f"{proc.name} exited early:\n{proc.log_tail()}")
        return Results(latency, direct_s, remotes, {proc.name: proc.problems() for proc in procs})


def _table(title: str, columns: list[tuple[str, int]], rows: list[list[str]]) -> None:
    print()
    print(title)
    print("  ".join(f"{name:>{width}}" for name, width in columns))
    print("  ".join("-" * width for _, width in columns))
    for row in rows:
        print("  ".join(f"{cell:>{width}}" for cell, (_, width) in zip(row, columns, strict=True)))


def report(results: Results, args: argparse.Namespace) -> None:
    rows = []
    for r in results.latency:
        ping50, ping99 = statistics.median(r.ping_ms), percentile(r.ping_ms, 99)
        rej50, rej99 = statistics.median(r.rejected_ms), percentile(r.rejected_ms, 99)
        acc50, acc99 = statistics.median(r.accepted_ms), percentile(r.accepted_ms, 99)
        rows.append(
            [
                r.transport,
                f"{ping50:.2f}",
                f"{ping99:.2f}",
                f"{rej50:.2f}",
                f"{rej99:.2f}",
                f"{rej50 / ping50:.1f}",
                f"{rej99 / ping99:.1f}",
                f"{acc50:.1f}",
                f"{acc99:.1f}",
                f"{acc50 / ping50:.1f}",
                f"{statistics.median(r.cancel_ms):.0f}",
            ]
        )
    codes = ", ".join(sorted(set().union(*(r.reject_codes for r in results.latency))))
    _table(
        f"submit → answer, ms: {args.submissions} rejected submissions (code {codes}) timed "
        f"alternately with as many pings; {args.accepted} accepted train jobs, each cancelled "
        "at once ('cancel' = cancel → JOB_FAILED(CANCELLED)); x = ratio to ping",
        [
            ("transport", 9),
            ("ping p50", 8),
            ("ping p99", 8),
            ("reject p50", 10),
            ("reject p99", 10),
            ("x p50", 6),
            ("x p99", 6),
            ("accept p50", 10),
            ("accept p99", 10),
            ("x p50", 6),
            ("cancel p50", 10),
        ],
        rows,
    )

    webrtc_ping = statistics.median(
        next(r for r in results.latency if r.transport == "webrtc").ping_ms
    )
    lags = [lag for run in results.remote for lag in run.epoch_lag_ms]
    complete = [run.complete_lag_ms for run in results.remote]
    _table(
        "event lag over webrtc, ms: 'epoch' = worker's epoch-end stamp → client receives the "
        "epoch-done JOB_PROGRESS; 'complete' = job store COMPLETE updated_at → client receives "
        "JOB_COMPLETE; x = ratio to the webrtc ping round trip p50",
        [
            ("events", 10),
            ("p50", 7),
            ("p99", 7),
            ("max", 7),
            ("x p50", 6),
        ],
        [
            [
                f"{len(values)} {what}",
                f"{statistics.median(values):.2f}",
                f"{percentile(values, 99):.2f}",
                f"{max(values):.2f}",
                f"{statistics.median(values) / webrtc_ping:.1f}",
            ]
            for what, values in (("epoch", lags), ("complete", complete))
        ],
    )

    _table(
        f"training wall time, s: {CONFIG}, {args.epochs} epoch(s), CPU, OMP_NUM_THREADS=1 "
        "(remote = submit over webrtc → JOB_COMPLETE)",
        [("run", 4), ("direct", 8), ("remote", 8), ("ratio", 6)],
        [
            [str(i + 1), f"{d:.2f}", f"{r.wall_s:.2f}", f"{r.wall_s / d:.3f}"]
            for i, (d, r) in enumerate(zip(results.direct_s, results.remote, strict=True))
        ],
    )

    print()
    for lat in results.latency:
        print(lat.summary())
    lag50 = statistics.median(lags)
    print(
        f"epoch end → client JOB_PROGRESS over webrtc: p50 {lag50:.2f} ms, max {max(lags):.2f} "
        f"ms over {len(lags)} epochs (x{lag50 / webrtc_ping:.1f} vs ping); COMPLETE stored → "
        f"JOB_COMPLETE p50 {statistics.median(complete):.2f} ms"
    )
    d_med = statistics.median(results.direct_s)
    r_med = statistics.median([run.wall_s for run in results.remote])
    print(
        f"median: direct {d_med:.2f} s, remote over webrtc {r_med:.2f} s "
        f"(ratio {r_med / d_med:.3f}) "
        f"({CONFIG}, {args.epochs} epochs, {args.repeat} runs each, CPU)"
    )
    for name, lines in results.problems.items():
        for line in lines[:10]:
            print(f"  {name} log: {line}")
        if lines:
            print(f"  {len(lines)} warnings/errors in the {name} log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--submissions", type=int, default=50, help="rejected submissions (and pings) timed"
    )
    parser.add_argument("--accepted", type=int, default=5, help="accepted (cancelled) jobs timed")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per training run")
    parser.add_argument("--repeat", type=int, default=2, help="training runs of each kind")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10 submissions, 2 accepted, 1 epoch, 1 run each (overrides those): a self-check",
    )
    args = parser.parse_args()
    if args.quick:
        args.submissions, args.accepted, args.epochs, args.repeat = 10, 2, 1, 1
    root = Path(tempfile.mkdtemp(prefix="sleap-rtc-remote-jobs-"))
    try:
        results = asyncio.run(run(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(results, args)


if __name__ == "__main__":
    main()
