"""The worker's side of the job protocol on one channel.

A channel proves who is on the other end with ``HELLO`` and a ticket the server
signed for this user, room and worker; nothing else is read before that. Every
later message is size-limited, decoded into a typed message, and only then
acted on. Jobs outlive channels: closing a channel stops the events, not the job.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from sleap_rtc.jobs.events import TrackProgress, TrainProgress
from sleap_rtc.jobs.problems import JobRejected as SpecRejected
from sleap_rtc.jobs.specs import parse_spec
from sleap_rtc.jobs.states import JobState
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.signaling import ProtocolError
from sleap_rtc.transport.base import Channel, ChannelClosed
from sleap_rtc.worker.files import Entry, FileService, FsError
from sleap_rtc.worker.runner import (
    JobRejectedError,
    JobRunner,
    LogEvent,
    ProgressEvent,
    StateEvent,
)
from sleap_rtc.worker.store import JobRecord
from sleap_rtc.worker.transfers import TransferError, Uploads, list_download, sha256_file

log = logging.getLogger("sleap_rtc.worker")

#: Bad messages tolerated on one channel before it is closed.
MAX_PROTOCOL_ERRORS = 20
#: Log lines gathered into one JOB_PROGRESS while a job is chatty.
LOG_BATCH_S = 0.25


class TicketError(Exception):
    pass


@dataclass(frozen=True)
class Peer:
    """A client whose ticket checked out."""

    user: str
    user_id: str
    room: str


class TicketVerifier:
    """Checks peer tickets with the server's public key (sent at registration)."""

    def __init__(self, public_key_pem: str, issuer: str, room: str, worker_id: str) -> None:
        self._key = public_key_pem
        self.issuer = issuer
        self.room = room
        self.worker_id = worker_id

    def verify(self, ticket: str) -> Peer:
        try:
            claims: dict[str, Any] = jwt.decode(
                ticket,
                self._key,
                algorithms=["EdDSA"],
                audience="peer",
                issuer=self.issuer,
                options={"require": ["exp", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise TicketError("ticket has expired; ask the server for a new one") from None
        except jwt.InvalidTokenError as exc:
            raise TicketError(f"ticket is not valid: {exc}") from None
        if claims.get("wkr") != self.worker_id:
            raise TicketError("ticket is for another worker")
        if claims.get("room") != self.room:
            raise TicketError("ticket is for another room")
        return Peer(user=str(claims.get("name", "")), user_id=str(claims["sub"]), room=self.room)


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
        reason=(record.reason or "")[:4000] or None,
        exit_code=record.exit_code,
        outputs=record.outputs[:64],
        progress=_progress(record.progress),
        stopped_early=record.stopped_early,
        owner=record.owner,
        summary=what[:4000],
    )


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
        self.files = FileService(runner.mounts)

    async def serve(self, channel: Channel, relayed_by: str | None = None) -> None:
        """Speak the job protocol on ``channel`` until it closes.

        ``relayed_by`` is the user the server vouched for on a relayed channel;
        the ticket must name the same user.
        """
        session = _Session(self, channel)
        try:
            peer = await session.authenticate(relayed_by)
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
        self.downloads: dict[str, _Download] = {}

    async def send(self, message: p._Msg) -> None:
        async with self.send_lock:
            await self.channel.send(p.encode(message))
            self.last_sent = time.monotonic()

    async def refuse(self, code: str, message: str) -> None:
        with contextlib.suppress(ChannelClosed):
            await self.send(p.Error(code=code, message=message))
        await self.channel.close(message)

    async def authenticate(self, relayed_by: str | None) -> Peer | None:
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
            peer = verifier.verify(hello.ticket)
        except TicketError as exc:
            log.info("channel refused: %s", exc)
            await self.refuse("UNAUTHORIZED", str(exc))
            return None
        if relayed_by is not None and relayed_by != peer.user:
            await self.refuse("UNAUTHORIZED", "ticket belongs to another user")
            return None
        self.peer = peer
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
        self.keepalive = asyncio.create_task(self._keepalive())
        errors = 0
        while True:
            raw = await self.channel.recv()
            try:
                message = p.decode_client(raw)
            except ProtocolError as exc:
                errors += 1
                await self.send(p.Error(code=exc.code, message=exc.message))
                if errors >= MAX_PROTOCOL_ERRORS:
                    await self.refuse("TOO_MANY_ERRORS", "too many invalid messages")
                    return
                continue
            await self.handle(message, peer)

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
            records = self.runner.store.jobs(limit=message.limit)
            await self.send(p.JobListReply(jobs=[summarize(r) for r in records]))
        elif isinstance(message, p.JobCancel | p.JobStop):
            await self.control(message, peer)
        elif isinstance(message, p.Ping):
            await self.send(p.Pong(nonce=message.nonce))
        elif isinstance(message, p.FsMounts | p.FsList | p.FsStat | p.FsFind):
            await self.file_request(message)
        elif isinstance(message, p.UploadBegin | p.UploadChunk | p.UploadEnd):
            await self.upload(message)
        elif isinstance(message, p.Download):
            self.start_download(message)
        elif isinstance(message, p.DownloadAck):
            download = self.downloads.get(message.transfer_id)
            if download is not None:
                download.acked = max(download.acked, message.received)
                download.more.set()
        else:
            await self.send(p.Error(code="UNEXPECTED", message=f"{message.type} is not expected"))

    async def file_request(self, message: p.FsMounts | p.FsList | p.FsStat | p.FsFind) -> None:
        """Answer a file-service request (read-only, inside the mounts only)."""
        try:
            reply = await asyncio.to_thread(_file_reply, self.service.files, message)
        except FsError as exc:
            await self.send(
                p.Error(code=exc.code, message=exc.message, request_id=message.request_id)
            )
            return
        await self.send(reply)

    async def upload(self, message: p.UploadBegin | p.UploadChunk | p.UploadEnd) -> None:
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
        except TransferError as exc:
            self.uploads.abort(message.upload_id)
            await self.send(
                p.Error(code=exc.code, message=exc.message, transfer_id=message.upload_id)
            )

    def start_download(self, message: p.Download) -> None:
        transfer_id = uuid.uuid4().hex[:16]
        download = _Download(transfer_id)
        self.downloads[transfer_id] = download
        download.task = asyncio.create_task(self._download(message, download))

    async def _download(self, message: p.Download, download: _Download) -> None:
        try:
            real, files = await asyncio.to_thread(list_download, self.runner.mounts, message.path)
            listed = [
                p.RemoteFile(path=rel, size=path.stat().st_size, sha256=digest)
                for (path, rel), digest in zip(
                    files,
                    await asyncio.gather(*(asyncio.to_thread(sha256_file, f) for f, _ in files)),
                    strict=True,
                )
            ]
            await self.send(
                p.DownloadBegin(
                    request_id=message.request_id,
                    transfer_id=download.id,
                    name=_download_name(real),
                    files=listed,
                )
            )
            sent = 0
            for index, (path, _) in enumerate(files):
                with path.open("rb") as handle:
                    offset = 0
                    while block := handle.read(p.CHUNK_BYTES):
                        while sent - download.acked >= p.TRANSFER_WINDOW:
                            download.more.clear()
                            await asyncio.wait_for(download.more.wait(), 120)
                        await self.send(
                            p.DownloadChunk(
                                transfer_id=download.id,
                                file_index=index,
                                offset=offset,
                                data=base64.b64encode(block).decode("ascii"),
                            )
                        )
                        offset += len(block)
                        sent += len(block)
            await self.send(p.DownloadEnd(transfer_id=download.id))
        except TransferError as exc:
            await self.send(
                p.Error(
                    code=exc.code,
                    message=exc.message,
                    request_id=message.request_id,
                    transfer_id=download.id,
                )
            )
        except TimeoutError:
            await self.send(
                p.Error(
                    code="TIMEOUT",
                    message="the client stopped acknowledging the download",
                    transfer_id=download.id,
                )
            )
        except (ChannelClosed, OSError) as exc:
            log.info("download %s ended: %s", download.id, exc)
        finally:
            self.downloads.pop(download.id, None)

    @staticmethod
    def no_job(job_id: str) -> p.Error:
        return p.Error(
            code="NO_SUCH_JOB", message=f"no job {job_id!r} on this worker", job_id=job_id
        )

    async def submit(self, message: p.JobSubmit, peer: Peer) -> None:
        try:
            spec = parse_spec(message.spec)
        except SpecRejected as exc:
            await self.send(
                p.JobRejected(
                    request_id=message.request_id,
                    errors=[_problem(pr) for pr in exc.problems][:100],
                )
            )
            return
        try:
            record = self.runner.submit(spec, owner=peer.user)
        except JobRejectedError as exc:
            log.info("job %s from %s rejected: %s", exc.job_id, peer.user, exc)
            await self.send(
                p.JobRejected(
                    request_id=message.request_id,
                    job_id=exc.job_id,
                    errors=[_problem(pr) for pr in exc.problems][:100],
                )
            )
            return
        except RuntimeError as exc:
            await self.send(
                p.Error(code="UNAVAILABLE", message=str(exc), request_id=message.request_id)
            )
            return
        log.info("job %s (%s) accepted from %s", record.id, record.kind, peer.user)
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
        tasks = [
            *self.followers.values(),
            *(d.task for d in self.downloads.values() if d.task is not None),
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
    return p.FsEntry(
        name=entry.name[:1024],
        kind=entry.kind,
        size=entry.size,
        modified=entry.modified,
        path=entry.path[:4096] if with_path else None,
    )


def _fits(message: p._Msg) -> bool:
    try:
        p.encode(message)
    except ValueError:
        return False
    return True


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
                path=listing.path,
                entries=entries,
                total=listing.total,
                offset=listing.offset,
            )
            if _fits(reply) or not entries:
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
        if _fits(found) or not matches:
            return found
        matches = matches[: len(matches) // 2]
        result.truncated = result.truncated or "results"


class _Download:
    def __init__(self, transfer_id: str) -> None:
        self.id = transfer_id
        self.acked = 0
        self.more = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


def _download_name(real: Path) -> str:
    cleaned = "".join(c if c.isalnum() or c in " ._+()-" else "_" for c in real.name)[:255]
    return cleaned.lstrip(" ._+()-") or "download"


def _problem(problem: Any) -> p.ProblemView:
    return p.ProblemView(
        field=str(problem.field)[:4000],
        path=(str(problem.value)[:4000] if problem.value is not None else None),
        code=str(problem.code),
        message=str(problem.message)[:4000],
    )
