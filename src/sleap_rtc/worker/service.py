"""The worker's side of the job protocol on one channel: the I/O loop and the answers.

The rules of the conversation (HELLO first, every reply carrying its request's id,
keepalives) are kept by :class:`sleap_rtc.protocol.session.WorkerSession`; this
module reads the channel into it, checks the ticket it asks about, answers each
request from the job runner and the file service, and writes out what it queued.
A channel proves who is on the other end with ``HELLO`` and a ticket the server
signed for this user, room and worker; nothing else is read before that. Jobs
outlive channels: closing a channel stops the events, not the job.

One channel's answers to every request type live together in :class:`_Session`
(the reason this file is over 500 lines); the lane, transfers and file service it
calls are modules of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sleap_rtc.jobs.problems import JobRejected
from sleap_rtc.jobs.specs import parse_spec
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.session import HelloReceived, RequestReceived, State, WorkerSession
from sleap_rtc.protocol.signaling import ControlAction, Sender, loggable
from sleap_rtc.protocol.transfer import TransferError
from sleap_rtc.transport.base import Channel, ChannelClosed
from sleap_rtc.transport.lane import LaneServer
from sleap_rtc.transport.webrtc import WebRTCChannel
from sleap_rtc.worker.control import ControlRefused, control_job
from sleap_rtc.worker.downloads import Downloads
from sleap_rtc.worker.files import FileService, FsError
from sleap_rtc.worker.fsafe import clip
from sleap_rtc.worker.lanes import PeerLane, RelayDialer
from sleap_rtc.worker.replies import (
    file_reply,
    job_list_reply,
    progress_of,
    rejection,
    summarize,
    terminal_message,
)
from sleap_rtc.worker.runner import (
    JobRunner,
    LogEvent,
    ProgressEvent,
    QueueEvent,
    StateEvent,
)
from sleap_rtc.worker.tickets import Peer, TicketError, TicketVerifier
from sleap_rtc.worker.uploads import Uploads

log = logging.getLogger("sleap_rtc.worker")

#: Log lines gathered into one JOB_PROGRESS while a job is chatty.
LOG_BATCH_S = 0.25
#: Users whose file views (with their listing caches) are kept at once.
MAX_FILE_VIEWS = 32
#: Longest a job's checks may take before the submit is answered with TIMEOUT.
VALIDATION_TIMEOUT_S = 30.0


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
        lanes: LaneServer | None = None,
    ) -> None:
        self.runner = runner
        #: Where clients open direct lanes for bulk bytes (None: transfers stay in-channel).
        self.lanes = lanes
        #: Opens relay lanes at the server, for clients that can't reach ``lanes``.
        self.relay_lanes: RelayDialer | None = None
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
    """One channel: the protocol session, the peer's uploads and downloads, its followers."""

    def __init__(self, service: JobService, channel: Channel) -> None:
        self.service = service
        self.runner = service.runner
        self.channel = channel
        self.protocol = WorkerSession(
            worker_id=service.worker_id,
            worker_name=service.worker_name,
            hello_timeout=service.hello_timeout_s,
            keepalive_interval=service.keepalive_s,
        )
        self.peer: Peer | None = None
        self.followers: dict[str, asyncio.Task[None]] = {}
        self.send_lock = asyncio.Lock()
        self.keepalive: asyncio.Task[None] | None = None
        self.uploads: Uploads | None = None
        #: Replaced by the peer's own view of the mounts once its ticket checks out.
        self.downloads = Downloads(service.runner.mounts_for(None), self.send)
        #: The direct lane the peer may open (LANE_OPEN) for bulk bytes.
        self.lane = PeerLane(service.lanes, self.lane_frame, service.relay_lanes)

    async def flush(self) -> None:
        """Write out what the protocol session queued, in order."""
        async with self.send_lock:
            for text in self.protocol.data_to_send():
                await self.channel.send(text)

    async def send(self, message: p._Msg) -> None:
        """Send a job event or transfer message; ChannelClosed once the session is over."""
        if self.protocol.state is State.CLOSED:
            raise ChannelClosed(self.protocol.close_reason or "session closed")
        self.protocol.send(message)
        await self.flush()

    async def _refused(self) -> None:
        with contextlib.suppress(ChannelClosed):
            await self.flush()
        await self.channel.close(self.protocol.close_reason or "refused")

    async def authenticate(self, sender: Sender) -> Peer | None:
        """Read the HELLO and check its ticket; the peer, or None once refused and closed."""
        wait = max(0.0, self.protocol.hello_deadline - time.monotonic())
        try:
            raw = await asyncio.wait_for(self.channel.recv(), wait)
        except TimeoutError:
            self.protocol.hello_timeout()
            await self._refused()
            return None
        self.protocol.receive_data(raw)
        hello = next(
            (e for e in self.protocol.events_received() if isinstance(e, HelloReceived)), None
        )
        if hello is None:
            await self._refused()
            return None
        verifier = self.service.verifier
        if verifier is None:
            self.protocol.refuse("UNAVAILABLE", "worker is not registered with a server yet")
            await self._refused()
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
            self.protocol.refuse("UNAUTHORIZED", str(exc))
            await self._refused()
            return None
        self.admit(peer)
        await self.flush()
        return peer

    def admit(self, peer: Peer) -> None:
        """The peer's ticket checked out: its own mounts and upload folder, then WELCOME."""
        self.peer = peer
        self.downloads = Downloads(
            self.runner.mounts_for(peer.user), self.send, lane=self.lane.live
        )
        config = self.runner.config
        self.uploads = Uploads(
            config.resolved_upload_dir(),
            peer.user,
            config.max_upload_mb * 1024 * 1024,
            self.runner.mounts_for(peer.user),
        )
        self.protocol.accept(peer.user)

    async def run(self, peer: Peer) -> None:
        """Answer every message until the channel closes.

        An invalid message costs the sender one ERROR, like any request; a flood of
        them is bounded by the channel's inbox, not by closing on the first mistakes.
        """
        self.keepalive = asyncio.create_task(self._keepalive())
        while True:
            self.protocol.receive_data(await self.channel.recv())
            for event in self.protocol.events_received():
                if isinstance(event, RequestReceived):
                    await self._handle_safely(event.message, peer)
            await self.flush()

    async def _handle_safely(self, message: Any, peer: Peer) -> None:
        try:
            await self.handle(message, peer)
        except (ChannelClosed, asyncio.CancelledError):
            raise
        except Exception as exc:
            # A bug or an input nobody foresaw must cost one request, not the
            # channel: answer it, keep serving.
            log.exception("could not handle %s from %s", message.type, loggable(peer.user))
            self.protocol.send(
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
        """Answer one request; replies are queued on the protocol session."""
        answer, fail = self.protocol.answer, self.protocol.fail
        if isinstance(message, p.JobSubmit):
            await self.submit(message, peer)
        elif isinstance(message, p.JobAttach | p.JobStatus):
            record = self.runner.store.get(message.job_id)
            if record is None:
                fail(message, "NO_SUCH_JOB", f"no job {message.job_id!r} on this worker")
                return
            answer(message, p.JobStatusReply(request_id=message.request_id, job=summarize(record)))
            if isinstance(message, p.JobAttach):
                # Queued after the reply, so the replay follows the acknowledgement.
                self.follow(record.id, replay_lines=message.log_lines)
        elif isinstance(message, p.JobList):
            answer(message, job_list_reply(self.runner, message))
        elif isinstance(message, p.JobCancel | p.JobStop):
            await self.control(message, peer)
        elif isinstance(message, p.FsMounts | p.FsList | p.FsStat | p.FsFind):
            await self.file_request(message)
        elif isinstance(message, p.UploadBegin | p.UploadChunk | p.UploadEnd):
            await self.upload(message)
        elif isinstance(message, p.Download):
            await self.downloads.start(message)
        elif isinstance(message, p.DownloadAck):
            self.downloads.ack(message)
        elif isinstance(message, p.LaneOpen):
            self.open_lane(message)
        elif isinstance(message, p.TransferResume):
            self.resume(message)
        else:
            self.protocol.send(
                p.Error(code="UNEXPECTED", message=f"{message.type} is not expected")
            )

    # -- the lane for bulk bytes ---------------------------------------------------------

    def open_lane(self, message: p.LaneOpen) -> None:
        """Offer a lane: this worker's addresses, certificate and a token for it, or
        (``via`` relay) a token for a half waiting at the server, answered once it waits."""
        if message.via == "relay":
            self.lane.background(self._offer_relay(message))
            return
        if message.via == "webrtc":
            if not isinstance(self.channel, WebRTCChannel):
                self.protocol.fail(message, "UNAVAILABLE", "this channel is not WebRTC")
                return
            self.channel.on_lane = self.lane.take
            self.protocol.answer(message, p.LaneOffer(request_id=message.request_id, via="webrtc"))
            return
        try:
            offer = self.lane.offer(message.request_id)
        except TransferError as exc:
            self.protocol.fail(message, exc.code, exc.message)
            return
        self.protocol.answer(message, offer)

    async def _offer_relay(self, message: p.LaneOpen) -> None:
        user_id = self.peer.user_id if self.peer is not None else ""
        try:
            offer = await self.lane.offer_relay(message.request_id, user_id)
        except TransferError as exc:
            self.protocol.fail(message, exc.code, exc.message)
        else:
            self.protocol.answer(message, offer)
        with contextlib.suppress(ChannelClosed):
            await self.flush()

    async def lane_frame(self, key: str, offset: int, data: bytes) -> None:
        """An upload's frame; a finished upload is acknowledged in full, a broken one ended."""
        if self.uploads is None or self.protocol.state is State.CLOSED:
            return
        try:
            done = self.uploads.frame(key, offset, data)
        except TransferError as exc:
            self.uploads.abort(key)
            self.protocol.send(
                p.Error(code=exc.code, message=clip(exc.message, 4000), transfer_id=key)
            )
        else:
            if done is None:
                return
            self.protocol.send(p.UploadAck(upload_id=key, received=done))
        await self.flush()

    def resume(self, message: p.TransferResume) -> None:
        """Go on with a download from an offset, or say how much of an upload arrived."""
        if self.downloads.resume(message):
            return
        if self.uploads is not None:
            try:
                received = self.uploads.received(message.transfer_id)
            except TransferError as exc:
                self.protocol.send(
                    p.Error(code=exc.code, message=exc.message, transfer_id=message.transfer_id)
                )
                return
            self.protocol.send(p.UploadAck(upload_id=message.transfer_id, received=received))

    async def file_request(self, message: p.FsMounts | p.FsList | p.FsStat | p.FsFind) -> None:
        """Answer a file-service request (read-only, inside the mounts only)."""
        try:
            files = self.service.files_for(self.peer.user if self.peer else "")
            reply = await asyncio.to_thread(file_reply, files, message)
        except FsError as exc:
            self.protocol.fail(message, exc.code, exc.message)
            return
        self.protocol.answer(message, reply)

    async def upload(self, message: p.UploadBegin | p.UploadChunk | p.UploadEnd) -> None:
        """One upload message; any failure ends that upload (its files removed) with an
        ERROR naming it, never the channel."""
        assert self.uploads is not None
        try:
            if isinstance(message, p.UploadBegin):
                self.uploads.begin(message)
                self.protocol.send(p.UploadAck(upload_id=message.upload_id, received=0))
            elif isinstance(message, p.UploadChunk):
                received = self.uploads.chunk(message)
                if received is not None:
                    self.protocol.send(p.UploadAck(upload_id=message.upload_id, received=received))
            else:
                done = await asyncio.to_thread(self.uploads.end, message)
                user = self.peer.user if self.peer else "?"
                log.info("upload %s from %s: %s", message.upload_id, user, done.path)
                self.protocol.send(done)
        except (TransferError, OSError) as exc:
            self.uploads.abort(message.upload_id)
            code, text = (
                (exc.code, exc.message)
                if isinstance(exc, TransferError)
                else ("UPLOAD_FAILED", f"the worker can't store the upload: {exc.strerror}")
            )
            self.protocol.send(
                p.Error(code=code, message=clip(text, 4000), transfer_id=message.upload_id)
            )

    async def submit(self, message: p.JobSubmit, peer: Peer) -> None:
        try:
            spec = parse_spec(message.spec)
        except JobRejected as exc:
            self.protocol.answer(message, rejection(message.request_id, None, exc.problems))
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
        except JobRejected as exc:
            rejected = exc
        except TimeoutError:
            self.protocol.fail(
                message,
                "TIMEOUT",
                f"checking the job took over {VALIDATION_TIMEOUT_S:.0f} s (a slow or "
                "huge file?); the job was not queued",
            )
            return
        try:
            record = self.runner.submit(spec, owner=peer.user, plan=plan, rejected=rejected)
        except JobRejected as exc:
            job_id = getattr(exc, "job_id", None)
            log.info("job %s from %s rejected: %s", job_id, loggable(peer.user), loggable(exc))
            self.protocol.answer(message, rejection(message.request_id, job_id, exc.problems))
            return
        except RuntimeError as exc:
            self.protocol.fail(message, "UNAVAILABLE", str(exc))
            return
        log.info("job %s (%s) accepted from %s", record.id, record.kind, loggable(peer.user))
        self.protocol.answer(
            message,
            p.JobAccepted(
                request_id=message.request_id, job_id=record.id, state=record.state.value
            ),
        )
        self.follow(record.id, replay_lines=0)

    async def control(self, message: p.JobCancel | p.JobStop, peer: Peer) -> None:
        action: ControlAction = "cancel" if isinstance(message, p.JobCancel) else "stop"
        try:
            record = await control_job(self.runner, message.job_id, action, peer.user)
        except ControlRefused as exc:
            self.protocol.fail(message, exc.code, exc.message)
            return
        self.protocol.answer(
            message,
            p.JobStatusReply(
                request_id=message.request_id,
                job=summarize(self.runner.store.get(record.id) or record),
            ),
        )

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
                                    progress=progress_of(record.progress),
                                    lines=chunk,
                                    replay=True,
                                )
                            )
                    if record.finished:
                        tail = self.runner.store.read_log(job_id, tail=30)
                        elapsed = self.runner.store.elapsed(job_id)
                        await self.send(terminal_message(record, tail, elapsed))
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
                elif isinstance(event, QueueEvent):
                    await self.send(
                        p.JobProgress(job_id=job_id, state="QUEUED", queue_position=event.position)
                    )
                elif isinstance(event, StateEvent):
                    record = event.record
                    if record.finished:
                        tail = self.runner.store.read_log(job_id, tail=30)
                        elapsed = self.runner.store.elapsed(job_id)
                        await self.send(terminal_message(record, tail, elapsed))
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
        while True:
            await asyncio.sleep(max(0.5, self.protocol.keepalive_at - time.monotonic()))
            if self.protocol.keepalive():
                await self.flush()

    async def finish(self) -> None:
        await self.lane.close()
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
        self.protocol.close("worker ended the session")
        if not self.channel.closed:
            await self.channel.close("worker ended the session")
