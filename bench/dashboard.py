"""The web dashboard on one real ``sleap-rtc server``: a job page's first chart, open pages' cost.

How soon a job page shows its loss curve, and what open dashboards cost the server
while a job trains.

A fresh server process is started on loopback (SQLite in a temporary folder, or
``--database-url`` for PostgreSQL), a user, a room and one worker key are created,
and one simulated worker (job_index.py's) connects to ``/v1/worker`` over the real
protocol and reports its jobs the way a worker does. Measured, in one run:

* first chart of the job page: the worker reports a COMPLETE training job with
  1,000 loss points (epochs 1..1000, 200 a report) and 100 log lines, and one with
  10 points (the baseline). Headless Chromium (Debian's, driven by Playwright with
  tests/browser.py's flags), logged in through ``POST /v1/auth/web/login`` in its
  browser context, opens ``/rooms/{room}/jobs/{job}`` ``--loads`` times per job after a
  warm-up load (a fresh document each time), and reads the page's
  ``sleap-rtc:chart-ready`` mark (ms after navigation start); ``#loss-chart`` must
  say it plots every point. Median and max, the ratio 1,000 / 10 points, a
  breakdown (HTML and scripts, the page's session check, its JobDetail fetch, the
  rest: parse and draw), and the bare ``GET /v1/rooms/{room}/jobs/{job}`` (httpx, p50).
  Target: median under 1,000 ms for 1,000 points;
* open dashboards between epochs: a RUNNING job gets a progress-only report (no
  points, ``updated_at`` increasing) every 2 s, as a training worker sends them.
  The server process's CPU time (user + system, % of one core) over ``--seconds``
  with ``--streams`` Server-Sent Event streams
  ``GET /v1/rooms/{room}/jobs/{job}/events?after=<X-Event-Id>`` open (httpx, session
  cookies from the web login, at most 100 streams per login session), against the
  same window with none open (the baseline: before they open and after they close,
  averaged). Every stream must read every report's ``job`` event, or the run fails;
  the delivery latency (report sent to event read, in this process) is shown too.
  Target: the difference under 5 % of one core.

The simulated worker, the streams and the browser driver share this process (one
event loop); the server and Chromium are separate processes. Exits non-zero when a
check or a target fails.

    .venv/bin/python bench/dashboard.py --quick          # 3 loads per job, 15 s windows
    .venv/bin/python bench/dashboard.py                  # 5 loads per job, 30 s windows
    .venv/bin/python bench/dashboard.py --streams 500 --seconds 60
    .venv/bin/python bench/dashboard.py --database-url postgresql://...

With ``--database-url`` the user, room and index rows stay in that database (the
room is deleted at the end, best effort); names are random so runs don't collide.

The file is over 500 lines because both measurements share one server, worker and
login set-up and one report, so that a run is one command; the server, the worker
and the timing helpers are server_presence.py's and job_index.py's, imported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# This folder is on sys.path when the file runs as a script: the server process, the
# simulated worker and the timing helpers are server_presence.py's and job_index.py's.
from job_index import Clock, IndexWorker, _job, bench_room
from server_presence import (
    PASSWORD,
    Server,
    _table,
    percentile,
    raise_nofile_limit,
    time_listing,
)

from sleap_rtc.jobs.events import TrainProgress
from sleap_rtc.protocol import index as ix
from sleap_rtc.protocol.signaling import JobReport, encode

REPO = Path(__file__).resolve().parent.parent
BIG_EPOCHS, SMALL_EPOCHS = 1000, 10
#: A log line every this many epochs.
LOG_EVERY = 10
#: Epochs the live job has finished before the progress-only reports.
LIVE_EPOCHS_DONE, LIVE_TOTAL_EPOCHS = 20, 1000
#: Seconds between two progress reports, as a training worker sends them.
REPORT_EVERY = 2.0
#: Streams per login session (the server allows 128).
STREAMS_PER_SESSION = 100
PAGE_TARGET_MS = 1000.0
CPU_TARGET_PCT = 5.0
COOKIE = "sleap_rtc_session"

# -- what the worker reports ------------------------------------------------------------------


def _losses(epoch: int) -> tuple[float, float]:
    loss = 0.02 + 0.98 / epoch**0.7
    return round(loss, 6), round(loss * 1.15 + 0.005, 6)


def point(epoch: int, at: float) -> ix.LossPoint:
    loss, val_loss = _losses(epoch)
    return ix.LossPoint(model=1, epoch=epoch, loss=loss, val_loss=val_loss, at=at)


@dataclass
class TrainJob:
    """A training job the simulated worker reports: its record, as it is now."""

    job_id: str
    epochs: int
    created: float
    history: list[ix.StateEntry]

    def record(
        self, state: ix.JobStateName, updated: float, progress: TrainProgress | None, **extra: Any
    ) -> ix.IndexedJob:
        return _job(self.job_id, state, self.created, updated, self.history, progress, **extra)


def train_reports(
    clock: Clock, epochs: int, done: int, complete: bool
) -> tuple[TrainJob, list[str]]:
    """A job's reports: RUNNING, epochs 1..``done`` with their points (at most 200 a
    report) and a log line every ``LOG_EVERY`` epochs, then COMPLETE if ``complete``."""
    created = clock.tick()
    history = [
        ix.StateEntry(at=created, state="QUEUED"),
        ix.StateEntry(at=created, state="RUNNING"),
    ]
    job = TrainJob(uuid.uuid4().hex[:12], epochs, created, history)
    out = [encode(JobReport(job=job.record("RUNNING", created, None)))]
    progress: TrainProgress | None = None
    for first in range(1, done + 1, ix.MAX_POINTS_PER_REPORT):
        at = clock.tick()
        last = min(first + ix.MAX_POINTS_PER_REPORT - 1, done)
        points = [point(e, at) for e in range(first, last + 1)]
        log = [
            ix.LogLine(
                n=e // LOG_EVERY,
                text=f"Epoch {e}/{epochs}: loss={_losses(e)[0]:.4f} val_loss={_losses(e)[1]:.4f}",
            )
            for e in range(first, last + 1)
            if e % LOG_EVERY == 0
        ]
        loss, val_loss = _losses(last)
        progress = TrainProgress(
            epoch=last, total_epochs=epochs, loss=loss, val_loss=val_loss, epoch_done=True
        )
        report = JobReport(job=job.record("RUNNING", at, progress), points=points, log=log)
        out.append(encode(report))
    if complete:
        end = clock.tick()
        job.history = [*history, ix.StateEntry(at=end, state="COMPLETE")]
        record = job.record(
            "COMPLETE",
            end,
            progress,
            exit_code=0,
            elapsed_s=round(end - created, 3),
            outputs=[f"bench/models/{job.job_id}"],
        )
        out.append(encode(JobReport(job=record)))
    return job, out


class Progress:
    """Progress-only reports of a RUNNING job: the next batch of the next epoch."""

    def __init__(self, job: TrainJob, epoch: int) -> None:
        self.job = job
        self.epoch = epoch
        self.batch = 0
        #: When each batch's report was sent (loop time), for the delivery latency.
        self.sent: dict[int, float] = {}

    def next(self) -> tuple[int, str]:
        self.batch += 1
        loss, _ = _losses(self.epoch)
        progress = TrainProgress(
            epoch=self.epoch,
            total_epochs=self.job.epochs,
            batch=self.batch,
            loss=round(loss * 1.05, 6),
            epoch_done=False,
        )
        # Real time: later than every report of the worker's clock.
        report = JobReport(job=self.job.record("RUNNING", round(time.time(), 3), progress))
        return self.batch, encode(report)


# -- part 1: the job page in a browser --------------------------------------------------------

_READY = "() => performance.getEntriesByName('sleap-rtc:chart-ready').length > 0"
_FIGURES = """() => {
  const mark = performance.getEntriesByName("sleap-rtc:chart-ready")[0];
  const nav = performance.getEntriesByType("navigation")[0];
  const detail = performance.getEntriesByType("resource").filter((e) =>
    e.initiatorType === "fetch" &&
    /^\\/v1\\/rooms\\/[^/]+\\/jobs\\/[^/]+$/.test(new URL(e.name).pathname));
  const d = detail[detail.length - 1];
  const session = performance.getEntriesByType("resource").filter((e) =>
    new URL(e.name).pathname === "/v1/auth/web/session").pop();
  const statics = performance.getEntriesByType("resource").filter((e) =>
    new URL(e.name).pathname.startsWith("/static/"));
  const chart = document.querySelector("#loss-chart");
  return {
    ready: mark ? mark.startTime : null,
    points: chart ? Number(chart.dataset.points) : null,
    dcl: nav ? nav.domContentLoadedEventEnd : null,
    fetch_start: d ? d.startTime : null,
    fetch_end: d ? d.responseEnd : null,
    fetch_kib: d ? d.encodedBodySize / 1024 : null,
    session_ms: session ? session.responseEnd - session.startTime : null,
    statics: statics.length,
    statics_fetched: statics.filter((e) => e.transferSize > 0).length,
    drawn: document.querySelectorAll("#loss-chart canvas").length,
  };
}"""


@dataclass
class Load:
    ready_ms: float
    dcl_ms: float
    fetch_start_ms: float
    fetch_end_ms: float
    fetch_kib: float
    session_ms: float
    #: Static files the page loaded, and how many of them came over the network.
    statics: int
    statics_fetched: int


@dataclass
class PageResult:
    points: int
    #: The warm-up load (for the first job: a fresh browser, nothing cached).
    first: Load
    loads: list[Load]
    api_p50_ms: float
    api_p99_ms: float
    api_kib: float

    def median(self, name: str) -> float:
        return statistics.median(getattr(load, name) for load in self.loads)

    @property
    def ready_median(self) -> float:
        return self.median("ready_ms")

    @property
    def ready_max(self) -> float:
        return max(load.ready_ms for load in self.loads)


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    return path


async def page_loads(
    base: str, room: str, jobs: dict[str, int], username: str, loads: int, profile: Path
) -> dict[str, list[Load]]:
    """``loads`` + 1 fresh loads of each job's page, the jobs in turn; each job's list
    starts with its warm-up load."""
    from playwright.async_api import async_playwright

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # tests/browser.py: the flags the tests use
    from tests.browser import CHROMIUM_ARGS

    profile.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[Load]] = {job_id: [] for job_id in jobs}
    async with async_playwright() as driver:
        browser = await driver.chromium.launch(
            executable_path=chromium_path(),
            args=CHROMIUM_ARGS,
            env={**os.environ, "HOME": str(profile)},
        )
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            # The browser context's request client shares its cookies: the page is logged in.
            answer = await context.request.post(
                f"{base}/v1/auth/web/login", data={"username": username, "password": PASSWORD}
            )
            if not answer.ok:
                raise RuntimeError(f"web login: HTTP {answer.status}: {await answer.text()}")
            cookies = [c["name"] for c in await context.cookies(base)]
            if COOKIE not in cookies:
                raise RuntimeError(f"web login set no {COOKIE} cookie (cookies: {cookies})")
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            for _ in range(loads + 1):
                for job_id, expected in jobs.items():
                    await page.goto("about:blank")
                    url = f"{base}/rooms/{room}/jobs/{job_id}"
                    await page.goto(url)
                    try:
                        await page.wait_for_function(_READY, timeout=30_000)
                    except Exception as exc:
                        body = (await page.inner_text("body"))[-500:]
                        raise RuntimeError(
                            f"{url}: no chart-ready mark after 30 s (page at {page.url}; "
                            f"errors {errors[:3]}):\n{body}"
                        ) from exc
                    figures = await page.evaluate(_FIGURES)
                    if figures["points"] != expected or not figures["drawn"]:
                        raise AssertionError(
                            f"{url}: #loss-chart has data-points={figures['points']} and "
                            f"{figures['drawn']} canvases, expected {expected} points drawn"
                        )
                    if figures["fetch_end"] is None:
                        raise AssertionError(f"{url}: no resource entry of the JobDetail fetch")
                    # Round 0 is the warm-up: the browser's cache, the server's first reads.
                    out[job_id].append(
                        Load(
                            ready_ms=figures["ready"],
                            dcl_ms=figures["dcl"],
                            fetch_start_ms=figures["fetch_start"],
                            fetch_end_ms=figures["fetch_end"],
                            fetch_kib=figures["fetch_kib"],
                            session_ms=figures["session_ms"] or 0.0,
                            statics=figures["statics"],
                            statics_fetched=figures["statics_fetched"],
                        )
                    )
            if errors:
                raise AssertionError(f"the page threw: {errors[:5]}")
            await context.close()
        finally:
            await browser.close()
    return out


# -- part 2: open dashboards ------------------------------------------------------------------


class Watcher:
    """One open dashboard: a job's event stream, read and counted."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.counts: dict[str, int] = {}
        self.live = asyncio.Event()
        self.error: str | None = None
        self.latencies: list[float] = []
        self.last_batch = 0
        self.task: asyncio.Task[None] | None = None

    def start(self, http: httpx.AsyncClient, path: str, cookie: str) -> None:
        self.task = asyncio.create_task(self._run(http, path, cookie))

    async def _run(self, http: httpx.AsyncClient, path: str, cookie: str) -> None:
        headers = {"cookie": f"{COOKIE}={cookie}", "accept": "text/event-stream"}
        try:
            async with http.stream("GET", path, headers=headers) as response:
                if response.status_code != 200:
                    body = (await response.aread())[:300]
                    self.error = f"HTTP {response.status_code}: {body!r}"
                    return
                name, data = "message", []
                async for line in response.aiter_lines():
                    self.live.set()
                    if not line:
                        if data:
                            self._event(name, "\n".join(data))
                        name, data = "message", []
                    elif not line.startswith(":"):
                        key, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if key == "event":
                            name = value
                        elif key == "data":
                            data.append(value)
            self.error = self.error or "the server ended the stream"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.live.set()

    def _event(self, name: str, data: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1
        if name == "reset":
            self.error = self.error or "got 'reset'"
        if name != "job":
            return
        job = json.loads(data)
        batch = (job.get("progress") or {}).get("batch")
        if job.get("job_id") != self.progress.job.job_id or batch is None:
            return
        sent = self.progress.sent.get(batch)
        if sent is not None:
            self.latencies.append((asyncio.get_running_loop().time() - sent) * 1000)
        self.last_batch = max(self.last_batch, batch)

    def jobs(self) -> int:
        return self.counts.get("job", 0)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


@dataclass
class Window:
    streams: int
    seconds: float
    cpu_s: float
    reports: int
    #: ``job`` events each stream read during the window.
    per_stream: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def cpu_pct(self) -> float:
        return self.cpu_s / self.seconds * 100

    @property
    def events_per_s(self) -> float:
        return sum(self.per_stream) / self.seconds


async def report_window(
    server: Server,
    worker: IndexWorker,
    progress: Progress,
    seconds: float,
    watchers: list[Watcher],
) -> Window:
    """``seconds`` of the server's CPU time with a progress report every ``REPORT_EVERY``
    s, in the middle of each interval (so the window holds exactly seconds / 2)."""
    assert worker.ws is not None
    loop = asyncio.get_running_loop()
    reports = int(seconds // REPORT_EVERY)
    await worker.sync()
    before = [w.jobs() for w in watchers]
    seen = [len(w.latencies) for w in watchers]
    cpu, start = server.cpu_s(), loop.time()
    for i in range(reports):
        await asyncio.sleep(max(0.0, start + REPORT_EVERY * (i + 0.5) - loop.time()))
        batch, message = progress.next()
        progress.sent[batch] = loop.time()
        await worker.ws.send(message)
    await asyncio.sleep(max(0.0, start + seconds - loop.time()))
    cpu_s, wall = server.cpu_s() - cpu, loop.time() - start
    # Every report is stored and published; give the streams a moment to read the last.
    await worker.sync()
    deadline = loop.time() + 5
    while watchers and loop.time() < deadline:
        if all(w.last_batch >= progress.batch or w.error for w in watchers):
            break
        await asyncio.sleep(0.05)
    return Window(
        streams=len(watchers),
        seconds=wall,
        cpu_s=cpu_s,
        reports=reports,
        per_stream=[w.jobs() - b for w, b in zip(watchers, before, strict=True)],
        latencies_ms=[x for w, s in zip(watchers, seen, strict=True) for x in w.latencies[s:]],
    )


async def web_logins(http: httpx.AsyncClient, username: str, count: int) -> list[str]:
    cookies = []
    for _ in range(count):
        answer = await http.post(
            "/v1/auth/web/login", json={"username": username, "password": PASSWORD}
        )
        cookie = answer.cookies.get(COOKIE)
        if answer.status_code != 200 or not cookie:
            raise RuntimeError(f"web login: HTTP {answer.status_code}: {answer.text[:300]}")
        cookies.append(cookie)
    return cookies


@dataclass
class StreamResult:
    #: No stream open: before they open, and after they closed.
    before: Window
    after: Window
    loaded: Window
    logins: int
    login_cpu_ms: float
    #: Opening the streams (a snapshot GET, then every stream until it said "live").
    open_s: float
    open_cpu_ms: float
    rss_before: int
    rss_open: int

    @property
    def baseline_pct(self) -> float:
        return (self.before.cpu_pct + self.after.cpu_pct) / 2


async def dashboards(
    server: Server,
    url: str,
    room: str,
    username: str,
    worker: IndexWorker,
    progress: Progress,
    streams: int,
    seconds: float,
) -> StreamResult:
    path = f"/v1/rooms/{room}/jobs/{progress.job.job_id}"
    timeout = httpx.Timeout(60, connect=30)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=20)
    watchers: list[Watcher] = []
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as http:
        try:
            # Warm-up, then the baseline: the same reports, no stream open.
            await report_window(server, worker, progress, 3 * REPORT_EVERY, [])
            before = await report_window(server, worker, progress, seconds, [])

            rss_before = server.rss()
            cpu = server.cpu_s()
            logins = math.ceil(streams / STREAMS_PER_SESSION)
            cookies = await web_logins(http, username, logins)
            login_cpu_ms = (server.cpu_s() - cpu) * 1000
            cpu, started = server.cpu_s(), time.perf_counter()
            snapshot = await http.get(path, headers={"cookie": f"{COOKIE}={cookies[0]}"})
            if snapshot.status_code != 200 or "x-event-id" not in snapshot.headers:
                raise RuntimeError(f"GET {path}: HTTP {snapshot.status_code}: {snapshot.text}")
            after = snapshot.headers["x-event-id"]
            watchers = [Watcher(progress) for _ in range(streams)]
            for i, watcher in enumerate(watchers):
                watcher.start(
                    http, f"{path}/events?after={after}", cookies[i // STREAMS_PER_SESSION]
                )
            await asyncio.wait_for(asyncio.gather(*(w.live.wait() for w in watchers)), 120)
            open_s = time.perf_counter() - started
            open_cpu_ms = (server.cpu_s() - cpu) * 1000
            failed = [w.error for w in watchers if w.error]
            if failed:
                raise RuntimeError(f"{len(failed)} of {streams} streams failed: {failed[:5]}")
            rss_open = server.rss()

            # Warm-up with the streams open (not counted), then the measurement.
            await report_window(server, worker, progress, 2 * REPORT_EVERY, watchers)
            loaded = await report_window(server, worker, progress, seconds, watchers)
            failed = [w.error for w in watchers if w.error]
            if failed:
                raise RuntimeError(f"{len(failed)} of {streams} streams failed: {failed[:5]}")
            await asyncio.gather(*(w.stop() for w in watchers))
            await asyncio.sleep(REPORT_EVERY)  # the server sees them go
            after = await report_window(server, worker, progress, seconds, [])
        finally:
            await asyncio.gather(*(w.stop() for w in watchers))
    return StreamResult(
        before=before,
        after=after,
        loaded=loaded,
        logins=logins,
        login_cpu_ms=login_cpu_ms,
        open_s=open_s,
        open_cpu_ms=open_cpu_ms,
        rss_before=rss_before,
        rss_open=rss_open,
    )


# -- one run ----------------------------------------------------------------------------------


@dataclass
class Result:
    database: str
    big: PageResult
    small: PageResult
    streams: StreamResult
    log_problems: list[str]


async def api_latency(
    http: httpx.AsyncClient, path: str, token: str, requests: int
) -> tuple[float, float, float]:
    await time_listing(http, path, token, 5)  # warm-up
    times, size = await time_listing(http, path, token, requests)
    return statistics.median(times), percentile(times, 99), size / 1024


async def measure(
    loads: int, requests: int, streams: int, seconds: float, database_url: str | None
) -> Result:
    clock = Clock(round(time.time() - 3600, 3))
    big, big_reports = train_reports(clock, BIG_EPOCHS, BIG_EPOCHS, complete=True)
    small, small_reports = train_reports(clock, SMALL_EPOCHS, SMALL_EPOCHS, complete=True)
    live, live_reports = train_reports(clock, LIVE_TOTAL_EPOCHS, LIVE_EPOCHS_DONE, complete=False)
    async with bench_room("dash", database_url) as bench:
        server, client, url, root = bench.server, bench.client, bench.url, bench.root
        user, room, tag = bench.user, bench.room, bench.tag
        ws_url = client.websocket_url("/v1/worker")
        worker = bench.worker = IndexWorker(ws_url, bench.secret, f"bench-{tag}")
        await worker.register()
        await worker.send_all(big_reports + small_reports + live_reports, 0)
        for job, points in ((big, BIG_EPOCHS), (small, SMALL_EPOCHS), (live, LIVE_EPOCHS_DONE)):
            shown = await client.room_job(room, job.job_id)
            if len(shown.points) != points or len(shown.log_tail) != points // LOG_EVERY:
                raise AssertionError(
                    f"job {job.job_id}: {len(shown.points)} points, {len(shown.log_tail)} log "
                    f"lines; expected {points} and {points // LOG_EVERY}"
                )

        print(f"the job page, {loads} loads per job (+1 warm-up) ...", flush=True)
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            token = await client.access_token()
            base = f"/v1/rooms/{room}/jobs"
            big_api = await api_latency(http, f"{base}/{big.job_id}", token, requests)
            small_api = await api_latency(http, f"{base}/{small.job_id}", token, requests)
        pages = await page_loads(
            url,
            room,
            {big.job_id: BIG_EPOCHS, small.job_id: SMALL_EPOCHS},
            user,
            loads,
            root / "chromium",
        )
        worker.check()

        print(
            f"{streams} open dashboards, progress every {REPORT_EVERY:g} s, "
            f"{seconds:g} s windows ...",
            flush=True,
        )
        progress = Progress(live, LIVE_EPOCHS_DONE + 1)
        stream_result = await dashboards(
            server, url, room, user, worker, progress, streams, seconds
        )
        worker.check()
        if not server.alive():
            raise AssertionError("the server exited")
        return Result(
            database="PostgreSQL" if database_url else "SQLite",
            big=PageResult(BIG_EPOCHS, pages[big.job_id][0], pages[big.job_id][1:], *big_api),
            small=PageResult(
                SMALL_EPOCHS, pages[small.job_id][0], pages[small.job_id][1:], *small_api
            ),
            streams=stream_result,
            log_problems=server.problems(),
        )


def check_streams(s: StreamResult) -> list[str]:
    """Every stream read every report's ``job`` event; what went wrong otherwise."""
    w = s.loaded
    silent = sum(1 for n in w.per_stream if n == 0)
    short = sorted(n for n in w.per_stream if n < w.reports)
    if silent:
        return [
            f"{silent} of {w.streams} streams received NO job event in {w.seconds:.0f} s "
            f"({w.reports} reports sent); per stream: min {min(w.per_stream)}, "
            f"max {max(w.per_stream)}"
        ]
    if short:
        return [
            f"{len(short)} of {w.streams} streams missed job events: they got {short[:10]} "
            f"of {w.reports}"
        ]
    return []


def print_report(r: Result, seconds: float) -> list[str]:
    """The tables and verdicts; the failed targets."""
    failures: list[str] = []
    rows = []
    for p in (r.small, r.big):
        rows.append(
            [
                f"{p.points:,}",
                str(len(p.loads)),
                f"{p.ready_median:.0f}",
                f"{p.ready_max:.0f}",
                f"{p.median('dcl_ms'):.0f}",
                f"{p.median('session_ms'):.0f}",
                f"{statistics.median(x.fetch_end_ms - x.fetch_start_ms for x in p.loads):.0f}",
                f"{statistics.median(x.ready_ms - x.fetch_end_ms for x in p.loads):.0f}",
                f"{p.median('fetch_kib'):.1f}",
                f"{p.api_p50_ms:.1f}",
                f"{p.api_p99_ms:.1f}",
                f"{sum(x.statics_fetched for x in p.loads)}/{sum(x.statics for x in p.loads)}",
            ]
        )
    _table(
        f"job page ({r.database}): ms after navigation start, headless Chromium; ready = "
        "the sleap-rtc:chart-ready mark; scripts = DOMContentLoaded; session = the page's "
        "GET /v1/auth/web/session, then fetch = its GET of the JobDetail; draw = ready - "
        "fetch end; API = the same GET with httpx; static = static files that came over "
        "the network (not from the cache) / all",
        [
            ("points", 6),
            ("loads", 5),
            ("ready med", 9),
            ("ready max", 9),
            ("scripts", 7),
            ("session", 7),
            ("fetch", 5),
            ("draw", 4),
            ("KiB", 6),
            ("API p50", 7),
            ("API p99", 7),
            ("static", 6),
        ],
        rows,
    )
    s = r.streams
    rows = []
    for label, w in (("none", s.before), (str(s.loaded.streams), s.loaded), ("none", s.after)):
        latency = sorted(w.latencies_ms)
        rows.append(
            [
                label,
                f"{w.seconds:.1f}",
                str(w.reports),
                f"{w.cpu_s * 1000:.0f}",
                f"{w.cpu_pct:.2f}",
                f"{w.cpu_s * 1000 / w.reports:.1f}",
                f"{min(w.per_stream)}-{max(w.per_stream)}" if w.per_stream else "-",
                f"{w.events_per_s:.1f}",
                f"{statistics.median(latency):.1f}" if latency else "-",
                f"{percentile(latency, 99):.1f}" if latency else "-",
            ]
        )
    _table(
        f"open dashboards ({r.database}): one RUNNING job, a progress-only report every "
        f"{REPORT_EVERY:g} s; server CPU = user + system of the server process over the "
        "window, % of one core; events = job events the streams read; latency = report "
        "sent to event read, ms; in this order",
        [
            ("streams", 7),
            ("seconds", 7),
            ("reports", 7),
            ("CPU ms", 6),
            ("CPU %", 6),
            ("CPU ms/report", 13),
            ("events/stream", 13),
            ("events/s", 8),
            ("lat p50", 7),
            ("lat p99", 7),
        ],
        rows,
    )
    mib = 1024 * 1024
    n = s.loaded.streams
    print(
        f"\n{s.logins} web login(s): {s.login_cpu_ms:.0f} ms server CPU; then a snapshot GET "
        f"and {n} streams open (all 'live') in {s.open_s:.2f} s, {s.open_cpu_ms:.0f} ms "
        f"server CPU ({s.open_cpu_ms / n:.1f} ms/stream); server RSS "
        f"{s.rss_before / mib:.1f} -> {s.rss_open / mib:.1f} MiB "
        f"({(s.rss_open - s.rss_before) / 1024 / n:.1f} KiB/stream)"
    )
    cold = r.big.first
    print(
        f"first load in a fresh browser (nothing cached; {r.big.points:,} points): ready "
        f"{cold.ready_ms:.0f} ms, scripts {cold.dcl_ms:.0f} ms, {cold.statics_fetched}/"
        f"{cold.statics} static files over the network"
    )
    for line in r.log_problems[:10]:
        print(f"server log: {line}")
    if r.log_problems:
        print(f"({len(r.log_problems)} warnings/errors in the server log)")

    print()
    ratio = r.big.ready_median / r.small.ready_median
    verdict = "PASS" if r.big.ready_median < PAGE_TARGET_MS else "FAIL"
    print(
        f"{verdict}: job page with {r.big.points:,} points: chart ready in "
        f"{r.big.ready_median:.0f} ms median, {r.big.ready_max:.0f} ms max "
        f"(target < {PAGE_TARGET_MS:.0f} ms); x{ratio:.2f} vs {r.small.points} points "
        f"({r.small.ready_median:.0f} ms); the bare API GET p50 {r.big.api_p50_ms:.1f} ms "
        f"(x{r.big.api_p50_ms / r.small.api_p50_ms:.2f} vs {r.small.points} points)"
    )
    if verdict == "FAIL":
        failures.append("job page target")
    diff = s.loaded.cpu_pct - s.baseline_pct
    verdict = "PASS" if diff < CPU_TARGET_PCT else "FAIL"
    print(
        f"{verdict}: {s.loaded.streams} open dashboards between epochs: server CPU "
        f"{s.loaded.cpu_pct:.2f} % with them, {s.baseline_pct:.2f} % with none (before "
        f"{s.before.cpu_pct:.2f}, after {s.after.cpu_pct:.2f}), "
        f"difference {diff:+.2f} % of one core (target < {CPU_TARGET_PCT:g} %); "
        f"{s.loaded.events_per_s:.1f} events/s delivered "
        f"({sum(s.loaded.per_stream)} in {s.loaded.seconds:.0f} s)"
    )
    if verdict == "FAIL":
        failures.append("open dashboards CPU target")
    problems = check_streams(s)
    for problem in problems:
        print(f"FAIL: {problem}")
    if not problems:
        print(
            f"PASS: every one of the {s.loaded.streams} streams read all "
            f"{s.loaded.reports} job events of the window"
        )
    figures = {
        "database": r.database,
        "page_ready_median_ms": round(r.big.ready_median, 1),
        "page_ready_max_ms": round(r.big.ready_max, 1),
        "page_small_ready_median_ms": round(r.small.ready_median, 1),
        "page_x": round(ratio, 2),
        "api_p50_ms": round(r.big.api_p50_ms, 2),
        "api_small_p50_ms": round(r.small.api_p50_ms, 2),
        "streams": s.loaded.streams,
        "seconds": round(seconds, 1),
        "cpu_pct_streams": round(s.loaded.cpu_pct, 3),
        "cpu_pct_none": round(s.baseline_pct, 3),
        "cpu_pct_none_before": round(s.before.cpu_pct, 3),
        "cpu_pct_none_after": round(s.after.cpu_pct, 3),
        "open_cpu_ms_per_stream": round(s.open_cpu_ms / n, 2),
        "page_cold_ready_ms": round(cold.ready_ms, 1),
        "cpu_pct_diff": round(diff, 3),
        "events_per_s": round(s.loaded.events_per_s, 2),
    }
    print(json.dumps(figures))
    return failures + problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=5, help="page loads per job, after a warm-up")
    parser.add_argument("--requests", type=int, default=100, help="API GETs per job timed")
    parser.add_argument("--streams", type=int, default=100, metavar="N", help="open dashboards")
    parser.add_argument("--seconds", type=float, help="each CPU window (default 30, --quick 15)")
    parser.add_argument(
        "--database-url", metavar="URL", help="PostgreSQL instead of a temporary SQLite file"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 loads, 20 requests (overrides --loads/--requests), 15 s windows: a self-check",
    )
    args = parser.parse_args()
    if args.quick:
        args.loads, args.requests = 3, 20
    seconds = args.seconds or (15.0 if args.quick else 30.0)
    if args.loads < 1 or args.requests < 1 or args.streams < 1 or seconds < 2 * REPORT_EVERY:
        parser.error("--loads, --requests and --streams must be at least 1, --seconds 4")
    limit = raise_nofile_limit()
    if args.streams + 256 > limit:
        raise SystemExit(f"open-file limit is {limit}: too low for {args.streams} streams")
    chromium_path()
    print("starting a server and a simulated worker ...", flush=True)
    result = asyncio.run(
        measure(args.loads, args.requests, args.streams, seconds, args.database_url)
    )
    failures = print_report(result, seconds)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
