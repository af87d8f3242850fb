"""Talk to one worker: submit jobs, follow them, control them, move files.

::

    async with ServerClient.from_config() as server:
        async with await WorkerSession.open(server, "my-room", "worker-3f9a1c2e") as worker:
            job = await worker.submit(TrainSpec(config_paths=["/vast/project/centroid.yaml"]))
            async for event in job.events():
                print(event)
            print(await job.wait())

:meth:`WorkerSession.open` opens the channel (:mod:`sleap_rtc.client.connect`);
the conversation's rules are :class:`sleap_rtc.protocol.session.ClientSession`'s,
and this module is the I/O loop around it: one reader task feeds it what arrives
and hands each reply to the call waiting for that ``request_id``, each job event to
its :class:`JobHandle` and each transfer message to its upload or download
(:mod:`sleap_rtc.client.transfers`). Calls may run concurrently. A worker that
goes silent for ``idle_timeout`` seconds ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from sleap_rtc.client.connect import Connection, Transport, connect
from sleap_rtc.client.errors import ClientError, JobRejectedError, SessionClosed, WorkerError
from sleap_rtc.client.lanes import LANE_KINDS, ClientLanes, LaneKind, relay_dialer
from sleap_rtc.client.session import ServerClient
from sleap_rtc.client.transfers import receive_files, upload_file
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.session import (
    DEFAULT_IDLE_TIMEOUT_S,
    Answered,
    BadMessage,
    ClientSession,
    JobUpdate,
    StrayError,
    TransferUpdate,
)
from sleap_rtc.transport.base import Channel, ChannelClosed
from sleap_rtc.transport.relay import ServerSocket
from sleap_rtc.transport.webrtc import WebRTCChannel

__all__ = [
    "DEFAULT_IDLE_TIMEOUT_S",
    "JobEvent",
    "JobHandle",
    "JobRejectedError",
    "SessionClosed",
    "Transport",
    "WorkerError",
    "WorkerSession",
]

log = logging.getLogger("sleap_rtc.client")

JobEvent = p.JobProgress | p.JobComplete | p.JobFailed
#: ERRORs kept that answered nothing (see :attr:`WorkerSession.stray_errors`).
MAX_STRAY_ERRORS = 100


def _rid() -> str:
    return uuid.uuid4().hex[:16]


class WorkerSession:
    """An open, welcomed channel to one worker."""

    def __init__(
        self,
        connection: Connection,
        *,
        worker_id: str,
        room: str,
        lane_kinds: Sequence[LaneKind] = LANE_KINDS,
        server: ServerClient | None = None,
    ) -> None:
        self.channel: Channel = connection.channel
        self.socket: ServerSocket = connection.socket
        self.protocol: ClientSession = connection.protocol
        self.worker_id = worker_id
        self.room = room
        self.idle_timeout = self.protocol.idle_timeout
        welcome = self.protocol.welcome
        self.worker_name = welcome.worker_name if welcome else ""
        self.user = welcome.user if welcome else ""
        #: ERRORs from the worker that answered no request of this session (e.g. to a
        #: message it could not read), newest last; the oldest are dropped past a bound.
        self.stray_errors: asyncio.Queue[p.Error] = asyncio.Queue(MAX_STRAY_ERRORS)
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._jobs: dict[str, asyncio.Queue[JobEvent | SessionClosed]] = {}
        self._transfers: dict[str, asyncio.Queue[Any]] = {}
        self._send_lock = asyncio.Lock()
        self._closed: SessionClosed | None = None
        #: The lane for bulk bytes, opened by the first transfer that can use it
        #: (``lane_kinds`` empty: every transfer goes over the channel).
        self.lanes = ClientLanes(
            self._lane_offer,
            relay=relay_dialer(server) if server is not None else None,
            webrtc=self.channel.open_lane if isinstance(self.channel, WebRTCChannel) else None,
            kinds=lane_kinds,
        )
        self._reader = asyncio.create_task(self._read())

    @property
    def transport(self) -> str:
        return self.channel.kind

    @classmethod
    async def open(
        cls,
        server: ServerClient,
        room: str,
        worker_id: str,
        *,
        transport: Transport = "auto",
        webrtc_timeout: float = 8.0,
        ice_servers: Sequence[dict[str, Any]] = (),
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S,
        lane_kinds: Sequence[LaneKind] = LANE_KINDS,
    ) -> WorkerSession:
        """Get a ticket, open a channel (WebRTC, else relay) and say HELLO.

        ``lane_kinds``: the lanes files may take beside the channel, tried in order: a
        direct TLS lane to the worker when this machine can reach it, then a lane relayed
        through the server (empty: files go over the channel).
        """
        connection = await connect(
            server,
            room,
            worker_id,
            transport=transport,
            webrtc_timeout=webrtc_timeout,
            ice_servers=ice_servers,
            idle_timeout=idle_timeout,
        )
        return cls(connection, worker_id=worker_id, room=room, lane_kinds=lane_kinds, server=server)

    async def __aenter__(self) -> WorkerSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the I/O loop -----------------------------------------------------------------------

    async def _read(self) -> None:
        reason = "channel closed"
        try:
            while True:
                wait = max(0.0, self.protocol.idle_deadline - time.monotonic())
                try:
                    raw = await asyncio.wait_for(self.channel.recv(), wait)
                except TimeoutError:
                    if self.protocol.check_idle():
                        reason = self.protocol.close_reason or "idle"
                        return
                    continue
                self.protocol.receive_data(raw)
                for event in self.protocol.events_received():
                    self._dispatch(event)
        except ChannelClosed as exc:
            reason = exc.reason
        finally:
            self.protocol.close(reason)
            self._fail(SessionClosed(f"lost the channel to the worker: {reason}"))
            with contextlib.suppress(Exception):
                await self.channel.close(reason)

    def _dispatch(self, event: Any) -> None:
        if isinstance(event, Answered):
            reply = event.reply
            # Queues first: what follows the reply on the channel is routed to them.
            if isinstance(reply, p.JobAccepted):
                self._jobs.setdefault(reply.job_id, asyncio.Queue())
            elif isinstance(reply, p.DownloadBegin):
                self._transfers[reply.transfer_id] = asyncio.Queue()
            future = self._pending.pop(event.request_id, None)
            if future is not None and not future.done():
                future.set_result(reply)
        elif isinstance(event, JobUpdate):
            queue = self._jobs.get(event.job_id)
            if queue is not None:
                queue.put_nowait(event.message)
        elif isinstance(event, TransferUpdate):
            transfer = self._transfers.get(event.key)
            if transfer is not None:
                transfer.put_nowait(event.message)
        elif isinstance(event, StrayError):
            log.warning("the worker reported %s: %s", event.error.code, event.error.message)
            if self.stray_errors.full():
                self.stray_errors.get_nowait()
            self.stray_errors.put_nowait(event.error)
        elif isinstance(event, BadMessage):
            log.warning("invalid message from the worker: %s", event.error)

    def _fail(self, error: SessionClosed) -> None:
        self._closed = error
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        for queue in self._jobs.values():
            queue.put_nowait(error)
        for transfer in self._transfers.values():
            transfer.put_nowait(error)

    async def _flush(self) -> None:
        try:
            async with self._send_lock:
                for text in self.protocol.data_to_send():
                    await self.channel.send(text)
        except ChannelClosed as exc:
            raise SessionClosed(f"lost the channel to the worker: {exc.reason}") from None

    def _check_open(self) -> None:
        if self._closed is not None:
            raise self._closed

    async def _send(self, message: Any) -> None:
        """Send a transfer message."""
        self._check_open()
        self.protocol.send(message)
        await self._flush()

    async def _request(self, message: Any) -> Any:
        """Send a request and wait for the reply carrying its ``request_id``."""
        self._check_open()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[message.request_id] = future
        try:
            self.protocol.request(message)
            await self._flush()
            reply = await future
        finally:
            if self._pending.pop(message.request_id, None) is not None:
                self.protocol.forget(message.request_id)
        if isinstance(reply, p.Error):
            raise WorkerError(reply.code, reply.message)
        return reply

    # -- jobs -------------------------------------------------------------------------------

    async def submit(self, spec: TrainSpec | TrackSpec) -> JobHandle:
        """Send a job; returns its handle once accepted, raises JobRejectedError if not."""
        reply = await self._request(
            p.JobSubmit(request_id=_rid(), spec=spec.model_dump(mode="json"))
        )
        if isinstance(reply, p.JobRejected):
            raise JobRejectedError(reply.job_id, list(reply.errors))
        return self._handle(reply.job_id, owner=self.user or None)

    def _handle(self, job_id: str, owner: str | None = None) -> JobHandle:
        queue = self._jobs.setdefault(job_id, asyncio.Queue())
        if self._closed is not None:
            queue.put_nowait(self._closed)
        return JobHandle(self, job_id, queue, owner=owner)

    async def attach(self, job_id: str, log_lines: int = 50) -> JobHandle:
        """Follow a job that is already there: its state and last log lines, then live.

        Returns once the worker has acknowledged the attach; WorkerError
        ``NO_SUCH_JOB`` at once if it has no such job.
        """
        handle = self._handle(job_id)
        try:
            reply: p.JobStatusReply = await self._request(
                p.JobAttach(request_id=_rid(), job_id=job_id, log_lines=log_lines)
            )
        except WorkerError:
            self._jobs.pop(job_id, None)
            self.protocol.unfollow(job_id)
            raise
        handle.owner = reply.job.owner
        return handle

    async def status(self, job_id: str) -> p.JobSummary:
        reply: p.JobStatusReply = await self._request(p.JobStatus(request_id=_rid(), job_id=job_id))
        return reply.job

    async def jobs(self, limit: int = 50) -> list[p.JobSummary]:
        """The newest ``limit`` jobs, asked for page by page (a page fits one message)."""
        found: list[p.JobSummary] = []
        offset: int | None = 0
        while offset is not None and len(found) < limit:
            want = min(200, limit - len(found))
            reply: p.JobListReply = await self._request(
                p.JobList(request_id=_rid(), limit=want, offset=offset)
            )
            found += reply.jobs
            if not reply.jobs or reply.next_offset is None or reply.next_offset <= offset:
                break
            offset = reply.next_offset
        return found[:limit]

    async def cancel(self, job_id: str) -> p.JobSummary:
        reply: p.JobStatusReply = await self._request(p.JobCancel(request_id=_rid(), job_id=job_id))
        return reply.job

    async def stop(self, job_id: str) -> p.JobSummary:
        """Stop training after the current batch and keep the model."""
        reply: p.JobStatusReply = await self._request(p.JobStop(request_id=_rid(), job_id=job_id))
        return reply.job

    async def ping(self) -> None:
        await self._request(p.Ping(request_id=_rid(), nonce=uuid.uuid4().hex[:8]))

    async def _lane_offer(self, via: LaneKind) -> p.LaneOffer:
        reply: p.LaneOffer = await self._request(p.LaneOpen(request_id=_rid(), via=via))
        return reply

    # -- files ------------------------------------------------------------------------------

    def _receiver(self, queue: asyncio.Queue[Any]) -> Callable[[float], Any]:
        async def receive(timeout: float) -> Any:
            try:
                reply = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                raise ClientError("the worker stopped answering during a file transfer") from None
            if isinstance(reply, SessionClosed):
                raise reply
            if isinstance(reply, p.Error):
                raise WorkerError(reply.code, reply.message)
            return reply

        return receive

    async def upload(
        self,
        path: Path,
        *,
        unpack: bool = False,
        dest: str | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> p.UploadDone:
        """Send a local file to the worker's upload folder (``unpack``: extract a zip there),
        or into the folder ``dest`` of a writable mount (a path, or ``label/folder``)."""
        upload_id = _rid()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._transfers[upload_id] = queue
        try:
            return await upload_file(
                path,
                upload_id,
                unpack=unpack,
                send=self._send,
                receive=self._receiver(queue),
                on_progress=on_progress,
                lanes=self.lanes,
                queue=queue,
                dest=dest,
            )
        finally:
            self._transfers.pop(upload_id, None)
            self.protocol.end_transfer(upload_id)

    async def download(
        self,
        remote: str,
        dest: Path,
        *,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Path:
        """Fetch a file or folder from the worker into ``dest``; returns the local path.

        Every file's size and SHA-256 is checked, and names from the worker are
        kept inside ``dest``; nothing is left half-written if the transfer fails.
        """
        lane = await self.lanes.get()
        begin: p.DownloadBegin = await self._request(p.Download(request_id=_rid(), path=remote))
        queue = self._transfers.setdefault(begin.transfer_id, asyncio.Queue())
        try:
            return await receive_files(
                begin,
                dest,
                send=self._send,
                receive=self._receiver(queue),
                on_progress=on_progress,
                lanes=self.lanes,
                queue=queue,
                lane=lane,
            )
        finally:
            self._transfers.pop(begin.transfer_id, None)
            self.protocol.end_transfer(begin.transfer_id)

    # -- the worker's files (read-only, inside its mounts) ---------------------------------

    async def fs_mounts(self) -> list[p.FsMount]:
        reply: p.FsMountsReply = await self._request(p.FsMounts(request_id=_rid()))
        return list(reply.mounts)

    async def fs_list(
        self,
        path: str,
        *,
        offset: int = 0,
        limit: int = 200,
        pattern: str | None = None,
        dirs_only: bool = False,
    ) -> p.FsListReply:
        """One page of a folder on the worker (folders first); ``total`` counts them all."""
        reply: p.FsListReply = await self._request(
            p.FsList(
                request_id=_rid(),
                path=path,
                offset=offset,
                limit=limit,
                pattern=pattern,
                dirs_only=dirs_only,
            )
        )
        return reply

    async def fs_stat(self, path: str) -> p.FsEntry:
        reply: p.FsStatReply = await self._request(p.FsStat(request_id=_rid(), path=path))
        return reply.entry

    async def fs_find(
        self, query: str, *, under: str | None = None, limit: int = 50
    ) -> p.FsFindReply:
        """Files named like ``query`` (a name or glob) in the worker's mounts, best first."""
        reply: p.FsFindReply = await self._request(
            p.FsFind(request_id=_rid(), query=query, under=under, limit=limit)
        )
        return reply

    async def close(self) -> None:
        # Close the channel first: the reader then ends by itself. (Cancelling it
        # while aiortc tears the connection down can leave the teardown hanging.)
        await self.lanes.close()
        await self.channel.close("client closed the session")
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), 5)
        except (TimeoutError, asyncio.CancelledError, Exception):
            self._reader.cancel()
        await self.socket.close()


class JobHandle:
    def __init__(
        self,
        session: WorkerSession,
        job_id: str,
        queue: asyncio.Queue[JobEvent | SessionClosed],
        *,
        owner: str | None = None,
    ) -> None:
        self.session = session
        self.job_id = job_id
        self._queue = queue
        self.result: p.JobComplete | p.JobFailed | None = None
        #: Who submitted the job (None for a job recorded without one).
        self.owner = owner

    @property
    def can_control(self) -> bool:
        """Whether this session may stop or cancel the job: the worker lets only its
        owner do that (anyone, for a job recorded without an owner)."""
        return self.owner is None or self.owner == self.session.user

    async def events(self) -> AsyncIterator[JobEvent]:
        """Progress, then the final JOB_COMPLETE or JOB_FAILED; raises SessionClosed if lost."""
        while self.result is None:
            item = await self._queue.get()
            if isinstance(item, SessionClosed):
                self._queue.put_nowait(item)
                raise item
            if isinstance(item, p.JobComplete | p.JobFailed):
                self.result = item
            yield item

    async def wait(self) -> p.JobComplete | p.JobFailed:
        async for _ in self.events():
            pass
        assert self.result is not None
        return self.result

    async def cancel(self) -> p.JobSummary:
        return await self.session.cancel(self.job_id)

    async def stop(self) -> p.JobSummary:
        return await self.session.stop(self.job_id)
