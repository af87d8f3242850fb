"""The job index on one real ``sleap-rtc server``: report ingest, listings, catch-up.

A fresh server process is started on loopback (SQLite in a temporary folder, or
``--database-url`` for PostgreSQL), a user, a room and one worker key are created,
and one simulated worker connects to ``/v1/worker`` over the real protocol. It
reports ``--jobs`` training jobs the way a worker does: each first as RUNNING with
no loss points, then in 10 reports of 10 loss points each, then COMPLETE (12
reports a job). Measured, in one run:

* ingest: the worker sends every report (encoded beforehand) as fast as the server
  reads them, with a ``ping`` after every ``--window`` reports; the server handles a
  connection's messages in order, so a ``pong`` means every report before it is
  stored. The next window goes out before the last ``pong`` is in, so the server is
  never idle, and at most two windows are in flight (``--window 0``: none but the
  socket's flow control, as the worker's reporter sends; a backlog the server takes
  longer than its WebSocket ping timeout to read closes the connection). Reports per
  second, the server process's CPU time per report, and the lag: the longest a
  ``pong`` took. Then, through the API, the index must hold every job COMPLETE,
  newest first, and a job must have its 100 points, or the run fails;
* listing: ``GET /v1/rooms/{room}/jobs?limit=50`` repeated, one at a time, with the
  index holding every job; the baseline, in the same run and room, is
  ``GET /v1/rooms/{room}/workers`` (one worker online); p50/p99 and the ratio;
* detail: ``GET /v1/rooms/{room}/jobs/{job}`` of one job with 1,000 loss points, by
  a unique prefix of its id and by its full id;
* registration catch-up: the worker reconnects a few times with an empty index (the
  baseline) and again after ingest; ``index_since`` in ``registered`` must be the
  last ``updated_at`` it sent, and the time to register (connect to ``registered``)
  is compared.

The simulated worker and the HTTP client share this process (one event loop); the
server is a separate process.

    .venv/bin/python bench/job_index.py --quick          # 200 jobs, 50 requests
    .venv/bin/python bench/job_index.py                  # 2,000 jobs, 200 requests
    .venv/bin/python bench/job_index.py --database-url postgresql://...

With ``--database-url`` the user, room and index rows stay in that database (the
room is deleted at the end, best effort); names are random so runs don't collide.

The file is over 500 lines because it holds, besides its four measurements, the
simulated reporting worker and the server set-up (``bench_room``) that
bench/dashboard.py imports, so that neither is written twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

# This folder is on sys.path when the file runs as a script: the server process and
# the timing helpers are server_presence.py's.
from server_presence import PASSWORD, Server, _table, percentile, time_listing
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sleap_rtc.client.credentials import CredentialStore
from sleap_rtc.client.session import ServerClient
from sleap_rtc.jobs.events import TrainProgress
from sleap_rtc.protocol import index as ix
from sleap_rtc.protocol.signaling import (
    Capabilities,
    Heartbeat,
    JobReport,
    Ping,
    Pong,
    Register,
    Registered,
    decode_server,
    encode,
)

EPOCHS = 100
POINTS_PER_REPORT = 10
DETAIL_MODELS, DETAIL_EPOCHS = 2, 500  # 1,000 points
RECONNECTS = 5
#: Clock step between two reports of the simulated worker (seconds).
STEP = 0.01

# -- what the worker reports ------------------------------------------------------------------


@dataclass
class Reports:
    messages: list[str]
    job_ids: list[str]
    #: ``updated_at`` of the last report: what ``index_since`` must say after them.
    last_updated: float


class Clock:
    """The simulated worker's clock: one step per report."""

    def __init__(self, start: float) -> None:
        self.now = start

    def tick(self) -> float:
        self.now = round(self.now + STEP, 3)
        return self.now


def _job(
    job_id: str,
    state: ix.JobStateName,
    created: float,
    updated: float,
    history: list[ix.StateEntry],
    progress: TrainProgress | None,
    **extra: object,
) -> ix.IndexedJob:
    return ix.IndexedJob.model_validate(
        {
            "job_id": job_id,
            "kind": "train",
            "owner": "bench",
            "state": state,
            "created_at": created,
            "updated_at": updated,
            "summary": f"train bench/configs/{job_id}.yaml on bench/labels.slp",
            "history": history,
            "progress": progress,
            **extra,
        }
    )


def _point(model: int, epoch: int, at: float) -> ix.LossPoint:
    loss = 1.0 / epoch
    return ix.LossPoint(model=model, epoch=epoch, loss=loss, val_loss=loss * 1.1, at=at)


def job_reports(job_id: str, clock: Clock, models: int, epochs: int, per_report: int) -> list[str]:
    """One training job's reports: RUNNING, its points ``per_report`` at a time, COMPLETE."""
    created = clock.tick()
    history = [
        ix.StateEntry(at=created, state="QUEUED"),
        ix.StateEntry(at=created, state="RUNNING"),
    ]
    out = [encode(JobReport(job=_job(job_id, "RUNNING", created, created, history, None)))]
    points = [(m, e) for m in range(1, models + 1) for e in range(1, epochs + 1)]
    progress: TrainProgress | None = None
    for first in range(0, len(points), per_report):
        at = clock.tick()
        batch = [_point(m, e, at) for m, e in points[first : first + per_report]]
        last = batch[-1]
        progress = TrainProgress(
            model_index=last.model,
            n_models=models,
            epoch=last.epoch,
            total_epochs=epochs,
            loss=last.loss,
            val_loss=last.val_loss,
            epoch_done=True,
        )
        job = _job(job_id, "RUNNING", created, at, history, progress)
        out.append(encode(JobReport(job=job, points=batch)))
    done = clock.tick()
    job = _job(
        job_id,
        "COMPLETE",
        created,
        done,
        [*history, ix.StateEntry(at=done, state="COMPLETE")],
        progress,
        exit_code=0,
        elapsed_s=round(done - created, 3),
        outputs=[f"bench/models/{job_id}"],
    )
    out.append(encode(JobReport(job=job)))
    return out


def ingest_reports(jobs: int, clock: Clock) -> Reports:
    messages: list[str] = []
    job_ids: list[str] = []
    for _ in range(jobs):
        job_id = uuid.uuid4().hex[:12]
        job_ids.append(job_id)
        messages += job_reports(job_id, clock, 1, EPOCHS, POINTS_PER_REPORT)
    return Reports(messages, job_ids, clock.now)


def unique_prefix(job_id: str, others: list[str], length: int = 6) -> str:
    prefix = job_id[:length]
    if any(o != job_id and o.startswith(prefix) for o in others):
        return unique_prefix(job_id, others, length + 1)
    return prefix


# -- the simulated worker ---------------------------------------------------------------------


class IndexWorker:
    """A worker connection: registers, sends job reports, heartbeats, syncs with a ping."""

    def __init__(self, url: str, secret: str, worker_id: str) -> None:
        self.url = url
        self.secret = secret
        self.worker_id = worker_id
        self.ws: ClientConnection | None = None
        self.registered: Registered | None = None
        self.unexpected: list[str] = []
        self.closed: str | None = None
        self._pongs: dict[str, asyncio.Future[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def register(self, timeout: float = 30) -> float:
        """Connect and register; seconds until ``registered``."""
        started = time.perf_counter()
        self.ws = await connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self.secret}"},
            open_timeout=timeout,
            ping_interval=None,  # the server pings; pongs are answered automatically
            close_timeout=5,
        )
        register = Register(worker_id=self.worker_id, capabilities=Capabilities(name="bench"))
        await self.ws.send(encode(register))
        reply = decode_server(await asyncio.wait_for(self.ws.recv(), timeout))
        elapsed = time.perf_counter() - started
        if not isinstance(reply, Registered) or reply.worker_id != self.worker_id:
            raise RuntimeError(f"{self.worker_id}: expected 'registered', got {reply}")
        self.registered = reply
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._beat())]
        return elapsed

    async def send_all(self, messages: list[str], window: int) -> float:
        """Send in order, as fast as the server reads; the longest wait for a pong (s).

        With ``window`` > 0 a ping follows every ``window`` reports, and the window
        after next waits for its pong: at most two windows are in flight and the
        server always has the next one to read. With 0 only the socket's flow control
        holds the sender back, as in the worker's reporter.
        """
        assert self.ws is not None
        step = window or len(messages)
        longest = 0.0
        in_flight: tuple[asyncio.Future[None], float] | None = None
        for first in range(0, len(messages), step):
            for message in messages[first : first + step]:
                await self.ws.send(message)
            if in_flight is not None:
                longest = max(longest, await self._pong(*in_flight))
            in_flight = await self._ping()
        if in_flight is not None:
            longest = max(longest, await self._pong(*in_flight))
        return longest

    async def sync(self) -> None:
        """Return once the server has handled everything sent before."""
        await self._pong(*await self._ping())

    async def _ping(self) -> tuple[asyncio.Future[None], float]:
        assert self.ws is not None
        nonce = uuid.uuid4().hex
        waiting = self._pongs[nonce] = asyncio.get_running_loop().create_future()
        await self.ws.send(encode(Ping(nonce=nonce)))
        return waiting, time.perf_counter()

    async def _pong(
        self, waiting: asyncio.Future[None], sent: float, timeout: float = 600
    ) -> float:
        try:
            await asyncio.wait_for(waiting, timeout)
        except asyncio.CancelledError:
            if self.closed is None:
                raise
            raise RuntimeError(f"worker {self.worker_id}: {self.closed}") from None
        return time.perf_counter() - sent

    async def _listen(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                message = decode_server(raw)
                waiting = (
                    self._pongs.pop(message.nonce, None) if isinstance(message, Pong) else None
                )
                if waiting is not None:
                    waiting.set_result(None)
                else:
                    self.unexpected.append(str(raw)[:300])
        except ConnectionClosed:
            pass
        self.closed = f"closed by server: {self.ws.close_code} {self.ws.close_reason}"
        for waiting in self._pongs.values():
            waiting.cancel()

    async def _beat(self) -> None:
        assert self.ws is not None and self.registered is not None
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.registered.heartbeat_interval)
                await self.ws.send(encode(Heartbeat()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
            self.closed = self.closed or "closed by the benchmark"

    def check(self) -> None:
        if self.unexpected or (self.closed and self.closed != "closed by the benchmark"):
            raise AssertionError(
                f"worker {self.worker_id}: {self.closed or 'connected'}; "
                f"{len(self.unexpected)} unexpected messages: {self.unexpected[:5]}"
            )


# -- one run ----------------------------------------------------------------------------------


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    cpu_ms: float  # server CPU per request
    kib: float  # size of the answer

    @classmethod
    def of(cls, times: list[float], cpu_s: float, size: int) -> Latency:
        return cls(
            p50_ms=statistics.median(times),
            p99_ms=percentile(times, 99),
            cpu_ms=cpu_s * 1000 / len(times),
            kib=size / 1024,
        )


@dataclass
class Result:
    database: str
    jobs: int
    reports: int
    requests: int
    window: int
    ingest_s: float
    ingest_cpu_s: float
    #: Longest a pong took during ingest: how far the server's reads lagged the sends.
    lag_s: float
    workers: Latency
    listing: Latency
    detail_prefix: Latency
    detail_id: Latency
    first_register_ms: float
    register_empty_ms: float
    register_catchup_ms: float
    index_since: float
    db_mib: float | None
    log_problems: int

    @property
    def reports_per_s(self) -> float:
        return self.reports / self.ingest_s

    @property
    def cpu_ms_per_report(self) -> float:
        return self.ingest_cpu_s * 1000 / self.reports

    def summary(self) -> dict[str, object]:
        figures: dict[str, object] = {
            "database": self.database,
            "jobs": self.jobs,
            "reports": self.reports,
            "window": self.window,
            "reports_per_s": round(self.reports_per_s, 1),
            "server_cpu_ms_per_report": round(self.cpu_ms_per_report, 3),
            "lag_s": round(self.lag_s, 2),
        }
        for name in ("workers", "listing", "detail_prefix", "detail_id"):
            latency: Latency = getattr(self, name)
            figures |= {
                f"{name}_p50_ms": round(latency.p50_ms, 2),
                f"{name}_p99_ms": round(latency.p99_ms, 2),
            }
        figures |= {
            "listing_x_p50": round(self.listing.p50_ms / self.workers.p50_ms, 2),
            "listing_x_p99": round(self.listing.p99_ms / self.workers.p99_ms, 2),
            "register_empty_ms": round(self.register_empty_ms, 2),
            "register_catchup_ms": round(self.register_catchup_ms, 2),
            "index_since": self.index_since,
            "db_mib": None if self.db_mib is None else round(self.db_mib, 2),
            "log_problems": self.log_problems,
        }
        return figures


async def timed(
    server: Server, http: httpx.AsyncClient, path: str, token: str, requests: int
) -> Latency:
    # Warm-up, also concurrently so the server's thread pool has grown.
    headers = {"authorization": f"Bearer {token}"}
    for _ in range(2):
        answers = await asyncio.gather(*(http.get(path, headers=headers) for _ in range(20)))
        if any(a.status_code != 200 for a in answers):
            raise RuntimeError(f"warm-up GET {path} failed: {answers[0].text[:300]}")
    cpu = server.cpu_s()
    times, size = await time_listing(http, path, token, requests)
    return Latency.of(times, server.cpu_s() - cpu, size)


async def reconnect(worker: IndexWorker, times: int) -> tuple[IndexWorker, list[float]]:
    """Close and register again ``times`` times; the last connection stays open."""
    each: list[float] = []
    for _ in range(times):
        worker.check()
        await worker.close()
        worker = IndexWorker(worker.url, worker.secret, worker.worker_id)
        each.append(await worker.register() * 1000)
    return worker, each


async def check_index(client: ServerClient, room: str, reports: Reports) -> None:
    """Every job is in the index, COMPLETE, newest first, with its points; fails otherwise."""
    jobs = len(reports.job_ids)
    page = await client.room_jobs(room, limit=1)
    done = await client.room_jobs(room, states=["COMPLETE"], limit=1)
    if page.total != jobs or done.total != jobs:
        raise AssertionError(
            f"the index of room {room} holds {page.total} jobs, {done.total} COMPLETE; "
            f"expected {jobs}, all COMPLETE"
        )
    if page.jobs[0].job_id != reports.job_ids[-1]:
        raise AssertionError(
            f"newest job listed is {page.jobs[0].job_id}, expected {reports.job_ids[-1]}"
        )
    one = await client.room_job(room, reports.job_ids[jobs // 2])
    if one.state != "COMPLETE" or len(one.points) != EPOCHS:
        raise AssertionError(
            f"job {one.job_id} is {one.state} with {len(one.points)} points, "
            f"expected COMPLETE with {EPOCHS}"
        )


@dataclass
class BenchRoom:
    """A fresh server with one user, logged in, and a room with a worker key."""

    root: Path
    server: Server
    client: ServerClient
    url: str
    user: str
    room: str
    secret: str
    tag: str
    #: The simulated worker to close at the end (the one connected last).
    worker: IndexWorker | None = None


@contextlib.asynccontextmanager
async def bench_room(name: str, database_url: str | None) -> AsyncIterator[BenchRoom]:
    """Start a server (SQLite in a temporary folder, or ``database_url``), make a user,
    a room ``bench-{name}-...`` and a worker key; stop and clean up everything after,
    printing the server's log tail if the run failed. With ``database_url`` the room is
    deleted at the end (best effort)."""
    root = Path(tempfile.mkdtemp(prefix=f"sleap-rtc-{name}-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLEAP_RTC_")}
    env["SLEAP_RTC_HOME"] = str(root / "home")
    env["PYTHONUNBUFFERED"] = "1"
    server = Server(root, env, database_url)
    tag = uuid.uuid4().hex[:8]
    user, room = f"bench-{tag}", f"bench-{name}-{tag}"
    client: ServerClient | None = None
    bench: BenchRoom | None = None
    try:
        server.add_user(user)
        url = server.start()
        client = ServerClient(url, store=CredentialStore(root / "home" / "credentials.json"))
        await client.login(user, PASSWORD)
        await client.create_room(room)
        secret = (await client.create_key(room)).secret
        bench = BenchRoom(root, server, client, url, user, room, secret, tag)
        yield bench
    except BaseException:
        if server.process is not None:
            print(f"--- server log tail ---\n{server.log_tail()}", file=sys.stderr, flush=True)
        raise
    finally:
        if bench is not None and bench.worker is not None:
            await bench.worker.close()
        if client is not None:
            if database_url and server.alive():
                with contextlib.suppress(Exception):
                    await client.delete_room(room)
            await client.aclose()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


async def measure(jobs: int, requests: int, window: int, database_url: str | None) -> Result:
    clock = Clock(round(time.time() - 86400, 3))
    reports = ingest_reports(jobs, clock)
    detail_id = uuid.uuid4().hex[:12]
    detail_reports = job_reports(
        detail_id, clock, DETAIL_MODELS, DETAIL_EPOCHS, ix.MAX_POINTS_PER_REPORT
    )
    async with bench_room("jobs", database_url) as bench:
        server, client, url, room, tag = (
            bench.server,
            bench.client,
            bench.url,
            bench.room,
            bench.tag,
        )
        ws_url = client.websocket_url("/v1/worker")

        # Registration with an empty index (the first one also creates the worker).
        worker = bench.worker = IndexWorker(ws_url, bench.secret, f"bench-{tag}")
        first_register_ms = await worker.register() * 1000
        worker, empty = await reconnect(worker, RECONNECTS)
        bench.worker = worker
        assert worker.registered is not None
        if worker.registered.index_since is not None:
            raise AssertionError(f"empty index: index_since {worker.registered.index_since}")

        # Ingest.
        await worker.sync()
        cpu, started = server.cpu_s(), time.perf_counter()
        try:
            lag = await worker.send_all(reports.messages, window)
        except RuntimeError as exc:
            if worker.ws is None or worker.ws.close_code != 1011:
                raise
            raise RuntimeError(
                f"{exc}: during ingest the server read the reports so much later than they "
                "were sent that its WebSocket keepalive ping timed out; --window bounds "
                "the reports in flight"
            ) from None
        ingest_s = time.perf_counter() - started
        ingest_cpu = server.cpu_s() - cpu
        worker.check()
        await check_index(client, room, reports)

        # Catch-up: what the server says it has, and what registering costs now.
        worker, catchup = await reconnect(worker, RECONNECTS)
        bench.worker = worker
        assert worker.registered is not None
        since = worker.registered.index_since
        if since != reports.last_updated:
            raise AssertionError(
                f"registered says index_since={since}, the last report sent had "
                f"updated_at={reports.last_updated}"
            )
        online = [w for w in await client.workers(room) if w.status == "online"]
        if [w.id for w in online] != [worker.worker_id]:
            raise AssertionError(f"room {room} lists {[w.id for w in online]} online")

        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            token = await client.access_token()
            base = f"/v1/rooms/{room}"
            workers_latency = await timed(server, http, f"{base}/workers", token, requests)
            listing = await timed(server, http, f"{base}/jobs?limit=50", token, requests)

            await worker.send_all(detail_reports, window)
            prefix = unique_prefix(detail_id, reports.job_ids)
            shown = await client.room_job(room, prefix)
            if shown.job_id != detail_id or len(shown.points) != DETAIL_MODELS * DETAIL_EPOCHS:
                raise AssertionError(
                    f"job {prefix}: {shown.job_id} with {len(shown.points)} points, expected "
                    f"{detail_id} with {DETAIL_MODELS * DETAIL_EPOCHS}"
                )
            token = await client.access_token()
            by_prefix = await timed(server, http, f"{base}/jobs/{prefix}", token, requests)
            by_id = await timed(server, http, f"{base}/jobs/{detail_id}", token, requests)
        worker.check()
        if not server.alive():
            raise AssertionError("the server exited")

        problems = server.problems()
        for line in problems[:10]:
            print(f"  server log: {line}", flush=True)
        data = bench.root / "server-data"
        db_mib = (
            None
            if database_url
            else sum(f.stat().st_size for f in data.rglob("*") if f.is_file()) / 1024 / 1024
        )
        return Result(
            database="PostgreSQL" if database_url else "SQLite",
            jobs=jobs,
            reports=len(reports.messages),
            requests=requests,
            window=window,
            ingest_s=ingest_s,
            ingest_cpu_s=ingest_cpu,
            lag_s=lag,
            workers=workers_latency,
            listing=listing,
            detail_prefix=by_prefix,
            detail_id=by_id,
            first_register_ms=first_register_ms,
            register_empty_ms=statistics.median(empty),
            register_catchup_ms=statistics.median(catchup),
            index_since=since,
            db_mib=db_mib,
            log_problems=len(problems),
        )


def print_tables(r: Result) -> None:
    _table(
        f"ingest ({r.database}; one worker, {r.jobs} jobs, {r.reports} reports: each job "
        f"RUNNING, {EPOCHS // POINTS_PER_REPORT} x {POINTS_PER_REPORT} loss points, COMPLETE; "
        + (f"a ping every {r.window} reports" if r.window else "flow control only")
        + "; lag = the longest a pong took)",
        [
            ("reports", 7),
            ("seconds", 7),
            ("reports/s", 9),
            ("srv CPU ms/report", 17),
            ("lag s", 6),
            ("db MiB", 6),
        ],
        [
            [
                str(r.reports),
                f"{r.ingest_s:.2f}",
                f"{r.reports_per_s:.0f}",
                f"{r.cpu_ms_per_report:.3f}",
                f"{r.lag_s:.1f}",
                "-" if r.db_mib is None else f"{r.db_mib:.1f}",
            ]
        ],
    )
    points = DETAIL_MODELS * DETAIL_EPOCHS
    rows = []
    for name, latency in (
        ("workers (1 online; baseline)", r.workers),
        (f"jobs?limit=50 ({r.jobs} jobs)", r.listing),
        (f"jobs/{{prefix}} ({points} points)", r.detail_prefix),
        (f"jobs/{{id}} ({points} points)", r.detail_id),
    ):
        rows.append(
            [
                name,
                f"{latency.kib:.1f}",
                f"{latency.p50_ms:.2f}",
                f"{latency.p99_ms:.2f}",
                f"{latency.p50_ms / r.workers.p50_ms:.1f}",
                f"{latency.p99_ms / r.workers.p99_ms:.1f}",
                f"{latency.cpu_ms:.2f}",
            ]
        )
    _table(
        f"reads: GET /v1/rooms/{{room}}/..., {r.requests} sequential requests, ms; "
        "x = against the worker listing",
        [
            ("GET", 32),
            ("answer KiB", 10),
            ("p50", 7),
            ("p99", 7),
            ("x p50", 6),
            ("x p99", 6),
            ("srv CPU ms/GET", 14),
        ],
        rows,
    )
    _table(
        f"registration: connect to 'registered', median of {RECONNECTS}, ms",
        [
            ("first", 6),
            ("empty index", 11),
            (f"{r.jobs} jobs", 10),
            ("x", 5),
            ("index_since", 14),
        ],
        [
            [
                f"{r.first_register_ms:.1f}",
                f"{r.register_empty_ms:.1f}",
                f"{r.register_catchup_ms:.1f}",
                f"{r.register_catchup_ms / r.register_empty_ms:.1f}",
                f"{r.index_since:.3f}",
            ]
        ],
    )
    print()
    extra = f"; {r.log_problems} warnings/errors in the server log" if r.log_problems else ""
    print(
        f"{r.reports_per_s:.0f} reports/s, {r.cpu_ms_per_report:.2f} ms server CPU each; "
        f"listing p50 {r.listing.p50_ms:.1f} ms (x{r.listing.p50_ms / r.workers.p50_ms:.1f} "
        f"vs workers){extra}"
    )
    print(json.dumps(r.summary()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs the worker reports")
    parser.add_argument("--requests", type=int, default=200, help="GETs per latency measurement")
    parser.add_argument(
        "--window",
        type=int,
        default=100,
        metavar="N",
        help="reports in flight: a ping every N, at most 2N unanswered (0: flow control only)",
    )
    parser.add_argument(
        "--database-url", metavar="URL", help="PostgreSQL instead of a temporary SQLite file"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="200 jobs and 50 requests (overrides --jobs/--requests): a self-check",
    )
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.requests = 200, 50
    if args.jobs < 1 or args.window < 0:
        parser.error("--jobs must be at least 1 and --window not negative")
    print(
        f"starting a server; one worker reports {args.jobs} jobs "
        f"({args.jobs * (2 + EPOCHS // POINTS_PER_REPORT)} reports) ...",
        flush=True,
    )
    result = asyncio.run(measure(args.jobs, args.requests, args.window, args.database_url))
    print_tables(result)


if __name__ == "__main__":
    main()
