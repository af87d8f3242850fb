"""The worker's side of the job protocol on one channel.

A channel proves who is on the other end with ``HELLO`` and a ticket the server
signed for this user, room and worker; nothing else is read before that. Every
later message is size-limited, decoded into a typed message, and only then
acted on. Jobs outlive channels: closing a channel stops the events, not the job.

Size: the protocol rules (HELLO first, reply building) live here beside the I/O; they
move into a sans-I/O worker session in ``protocol``, leaving this file the shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sleap_rtc.jobs.events import TrackProgress, TrainProgress
from sleap_rtc.jobs.problems import JobRejected as SpecRejected
from sleap_rtc.jobs.specs import parse_spec
from sleap_rtc.jobs.states import JobState
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.signaling import ProtocolError, Sender, loggable
from sleap_rtc.transport.base import Channel, ChannelClosed
from sleap_rtc.worker.downloads import Downloads
from sleap_rtc.worker.files import Entry, FileService, FsError
from sleap_rtc.worker.fsafe import clip, display
from sleap_rtc.worker.runner import (
    JobRejectedError,
    JobRunner,
    LogEvent,
    ProgressEvent,
    StateEvent,
)
from sleap_rtc.worker.store import JobRecord
from sleap_rtc.worker.tickets import Peer, TicketError, TicketVerifier
from sleap_rtc.worker.transfers import TransferError
from sleap_rtc.worker.uploads import Uploads

log = logging.getLogger("sleap_rtc.worker")

#: Log lines gathered into one JOB_PROGRESS while a job is chatty.
LOG_BATCH_S = 0.25
#: Users whose file views (with their listing caches) are kept at once.
MAX_FILE_VIEWS = 32
#: Longest a job's checks may take before the submit is answered with TIMEOUT.
VALIDATION_TIMEOUT_S = 30.0


def summarize(record: JobRecord) -> p.JobSummary:
    spec = record.spec
    if record.kind == "train":
        what = ", ".join(str(c) for c in spec.get("config_paths", []))
    else:
        what = f"{spec.get('data_path', '')} with {', '.join(spec.get('model_paths', []))}"
    return p.JobSummary(
        job_id=record.id,
        kind=record.kind,
        state=record.state.value,
        created_at=record.created_at,
        updated_at=record.updated_at,
        reason=(record.reason or "")[:2000] or None,
        exit_code=record.exit_code,
        outputs=_clip_paths(record.outputs),
        progress=_progress(record.progress),
        stopped_early=record.stopped_early,
        owner=record.owner,
        summary=what[:2000],
    )


def _clip_paths(paths: list[str], budget: int = 16 * 1024) -> list[str]:
    """As many of ``paths`` as fit ``budget`` characters, so one summary always fits."""
    kept: list[str] = []
    for path in paths[:64]:
        budget -= len(path) + 8
        if budget < 0:
            break
        kept.append(path)
    return kept


def _progress(data: dict[str, Any] | None) -> TrainProgress | TrackProgress | None:
    if not data:
        return None
    try:
        if data.get("kind") == "track":
            return TrackProgress.model_validate(data)
        return TrainProgress.model_validate(data)
    except ValueError:
        return None


def terminal_message(record: JobRecord, log_tail: list[str]) -> p.JobComplete | p.JobFailed:
    if record.state is JobState.COMPLETE:
        return p.JobComplete(
            job_id=record.id, outputs=record.outputs[:64], stopped_early=record.stopped_early
        )
    return p.JobFailed(
        job_id=record.id,
        state="CANCELLED" if record.state is JobState.CANCELLED else "FAILED",
        exit_code=record.exit_code,
        reason=(record.reason or "")[:2000],
        log_tail=p.clip_lines(log_tail, budget=p.MAX_JOB_MESSAGE_BYTES // 3),
    )


def rejection(request_id: str, job_id: str | None, problems: list[Any]) -> p.JobRejected:
    """A JOB_REJECTED that fits one message: the first problems, then "and K more"."""
    views = [_problem(pr) for pr in problems]
    keep = min(len(views), 100)
    while True:
        shown = views[:keep]
        left = len(views) - keep
        if left:
            shown = [
                *shown[: max(keep - 1, 0)],
                p.ProblemView(
                    field="(more)",
                    code="MORE_PROBLEMS",
                    message=f"and {len(views) - max(keep - 1, 0)} more problem(s); fix these "
                    "first or check the job locally (sleap-rtc local ... --dry-run)",
                ),
            ]
        reply = p.JobRejected(request_id=request_id, job_id=job_id, errors=shown)
        if p.fits(reply) or keep <= 1:
            return reply
        keep //= 2


def job_list_reply(runner: JobRunner, message: p.JobList) -> p.JobListReply:
    """One page of the job list that fits one message; ``next_offset`` asks for the rest."""
    records = runner.store.jobs(limit=message.limit + 1, offset=message.offset)
    more = len(records) > message.limit
    summaries = [summarize(r) for r in records[: message.limit]]
    while True:
        shown = len(summaries)
        reply = p.JobListReply(
            jobs=summaries,
            offset=message.offset,
            next_offset=message.offset + shown if (more or shown < len(records)) else None,
        )
        if p.fits(reply) or len(summaries) <= 1:
            return reply
        summaries = summaries[: len(summaries) // 2]
        more = True


class JobService:
    def __init__(
        self,
        runner: JobRunner,
        *,
        worker_id: str,
        worker_name: str,
        verifier: TicketVerifier | None,
        hello_timeout_s: float = 10.0,
        keepalive_s: float = 30.0,
    ) -> None:
        self.runner = runner
        self.worker_id = worker_id
        self.worker_name = worker_name
        self.verifier = verifier
        self.hello_timeout_s = hello_timeout_s
        self.keepalive_s = keepalive_s
        self._files: dict[str, FileService] = {}
        #: Job checks running at once (they read files in threads).
        self.validations = asyncio.Semaphore(2)

    def files_for(self, user: str) -> FileService:
        """The file service one user sees: the mounts, with only their own uploads.

        Kept per user (a few dozen at most) so paging through a folder reads it once.
        """
        files = self._files.pop(user, None)
        if files is None:
            files = FileService(self.runner.mounts_for(user))
        self._files[user] = files
        while len(self._files) > MAX_FILE_VIEWS:
            del self._files[next(iter(self._files))]
        return files

    async def serve(self, channel: Channel, sender: Sender) -> None:
        """Speak the job protocol on ``channel`` until it closes.

        ``sender`` is the client session the server vouched for when the channel
        was opened (relayed or WebRTC); the ticket must have been issued to it.
        """
        session = _Session(self, channel)
        try:
            peer = await session.authenticate(sender)
            if peer is None:
                return
            log.info("channel (%s) opened by %s", channel.kind, peer.user)
            await session.run(peer)
        except ChannelClosed:
            pass
        finally:
            await session.finish()


class _Session:
    def __init__(self, service: JobService, channel: Channel) -> None:
        self.service = service
        self.runner = service.runner
        self.channel = channel
        self.peer: Peer | None = None
        self.followers: dict[str, asyncio.Task[None]] = {}
        self.last_sent = time.monotonic()
        self.send_lock = asyncio.Lock()
        self.keepalive: asyncio.Task[None] | None = None
        self.uploads: Uploads | None = None
        #: Replaced by the peer's own view of the mounts once its ticket checks out.
        self.downloads = Downloads(service.runner.mounts_for(None), self.send)

    async def send(self, message: p._Msg) -> None:
        async with self.send_lock:
            await self.channel.send(p.encode(message))
            self.last_sent = time.monotonic()

    async def refuse(self, code: str, message: str) -> None:
        with contextlib.suppress(ChannelClosed):
            await self.send(p.Error(code=code, message=message))
        await self.channel.close(message)

    async def authenticate(self, sender: Sender) -> Peer | None:
        try:
            raw = await asyncio.wait_for(self.channel.recv(), self.service.hello_timeout_s)
        except TimeoutError:
            await self.refuse("UNAUTHORIZED", "send HELLO with a ticket first")
            return None
        try:
            hello = p.decode_client(raw)
        except ProtocolError as exc:
            await self.refuse(exc.code, exc.message)
            return None
        if not isinstance(hello, p.Hello):
            await self.refuse("UNAUTHORIZED", "send HELLO with a ticket before anything else")
            return None
        verifier = self.service.verifier
        if verifier is None:
            await self.refuse("UNAVAILABLE", "worker is not registered with a server yet")
            return None
        try:
            peer = verifier.verify(hello.ticket, sender)
        except TicketError as exc:
            log.info(
                "channel (%s) from %s refused: %s",
                self.channel.kind,
                loggable(sender.name),
                loggable(exc),
            )
            await self.refuse("UNAUTHORIZED", str(exc))
            return None
        self.peer = peer
        self.downloads = Downloads(self.runner.mounts_for(peer.user), self.send)
        config = self.runner.config
        self.uploads = Uploads(
            config.resolved_upload_dir(), peer.user, config.max_upload_mb * 1024 * 1024
        )
        await self.send(
            p.Welcome(
                worker_id=self.service.worker_id,
                worker_name=self.service.worker_name,
                user=peer.user,
            )
        )
        return peer

    async def run(self, peer: Peer) -> None:
        """Answer every message until the channel closes.

        An invalid message costs the sender one ERROR, like any request; a flood of
        them is bounded by the channel's inbox, not by closing on the first mistakes.
        """
        self.keepalive = asyncio.create_task(self._keepalive())
        while True:
            raw = await self.channel.recv()
            try:
                message = p.decode_client(raw)
            except ProtocolError as exc:
                await self.send(p.Error(code=exc.code, message=clip(exc.message, 500)))
                continue
            try:
                await self.handle(message, peer)
            except (ChannelClosed, asyncio.CancelledError):
                raise
            except Exception as exc:
                # A bug or an input nobody foresaw must cost one request, not the
                # channel: answer it, keep serving.
                log.exception("could not handle %s from %s", message.type, loggable(peer.user))
                await self.send(
                    p.Error(
                        code="INTERNAL",
                        message=clip(
                            f"the worker could not handle this {message.type}: "
                            f"{type(exc).__name__}; it has been logged",
                            500,
                        ),
                        request_id=getattr(message, "request_id", None),
                        job_id=getattr(message, "job_id", None),
                    )
                )

    async def handle(self, message: Any, peer: Peer) -> None:
        if isinstance(message, p.JobSubmit):
            await self.submit(message, peer)
        elif isinstance(message, p.JobAttach):
            record = self.runner.store.get(message.job_id)
            if record is None:
                await self.send(self.no_job(message.job_id))
                return
            self.follow(record.id, replay_lines=message.log_lines)
        elif isinstance(message, p.JobStatus):
            record = self.runner.store.get(message.job_id)
            await self.send(
                p.JobStatusReply(job=summarize(record)) if record else self.no_job(message.job_id)
            )
        elif isinstance(message, p.JobList):
            await self.send(job_list_reply(self.runner, message))
        elif isinstance(message, p.JobCancel | p.JobStop):
            await self.control(message, peer)
        elif isinstance(message, p.Ping):
            await self.send(p.Pong(nonce=message.nonce))
        elif isinstance(message, p.FsMounts | p.FsList | p.FsStat | p.FsFind):
            await self.file_request(message)
        elif isinstance(message, p.UploadBegin | p.UploadChunk | p.UploadEnd):
            await self.upload(message)
        elif isinstance(message, p.Download):
            await self.start_download(message)
        elif isinstance(message, p.DownloadAck):
            self.downloads.ack(message)
        else:
            await self.send(p.Error(code="UNEXPECTED", message=f"{message.type} is not expected"))

    async def file_request(self, message: p.FsMounts | p.FsList | p.FsStat | p.FsFind) -> None:
        """Answer a file-service request (read-only, inside the mounts only)."""
        try:
            files = self.service.files_for(self.peer.user if self.peer else "")
            reply = await asyncio.to_thread(_file_reply, files, message)
        except FsError as exc:
            await self.send(
                p.Error(code=exc.code, message=exc.message, request_id=message.request_id)
            )
            return
        await self.send(reply)

    async def upload(self, message: p.UploadBegin | p.UploadChunk | p.UploadEnd) -> None:
        """One upload message; any failure ends that upload (its files removed) with an
        ERROR naming it, never the channel."""
        assert self.uploads is not None
        try:
            if isinstance(message, p.UploadBegin):
                self.uploads.begin(message)
                await self.send(p.UploadAck(upload_id=message.upload_id, received=0))
            elif isinstance(message, p.UploadChunk):
                received = self.uploads.chunk(message)
                if received is not None:
                    await self.send(p.UploadAck(upload_id=message.upload_id, received=received))
            else:
                done = await asyncio.to_thread(self.uploads.end, message)
                user = self.peer.user if self.peer else "?"
                log.info("upload %s from %s: %s", message.upload_id, user, done.path)
                await self.send(done)
        except (TransferError, OSError) as exc:
            self.uploads.abort(message.upload_id)
            code, text = (
                (exc.code, exc.message)
                if isinstance(exc, TransferError)
                else ("UPLOAD_FAILED", f"the worker can't store the upload: {exc.strerror}")
            )
            await self.send(
                p.Error(code=code, message=clip(text, 4000), transfer_id=message.upload_id)
            )

    async def start_download(self, message: p.Download) -> None:
        """Start a download (at most a few per channel; see :class:`Downloads`)."""
        await self.downloads.start(message)

    @staticmethod
    def no_job(job_id: str) -> p.Error:
        return p.Error(
            code="NO_SUCH_JOB", message=f"no job {job_id!r} on this worker", job_id=job_id
        )

    async def submit(self, message: p.JobSubmit, peer: Peer) -> None:
        try:
            spec = parse_spec(message.spec)
        except SpecRejected as exc:
            await self.send(rejection(message.request_id, None, exc.problems))
            return
        # Validation reads files (configs, labels): off the event loop, one or two at a
        # time, and never longer than VALIDATION_TIMEOUT_S.
        plan = rejected = None
        try:
            async with self.service.validations:
                plan = await asyncio.wait_for(
                    asyncio.to_thread(self.runner.validate, spec, peer.user),
                    VALIDATION_TIMEOUT_S,
                )
        except SpecRejected as exc:
            rejected = exc
        except TimeoutError:
            await self.send(
                p.Error(
                    code="TIMEOUT",
                    message=(
                        f"checking the job took over {VALIDATION_TIMEOUT_S:.0f} s (a slow or "
                        "huge file?); the job was not queued"
                    ),
                    request_id=message.request_id,
                )
            )
            return
        try:
            record = self.runner.submit(spec, owner=peer.user, plan=plan, rejected=rejected)
        except JobRejectedError as exc:
            log.info("job %s from %s rejected: %s", exc.job_id, loggable(peer.user), loggable(exc))
            await self.send(rejection(message.request_id, exc.job_id, exc.problems))
            return
        except RuntimeError as exc:
            await self.send(
                p.Error(code="UNAVAILABLE", message=str(exc), request_id=message.request_id)
            )
            return
        log.info("job %s (%s) accepted from %s", record.id, record.kind, loggable(peer.user))
        await self.send(
            p.JobAccepted(request_id=message.request_id, job_id=record.id, state=record.state.value)
        )
        self.follow(record.id, replay_lines=0)

    async def control(self, message: p.JobCancel | p.JobStop, peer: Peer) -> None:
        record = self.runner.store.get(message.job_id)
        if record is None:
            await self.send(self.no_job(message.job_id))
            return
        if record.owner is not None and record.owner != peer.user:
            await self.send(
                p.Error(
                    code="FORBIDDEN",
                    message=f"job {record.id} belongs to {record.owner}; only they can "
                    f"{'cancel' if isinstance(message, p.JobCancel) else 'stop'} it",
                    job_id=record.id,
                )
            )
            return
        if isinstance(message, p.JobCancel):
            record = await self.runner.cancel(record.id)
        elif not await self.runner.stop_early(record.id):
            reason = (
                "this worker has stop-early turned off (stop_early = false)"
                if not self.runner.config.stop_early
                else "the job is not training right now"
            )
            await self.send(
                p.Error(code="CANNOT_STOP", message=f"can't stop early: {reason}", job_id=record.id)
            )
            return
        await self.send(p.JobStatusReply(job=summarize(self.runner.store.get(record.id) or record)))

    def follow(self, job_id: str, replay_lines: int) -> None:
        old = self.followers.pop(job_id, None)
        if old is not None:
            old.cancel()
        self.followers[job_id] = asyncio.create_task(self._follow(job_id, replay_lines))

    async def _follow(self, job_id: str, replay_lines: int) -> None:
        """Send the job's events to this channel until it ends (or the channel does)."""
        pending: list[str] = []
        flush_at = 0.0
        first = True
        try:
            async for event in self.runner.watch(job_id):
                if first:
                    first = False
                    assert isinstance(event, StateEvent)
                    record = event.record
                    lines = (
                        self.runner.store.read_log(job_id, tail=replay_lines)
                        if replay_lines
                        else []
                    )
                    if replay_lines or record.finished:
                        # The whole tail asked for, in as many messages as it takes.
                        for chunk in p.chunk_lines(lines) or [[]]:
                            await self.send(
                                p.JobProgress(
                                    job_id=job_id,
                                    state=record.state.value,
                                    progress=_progress(record.progress),
                                    lines=chunk,
                                    replay=True,
                                )
                            )
                    if record.finished:
                        tail = self.runner.store.read_log(job_id, tail=30)
                        await self.send(terminal_message(record, tail))
                        return
                    continue
                if isinstance(event, LogEvent):
                    pending.append(event.line)
                    now = time.monotonic()
                    if now >= flush_at or len(pending) >= 50:
                        await self._flush(job_id, pending)
                        flush_at = now + LOG_BATCH_S
                    continue
                await self._flush(job_id, pending)
                if isinstance(event, ProgressEvent):
                    await self.send(p.JobProgress(job_id=job_id, progress=event.progress))
                elif isinstance(event, StateEvent):
                    record = event.record
                    if record.finished:
                        tail = self.runner.store.read_log(job_id, tail=30)
                        await self.send(terminal_message(record, tail))
                        return
                    await self.send(p.JobProgress(job_id=job_id, state=record.state.value))
        except ChannelClosed:
            return
        finally:
            self.followers.pop(job_id, None)

    async def _flush(self, job_id: str, pending: list[str]) -> None:
        if pending:
            chunks = p.chunk_lines(pending)
            pending.clear()
            for lines in chunks:
                await self.send(p.JobProgress(job_id=job_id, lines=lines))

    async def _keepalive(self) -> None:
        interval = self.service.keepalive_s
        while True:
            await asyncio.sleep(max(0.5, interval / 3))
            if time.monotonic() - self.last_sent >= interval:
                await self.send(p.Keepalive())

    async def finish(self) -> None:
        if self.uploads is not None:
            self.uploads.abort()
        await self.downloads.close()
        tasks = [
            *self.followers.values(),
            *([self.keepalive] if self.keepalive else []),
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ChannelClosed, Exception):
                await task
        if not self.channel.closed:
            await self.channel.close("worker ended the session")


def _fs_entry(entry: Entry, *, with_path: bool) -> p.FsEntry:
    """An entry as the protocol carries it: names from disk that aren't UTF-8 shown
    with ``\\xNN`` escapes (a message can't hold them raw), lengths bounded."""
    return p.FsEntry(
        name=display(entry.name)[:1024],
        kind=entry.kind,
        size=entry.size,
        modified=entry.modified,
        path=display(entry.path)[:4096] if with_path else None,
    )


def _file_reply(files: FileService, message: p.FsMounts | p.FsList | p.FsStat | p.FsFind) -> p._Msg:
    """The reply to a file request; long pages are shortened to fit one message."""
    if isinstance(message, p.FsMounts):
        return p.FsMountsReply(
            request_id=message.request_id,
            mounts=[
                p.FsMount(
                    label=m.label,
                    path=m.path,
                    read_only=m.read_only,
                    free_bytes=m.free_bytes,
                    total_bytes=m.total_bytes,
                )
                for m in files.list_mounts()
            ],
        )
    if isinstance(message, p.FsStat):
        return p.FsStatReply(
            request_id=message.request_id, entry=_fs_entry(files.stat(message.path), with_path=True)
        )
    if isinstance(message, p.FsList):
        listing = files.list(
            message.path,
            offset=message.offset,
            limit=message.limit,
            pattern=message.pattern,
            dirs_only=message.dirs_only,
        )
        entries = [_fs_entry(e, with_path=False) for e in listing.entries]
        while True:
            reply = p.FsListReply(
                request_id=message.request_id,
                path=display(listing.path)[:4096],
                entries=entries,
                total=listing.total,
                offset=listing.offset,
            )
            if p.fits(reply) or not entries:
                return reply
            entries = entries[: len(entries) // 2]
    result = files.find(message.query, under=message.under, limit=message.limit)
    matches = [
        p.FsMatch(entry=_fs_entry(m.entry, with_path=True), rank=m.rank, score=round(m.score, 4))
        for m in result.matches
    ]
    while True:
        found = p.FsFindReply(
            request_id=message.request_id,
            matches=matches,
            scanned=result.scanned,
            truncated=result.truncated,
        )
        if p.fits(found) or not matches:
            return found
        matches = matches[: len(matches) // 2]
        result.truncated = result.truncated or "results"


def _problem(problem: Any) -> p.ProblemView:
    return p.ProblemView(
        field=str(problem.field)[:4000],
        path=(str(problem.value)[:4000] if problem.value is not None else None),
        code=str(problem.code),
        message=str(problem.message)[:4000],
    )
