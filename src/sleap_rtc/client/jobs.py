"""Talk to one worker: open a channel, submit jobs, follow them, control them.

::

    async with ServerClient.from_config() as server:
        async with await WorkerSession.open(server, "my-room", "worker-3f9a1c2e") as worker:
            job = await worker.submit(TrainSpec(config_paths=["/vast/project/centroid.yaml"]))
            async for event in job.events():
                print(event)
            print(await job.wait())

The channel is a WebRTC data channel when one opens within ``webrtc_timeout``
seconds, else the same protocol relayed through the server (``transport="relay"``
forces it). Every message from the worker is decoded into a typed message; a
worker that goes silent for ``idle_timeout`` seconds ends the session.

Size: the session's reply matching is hand-written here; it moves into a sans-I/O
session object in ``protocol``, after which this file is the thin I/O shell.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Literal

from sleap_rtc.client.errors import ClientError
from sleap_rtc.client.session import ServerClient
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.signaling import ProtocolError, Sender
from sleap_rtc.transport.base import Channel, ChannelClosed
from sleap_rtc.transport.envelope import Answer, Close, Open, parse_envelope
from sleap_rtc.transport.relay import ClientRelayChannel, ServerSocket, new_channel_id

log = logging.getLogger("sleap_rtc.client")

Transport = Literal["auto", "webrtc", "relay"]
JobEvent = p.JobProgress | p.JobComplete | p.JobFailed
DEFAULT_IDLE_TIMEOUT_S = 600.0


class JobRejectedError(ClientError):
    """The worker refused the job; ``errors`` lists every problem."""

    def __init__(self, job_id: str | None, errors: list[p.ProblemView]) -> None:
        self.job_id = job_id
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))


class WorkerError(ClientError):
    """The worker answered a request with an ERROR."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SessionClosed(ClientError):
    pass


async def _open_webrtc(
    socket: ServerSocket,
    room: str,
    worker_id: str,
    timeout: float,
    ice_servers: Sequence[dict[str, Any]],
) -> Channel:
    from sleap_rtc.transport.webrtc import complete_offer, make_offer

    ch = new_channel_id()
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[str] = loop.create_future()

    def on_delivery(sender: Sender, payload: dict[str, Any]) -> None:
        if sender.kind != "worker" or sender.id != worker_id or answered.done():
            return
        env = parse_envelope(payload)
        if isinstance(env, Answer):
            answered.set_result(env.sdp)
        elif isinstance(env, Close):
            answered.set_exception(ChannelClosed(env.reason or "worker refused WebRTC"))

    def on_error(code: str, message: str) -> None:
        if not answered.done():
            answered.set_exception(ChannelClosed(message))

    pc, dc, offer = await make_offer(ice_servers)
    socket.subscribe(ch, on_delivery, on_error)
    try:
        await socket.relay(room, worker_id, Open(ch=ch, transport="webrtc", sdp=offer).model_dump())
        try:
            answer = await asyncio.wait_for(answered, timeout)
        except TimeoutError:
            raise ChannelClosed("worker did not answer the WebRTC offer in time") from None
        return await complete_offer(pc, dc, answer, timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            await pc.close()
        raise
    finally:
        socket.unsubscribe(ch)


class WorkerSession:
    def __init__(
        self,
        channel: Channel,
        socket: ServerSocket,
        *,
        worker_id: str,
        room: str,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S,
    ) -> None:
        self.channel = channel
        self.socket = socket
        self.worker_id = worker_id
        self.room = room
        self.idle_timeout = idle_timeout
        self.worker_name = ""
        self.user = ""
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._replies: asyncio.Queue[Any] = asyncio.Queue()
        self._rpc = asyncio.Lock()
        self._jobs: dict[str, asyncio.Queue[JobEvent | SessionClosed]] = {}
        self._transfers: dict[str, asyncio.Queue[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closed: SessionClosed | None = None

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
    ) -> WorkerSession:
        """Get a ticket, open a channel (WebRTC, else relay) and say HELLO."""
        ticket = await server.ticket(room, worker_id)
        socket = ServerSocket(server.websocket_url("/v1/client"), await server.access_token())
        try:
            await socket.connect()
        except ChannelClosed as exc:
            raise ClientError(str(exc)) from None
        channel: Channel | None = None
        try:
            if transport in ("auto", "webrtc"):
                try:
                    channel = await _open_webrtc(
                        socket, room, worker_id, webrtc_timeout, ice_servers
                    )
                except ChannelClosed as exc:
                    if transport == "webrtc":
                        raise ClientError(f"no WebRTC channel to the worker: {exc}") from None
                    log.info("WebRTC failed (%s); using the relay through the server", exc)
            if channel is None:
                channel = await ClientRelayChannel(socket, room, worker_id).open()
            session = cls(
                channel, socket, worker_id=worker_id, room=room, idle_timeout=idle_timeout
            )
            await session._hello(ticket.ticket)
        except BaseException:
            if channel is not None:
                await channel.close("session set-up failed")
            await socket.close()
            raise
        return session

    async def __aenter__(self) -> WorkerSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _hello(self, ticket: str) -> None:
        await self.channel.send(p.encode(p.Hello(ticket=ticket)))
        try:
            raw = await asyncio.wait_for(self.channel.recv(), 20)
            reply = p.decode_worker(raw)
        except TimeoutError:
            raise ClientError("worker did not answer HELLO in time") from None
        except ChannelClosed as exc:
            raise ClientError(f"worker closed the channel: {exc.reason}") from None
        except ProtocolError as exc:
            raise ClientError(f"worker sent an invalid message: {exc}") from None
        if isinstance(reply, p.Error):
            raise WorkerError(reply.code, f"worker refused the channel: {reply.message}")
        if not isinstance(reply, p.Welcome):
            raise ClientError(f"expected WELCOME from the worker, got {reply.type}")
        self.worker_name = reply.worker_name
        self.user = reply.user
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        reason = "channel closed"
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(self.channel.recv(), self.idle_timeout)
                except TimeoutError:
                    reason = f"no message from the worker for {self.idle_timeout:.0f} s; giving up"
                    return
                try:
                    message = p.decode_worker(raw)
                except ProtocolError as exc:
                    log.warning("invalid message from the worker: %s", exc)
                    continue
                self._route(message)
        except ChannelClosed as exc:
            reason = exc.reason
        finally:
            self._fail(SessionClosed(f"lost the channel to the worker: {reason}"))
            with contextlib.suppress(Exception):
                await self.channel.close(reason)

    def _route(self, message: Any) -> None:
        if isinstance(message, p.UploadAck | p.UploadDone):
            queue = self._transfers.get(message.upload_id)
            if queue is not None:
                queue.put_nowait(message)
            return
        if isinstance(message, p.DownloadChunk | p.DownloadEnd):
            queue = self._transfers.get(message.transfer_id)
            if queue is not None:
                queue.put_nowait(message)
            return
        if isinstance(message, p.DownloadBegin):
            queue = self._transfers.get(message.request_id)
            if queue is not None:
                self._transfers[message.transfer_id] = queue
                queue.put_nowait(message)
            return
        if isinstance(message, p.Error) and (
            message.transfer_id in self._transfers or message.request_id in self._transfers
        ):
            key = message.transfer_id if message.transfer_id in self._transfers else None
            queue = self._transfers[key or message.request_id or ""]
            queue.put_nowait(message)
            return
        if isinstance(
            message,
            p.JobAccepted
            | p.JobRejected
            | p.FsMountsReply
            | p.FsListReply
            | p.FsStatReply
            | p.FsFindReply,
        ):
            future = self._pending.pop(message.request_id, None)
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, p.JobProgress | p.JobComplete | p.JobFailed):
            queue = self._jobs.get(message.job_id)
            if queue is not None:
                queue.put_nowait(message)
        elif isinstance(message, p.Error) and message.request_id in self._pending:
            future = self._pending.pop(message.request_id or "")
            if not future.done():
                future.set_result(message)
        elif isinstance(message, p.JobStatusReply | p.JobListReply | p.Pong | p.Error):
            self._replies.put_nowait(message)
        # KEEPALIVE and WELCOME need nothing beyond having arrived.

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
        self._replies.put_nowait(error)

    def _check_open(self) -> None:
        if self._closed is not None:
            raise self._closed

    async def _send(self, message: p._Msg) -> None:
        self._check_open()
        try:
            await self.channel.send(p.encode(message))
        except ChannelClosed as exc:
            raise SessionClosed(f"lost the channel to the worker: {exc.reason}") from None

    async def _call(self, message: p._Msg) -> Any:
        async with self._rpc:
            await self._send(message)
            reply = await self._replies.get()
            if isinstance(reply, SessionClosed):
                self._replies.put_nowait(reply)
                raise reply
            if isinstance(reply, p.Error):
                raise WorkerError(reply.code, reply.message)
            return reply

    # -- the API ----------------------------------------------------------------------------

    async def submit(self, spec: TrainSpec | TrackSpec) -> JobHandle:
        """Send a job; returns its handle once accepted, raises JobRejectedError if not."""
        request_id = uuid.uuid4().hex[:16]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        await self._send(p.JobSubmit(request_id=request_id, spec=spec.model_dump(mode="json")))
        reply = await future
        if isinstance(reply, p.JobRejected):
            raise JobRejectedError(reply.job_id, list(reply.errors))
        if isinstance(reply, p.Error):
            raise WorkerError(reply.code, reply.message)
        return self._handle(reply.job_id)

    def _handle(self, job_id: str) -> JobHandle:
        queue = self._jobs.setdefault(job_id, asyncio.Queue())
        if self._closed is not None:
            queue.put_nowait(self._closed)
        return JobHandle(self, job_id, queue)

    async def attach(self, job_id: str, log_lines: int = 50) -> JobHandle:
        """Follow a job that is already there: its state and last log lines, then live."""
        handle = self._handle(job_id)
        await self._send(p.JobAttach(job_id=job_id, log_lines=log_lines))
        return handle

    async def status(self, job_id: str) -> p.JobSummary:
        reply: p.JobStatusReply = await self._call(p.JobStatus(job_id=job_id))
        return reply.job

    async def jobs(self, limit: int = 50) -> list[p.JobSummary]:
        """The newest ``limit`` jobs, asked for page by page (a page fits one message)."""
        found: list[p.JobSummary] = []
        offset: int | None = 0
        while offset is not None and len(found) < limit:
            want = min(200, limit - len(found))
            reply: p.JobListReply = await self._call(p.JobList(limit=want, offset=offset))
            found += reply.jobs
            if not reply.jobs or reply.next_offset is None or reply.next_offset <= offset:
                break
            offset = reply.next_offset
        return found[:limit]

    async def cancel(self, job_id: str) -> p.JobSummary:
        reply: p.JobStatusReply = await self._call(p.JobCancel(job_id=job_id))
        return reply.job

    async def stop(self, job_id: str) -> p.JobSummary:
        """Stop training after the current batch and keep the model."""
        reply: p.JobStatusReply = await self._call(p.JobStop(job_id=job_id))
        return reply.job

    async def _transfer_reply(self, queue: asyncio.Queue[Any], timeout: float = 120) -> Any:
        try:
            reply = await asyncio.wait_for(queue.get(), timeout)
        except TimeoutError:
            raise ClientError("the worker stopped answering during a file transfer") from None
        if isinstance(reply, SessionClosed):
            raise reply
        if isinstance(reply, p.Error):
            raise WorkerError(reply.code, reply.message)
        return reply

    async def upload(
        self,
        path: Path,
        *,
        unpack: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> p.UploadDone:
        """Send a local file to the worker's upload folder (``unpack``: extract a zip there)."""
        size = path.stat().st_size
        digest = await asyncio.to_thread(_sha256, path)
        upload_id = uuid.uuid4().hex[:16]
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._transfers[upload_id] = queue
        name = _plain_name(path.name)
        try:
            await self._send(
                p.UploadBegin(
                    upload_id=upload_id, name=name, size=size, sha256=digest, unpack=unpack
                )
            )
            acked = (await self._transfer_reply(queue)).received
            sent = 0
            with path.open("rb") as handle:
                while block := handle.read(p.CHUNK_BYTES):
                    while sent - acked >= p.TRANSFER_WINDOW:
                        acked = max(acked, (await self._transfer_reply(queue)).received)
                    await self._send(
                        p.UploadChunk(
                            upload_id=upload_id,
                            offset=sent,
                            data=base64.b64encode(block).decode("ascii"),
                        )
                    )
                    sent += len(block)
                    if on_progress is not None:
                        on_progress(sent, size)
            await self._send(p.UploadEnd(upload_id=upload_id))
            while True:
                reply = await self._transfer_reply(queue, timeout=600)
                if isinstance(reply, p.UploadDone):
                    return reply
        finally:
            self._transfers.pop(upload_id, None)

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
        request_id = uuid.uuid4().hex[:16]
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._transfers[request_id] = queue
        transfer_id = None
        try:
            await self._send(p.Download(request_id=request_id, path=remote))
            begin: p.DownloadBegin = await self._transfer_reply(queue)
            transfer_id = begin.transfer_id
            return await _receive_files(self, queue, begin, dest, on_progress=on_progress)
        finally:
            self._transfers.pop(request_id, None)
            if transfer_id is not None:
                self._transfers.pop(transfer_id, None)

    async def _request(self, message: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[message.request_id] = future
        await self._send(message)
        reply = await future
        if isinstance(reply, p.Error):
            raise WorkerError(reply.code, reply.message)
        return reply

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

    async def ping(self) -> None:
        await self._call(p.Ping(nonce=uuid.uuid4().hex[:8]))

    async def close(self) -> None:
        # Close the channel first: the reader then ends by itself. (Cancelling it
        # while aiortc tears the connection down can leave the teardown hanging.)
        await self.channel.close("client closed the session")
        if self._reader is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), 5)
            except (TimeoutError, asyncio.CancelledError, Exception):
                self._reader.cancel()
        await self.socket.close()


def _rid() -> str:
    return uuid.uuid4().hex[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in " ._+()-" else "_" for c in name)[:255]
    return cleaned.lstrip(" ._+()-") or "upload"


def _local_target(root: Path, relative: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts or "\\" in relative:
        raise ClientError(f"the worker sent an unsafe file name {relative!r}")
    target = root.joinpath(*parts)
    if root.resolve() not in target.resolve().parents:
        raise ClientError(f"the worker sent an unsafe file name {relative!r}")
    return target


async def _receive_files(
    session: WorkerSession,
    queue: asyncio.Queue[Any],
    begin: p.DownloadBegin,
    dest: Path,
    *,
    on_progress: Callable[[int, int], None] | None,
) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / _plain_name(begin.name)
    if final.exists():
        raise ClientError(f"{final} exists already; move it away or choose another --download")
    staging = dest / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()  # default permissions, unlike a private temp folder
    single = len(begin.files) == 1 and begin.files[0].path == begin.name
    total = sum(f.size for f in begin.files)
    try:
        targets = [_local_target(staging, f.path) for f in begin.files]
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        hashers = [hashlib.sha256() for _ in begin.files]
        written = [0] * len(begin.files)
        received = acked = 0
        while True:
            message = await session._transfer_reply(queue)
            if isinstance(message, p.DownloadEnd):
                break
            if not isinstance(message, p.DownloadChunk) or message.file_index >= len(targets):
                raise ClientError("the worker sent a chunk for no file")
            index = message.file_index
            if message.offset != written[index]:
                raise ClientError("the worker sent chunks out of order")
            data = base64.b64decode(message.data, validate=True)
            if written[index] + len(data) > begin.files[index].size:
                raise ClientError("the worker sent more bytes than it announced")
            with targets[index].open("ab") as handle:
                handle.write(data)
            hashers[index].update(data)
            written[index] += len(data)
            received += len(data)
            if on_progress is not None:
                on_progress(received, total)
            if received - acked >= p.ACK_EVERY:
                acked = received
                await session._send(p.DownloadAck(transfer_id=begin.transfer_id, received=received))
        for info, hasher, count in zip(begin.files, hashers, written, strict=True):
            if count != info.size or hasher.hexdigest() != info.sha256:
                raise ClientError(f"{info.path} arrived damaged (size or SHA-256 differs)")
        source = targets[0] if single else staging
        os.replace(source, final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class JobHandle:
    def __init__(
        self, session: WorkerSession, job_id: str, queue: asyncio.Queue[JobEvent | SessionClosed]
    ) -> None:
        self.session = session
        self.job_id = job_id
        self._queue = queue
        self.result: p.JobComplete | p.JobFailed | None = None

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
