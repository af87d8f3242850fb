"""Reporting this worker's jobs to the server's job index.

The store tells the reporter which job changed; the reporter sends that job's
record (and the loss points the server hasn't had) over the worker's server
connection. State changes go out at once; progress at most every
``progress_interval_s``, so a fast training run costs the server one write a
couple of seconds, not one per batch. Nothing is lost while disconnected: on
every registration the server says up to when it has this worker's records and
the reporter sends every job that changed since, points and all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from sleap_rtc.jobs.commandline import option_args
from sleap_rtc.jobs.results import StepResult
from sleap_rtc.protocol import index as ix
from sleap_rtc.protocol.signaling import MAX_MESSAGE_BYTES, JobReport, encode, loggable
from sleap_rtc.worker.replies import progress_of, summarize
from sleap_rtc.worker.store import JobRecord, JobStore, LogPosition

log = logging.getLogger("sleap_rtc.worker")

#: Most jobs sent after a registration: those changed since the index last heard,
#: or (to a server that has none of this worker's jobs) the most recent ones.
SYNC_LIMIT = 1_000
FIRST_SYNC_LIMIT = 200

#: Reports sent before waiting for the server to have read them.
REPORTS_PER_DRAIN = 20

SendFn = Callable[[JobReport], Awaitable[bool]]
DrainFn = Callable[[], Awaitable[bool]]


def _text(value: str | None, limit: int) -> str | None:
    return None if value is None else loggable(value)[:limit]


def indexed_job(store: JobStore, record: JobRecord) -> ix.IndexedJob:
    """``record`` as the index keeps it: text made printable and cut to its limits."""
    history = store.history(record.id)[-ix.MAX_HISTORY :]
    notify = record.spec.get("notify")
    summary = summarize(record)
    exit_code = record.exit_code
    return ix.IndexedJob(
        job_id=record.id,
        kind="track" if record.kind == "track" else "train",
        owner=_text(record.owner, 64),
        state=record.state.value,
        created_at=record.created_at,
        updated_at=record.updated_at,
        summary=_text(summary.summary, 1024) or "",
        reason=_text(record.reason, 1024),
        exit_code=None if exit_code is None else max(-1024, min(1024, exit_code)),
        stopped_early=record.stopped_early,
        elapsed_s=store.elapsed(record.id),
        history=[
            ix.StateEntry(at=h.at, state=h.state.value, reason=_text(h.reason, 1024))
            for h in history
        ],
        progress=progress_of(record.progress),
        outputs=summary.outputs,
        results=list(_results(record)),
        notify=notify if isinstance(notify, bool) else None,
        args=_args(record),
    )


def _args(record: JobRecord) -> list[str]:
    try:
        args = option_args(record.spec)
    except Exception:  # a spec this version can't read is shown without its options
        return []
    return [loggable(a)[:4096] for a in args[: ix.MAX_ARGS]]


def _results(record: JobRecord) -> list[StepResult]:
    kept: list[StepResult] = []
    for item in record.results[:64]:
        with contextlib.suppress(ValueError):
            kept.append(StepResult.model_validate(item))
    return kept


def fit(report: JobReport) -> JobReport:
    """``report`` cut until it encodes within one signaling message: the record to
    half of it at most (results, then outputs, then history), then the points,
    then the log (its oldest lines first)."""

    def size(r: JobReport) -> int:
        return len(encode(r).encode())

    job = report.job
    while size(JobReport(job=job)) > MAX_MESSAGE_BYTES // 2:
        if job.results:
            job = job.model_copy(update={"results": []})
        elif job.outputs:
            job = job.model_copy(update={"outputs": job.outputs[: len(job.outputs) // 2]})
        elif job.args:
            job = job.model_copy(update={"args": []})
        else:
            job = job.model_copy(update={"history": [], "summary": job.summary[:256]})
    report = report.model_copy(update={"job": job})
    while report.points and size(report) > MAX_MESSAGE_BYTES // 4 * 3:
        report = report.model_copy(update={"points": report.points[: len(report.points) // 2]})
    while report.log and size(report) > MAX_MESSAGE_BYTES:
        report = report.model_copy(update={"log": report.log[len(report.log) // 2 :]})
    return report


async def _always() -> bool:
    return True


class IndexReporter:
    """Sends jobs the store says changed; call :meth:`changed` from the store's listeners."""

    def __init__(
        self,
        store: JobStore,
        send: SendFn,
        *,
        drained: DrainFn | None = None,
        progress_interval_s: float = 2.0,
    ) -> None:
        self.store = store
        self._send = send
        self._drained = drained or _always
        self.progress_interval_s = progress_interval_s
        self._dirty: set[str] = set()
        self._urgent = asyncio.Event()
        self._any = asyncio.Event()
        #: Per job, the last point sequence number the server has.
        self._points_sent: dict[str, int] = {}
        #: Per job, how far its log was sent.
        self._log_sent: dict[str, LogPosition] = {}
        self.reports_sent = 0

    def changed(self, job_id: str, state: bool) -> None:
        self._dirty.add(job_id)
        self._any.set()
        if state:
            self._urgent.set()

    def registered(self, since: float | None) -> None:
        """A (re)registration: queue every job the index may be missing."""
        limit = FIRST_SYNC_LIMIT if since is None else SYNC_LIMIT
        jobs = self.store.changed_since(since, limit=limit)
        for job_id in jobs:
            self._points_sent.pop(job_id, None)
            self._log_sent.pop(job_id, None)
        self._dirty.update(jobs)
        if jobs:
            log.info("reporting %d job(s) to the server's job index", len(jobs))
            self._any.set()
            self._urgent.set()

    async def run(self) -> None:
        """Send changes until cancelled."""
        while True:
            await self._any.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._urgent.wait(), self.progress_interval_s)
            self._any.clear()
            self._urgent.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Send every changed job now; False (and they stay queued) when not connected."""
        while self._dirty:
            job_id = self._dirty.pop()
            try:
                sent = await self._report(job_id)
            except Exception:
                log.exception("reporting job %s to the job index failed", job_id)
                continue
            if not sent:
                self._dirty.add(job_id)
                return False
        return True

    async def _report(self, job_id: str) -> bool:
        record = self.store.get(job_id)
        if record is None:
            return True
        job = indexed_job(self.store, record)
        after = self._points_sent.get(job_id, 0)
        lines, log_at = self.store.log_since(
            job_id, self._log_sent.get(job_id), limit=ix.MAX_LOG_LINES_PER_REPORT
        )
        log_lines = [ix.LogLine(n=n, text=loggable(t)[: ix.MAX_LOG_LINE]) for n, t in lines]
        while True:
            points = self.store.points(job_id, after=after, limit=ix.MAX_POINTS_PER_REPORT)
            report = fit(
                JobReport(
                    job=job,
                    log=log_lines,
                    points=[
                        ix.LossPoint(
                            model=max(1, min(64, p.model)),
                            epoch=max(0, p.epoch),
                            loss=p.loss,
                            val_loss=p.val_loss,
                            at=p.at,
                        )
                        for p in points
                    ],
                )
            )
            if points and not report.points:
                return True  # a point that can't fit a message is not worth a stuck queue
            if not await self._send(report):
                return False
            self.reports_sent += 1
            self._log_sent[job_id] = log_at
            log_lines = []
            # A catch-up of many jobs waits for the server to keep up with it.
            if self.reports_sent % REPORTS_PER_DRAIN == 0 and not await self._drained():
                return False
            if report.points:
                after = points[len(report.points) - 1].seq
                self._points_sent[job_id] = after
            if len(report.points) == len(points) < ix.MAX_POINTS_PER_REPORT:
                return True
