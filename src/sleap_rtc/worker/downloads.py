"""Downloads: files out of the worker's mounts to a peer, over its lane or within a window.

What is sent was listed first (:mod:`.listing`: inside the mounts, links checked,
each file the one that was hashed). Bytes go over the channel's direct lane when
its client opened one, else as chunks within the window; acknowledgements can't
claim more than was sent, a resume restarts from the offset the client holds, and
a channel holds a few downloads at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

from sleap_rtc.jobs.mounts import Mounts
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.transfer import (
    TransferError,
    WindowSender,
    encode_chunk,
    pieces,
    position,
)
from sleap_rtc.transport.base import ChannelClosed
from sleap_rtc.transport.lane import Lane, LaneClosed
from sleap_rtc.worker.fsafe import clip
from sleap_rtc.worker.listing import (
    ListedFile,
    download_name,
    hash_listed,
    list_download,
    open_listed,
    read_exactly,
)
from sleap_rtc.worker.transfers import MAX_DOWNLOADS, READ_BYTES

log = logging.getLogger("sleap_rtc.worker")


Send = Callable[[p._Msg], Awaitable[None]]
#: How long a download whose lane dropped waits for the client to say where to go on.
RESUME_TIMEOUT_S = 120.0


class _Restart(Exception):
    """The client asked to go on from another offset (or another path)."""


class _Download:
    def __init__(self, transfer_id: str, request_id: str) -> None:
        self.id = transfer_id
        self.request_id = request_id
        #: The window: bytes counted before each send, so an ack can't outrun them.
        self.window = WindowSender()
        self.more = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        #: Set when the peer broke the protocol; the sender stops and reports it.
        self.error: TransferError | None = None
        #: Set when the channel goes away; work in threads stops at the next block.
        self.stopped = False
        #: TRANSFER_RESUME requests: where (and how) to send from next.
        self.resumes: asyncio.Queue[p.TransferResume] = asyncio.Queue(maxsize=4)
        #: Where the current pass started: acknowledgements below it are stale.
        self.floor = 0
        #: Set by the client's first acknowledgement: it is ready for lane frames.
        self.ready = asyncio.Event()
        #: Bytes in all files; over the lane, the client acknowledges this much at the end.
        self.total = 0
        #: True while bytes go over the lane (acks are then "ready" or "all of it").
        self.on_lane = False
        #: Over the lane: the client said it holds every byte (frames in flight when a
        #: lane drops are lost, so the download stays open until then).
        self.confirmed = False


class Downloads:
    """The downloads of one channel: at most ``max_active`` at once, each windowed.

    The sender keeps at most :data:`~sleap_rtc.protocol.jobs.TRANSFER_WINDOW`
    bytes unacknowledged. An acknowledgement claiming more than was sent, or less
    than an earlier one, is a protocol error: the download ends with ERROR
    ``INVALID_ACK`` (the window is never widened by it). Every failure ends the
    download with an ERROR naming its request and transfer; none ends the channel.
    """

    def __init__(
        self,
        mounts: Mounts,
        send: Send,
        *,
        lane: Callable[[], Lane | None] = lambda: None,
        max_active: int = MAX_DOWNLOADS,
        ack_timeout_s: float = 120.0,
        resume_timeout_s: float = RESUME_TIMEOUT_S,
    ) -> None:
        self.mounts = mounts
        self.send = send
        #: The channel's direct lane, when its client opened one: bytes go there.
        self.lane = lane
        self.max_active = max_active
        self.ack_timeout_s = ack_timeout_s
        self.resume_timeout_s = resume_timeout_s
        self._active: dict[str, _Download] = {}

    def __len__(self) -> int:
        return len(self._active)

    async def start(self, message: p.Download) -> None:
        """Start sending what ``message`` asks for, or refuse with ``TOO_MANY``."""
        if len(self._active) >= self.max_active:
            await self.send(
                p.Error(
                    code="TOO_MANY",
                    message=f"at most {self.max_active} downloads at once on one channel; "
                    "wait for one to finish",
                    request_id=message.request_id,
                )
            )
            return
        download = _Download(secrets.token_hex(8), message.request_id)
        self._active[download.id] = download
        download.task = asyncio.create_task(self._run(message, download))

    def ack(self, message: p.DownloadAck) -> None:
        """Take the peer's count of bytes received (a late ack for a finished one is ignored)."""
        download = self._active.get(message.transfer_id)
        if download is None or message.received < download.floor:
            return  # a late ack for a finished download, or from before a resume
        download.ready.set()
        try:
            if download.on_lane:
                if message.received == download.total:
                    download.confirmed = True
                elif message.received != 0:
                    raise TransferError(
                        "INVALID_ACK",
                        f"over the lane a download is acknowledged at 0 or at its "
                        f"{download.total} bytes, not at {message.received}",
                    )
            else:
                download.window.ack(message.received)
        except TransferError as exc:
            download.error = exc
        download.more.set()

    def resume(self, message: p.TransferResume) -> bool:
        """Go on from where the client says (False: no such download on this channel)."""
        download = self._active.get(message.transfer_id)
        if download is None:
            return False
        with contextlib.suppress(asyncio.QueueFull):
            download.resumes.put_nowait(message)
        download.more.set()
        download.ready.set()
        return True

    async def close(self) -> None:
        """Stop every download (the channel is going away)."""
        for download in self._active.values():
            download.stopped = True
        tasks = [d.task for d in self._active.values() if d.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._active.clear()

    async def _run(self, message: p.Download, download: _Download) -> None:
        try:
            real, files, folder = await asyncio.to_thread(list_download, self.mounts, message.path)
            digests = await asyncio.to_thread(
                lambda: [hash_listed(f, lambda: download.stopped) for f in files]
            )
            begin = p.DownloadBegin(
                request_id=message.request_id,
                transfer_id=download.id,
                name=download_name(real),
                folder=folder,
                files=[
                    p.RemoteFile(path=f.name, size=f.size, sha256=digest)
                    for f, digest in zip(files, digests, strict=True)
                ],
            )
            if not p.fits(begin):
                raise TransferError(
                    "TOO_MANY",
                    f"{clip(message.path)} holds {len(files)} files, more than one download "
                    "can announce; download its subfolders one by one",
                )
            download.total = sum(f.size for f in files)
            await self.send(begin)
            await self._send_all(download, files)
            await self.send(p.DownloadEnd(transfer_id=download.id))
        except TransferError as exc:
            await self._fail(download, exc.code, exc.message)
        except TimeoutError:
            await self._fail(download, "TIMEOUT", "the client stopped acknowledging the download")
        except ChannelClosed as exc:
            log.info("download %s ended: %s", download.id, exc)
        except Exception:
            log.exception("download %s failed", download.id)
            await self._fail(download, "INTERNAL", "the worker failed to send the download")
        finally:
            self._active.pop(download.id, None)

    async def _send_all(self, download: _Download, files: list[ListedFile]) -> None:
        """Every byte, over the lane if there is one, else as chunks within the window.

        When the lane drops, the client says where to go on (TRANSFER_RESUME: an
        offset, and the lane again or this channel); a resume that arrives while
        sending restarts from its offset.
        """
        offset, lane = 0, self.lane()
        if lane is not None:
            # Frames could outrun DOWNLOAD_BEGIN: wait until the client can place them.
            try:
                await asyncio.wait_for(download.ready.wait(), self.ack_timeout_s)
            except TimeoutError:
                raise TransferError(
                    "TIMEOUT", "the client never said it was ready for the download"
                ) from None
        while True:
            try:
                download.on_lane = lane is not None
                if lane is not None:
                    await self._send_frames(download, files, offset, lane)
                    await self._await_confirmed(download)
                else:
                    await self._send_chunks(download, files, offset)
                return
            except (LaneClosed, _Restart):
                pass
            try:
                resume = await asyncio.wait_for(download.resumes.get(), self.resume_timeout_s)
            except TimeoutError:
                raise TransferError(
                    "TIMEOUT", "the download's lane dropped and the client did not resume it"
                ) from None
            offset = resume.offset
            lane = self.lane() if resume.lane else None
            if resume.lane and lane is None:
                raise TransferError("UNAVAILABLE", "no lane is open on this channel to resume on")

    async def _blocks(
        self, download: _Download, files: list[ListedFile], offset: int
    ) -> AsyncIterator[tuple[int, int, bytes]]:
        """``(file index, offset in it, block)`` from ``offset`` of all files on."""
        index, inner = position([f.size for f in files], offset)
        for at in range(index, len(files)):
            file = files[at]
            fd = await asyncio.to_thread(open_listed, file)
            try:
                if inner:
                    os.lseek(fd, inner, os.SEEK_SET)
                while inner < file.size:
                    if not download.resumes.empty():
                        raise _Restart
                    block = await asyncio.to_thread(
                        read_exactly, fd, min(READ_BYTES, file.size - inner), file
                    )
                    yield at, inner, block
                    inner += len(block)
            finally:
                os.close(fd)
            inner = 0

    async def _send_frames(
        self, download: _Download, files: list[ListedFile], offset: int, lane: Lane
    ) -> None:
        async for _index, _inner, block in self._blocks(download, files, offset):
            await lane.send(download.id, offset, block)
            offset += len(block)

    async def _await_confirmed(self, download: _Download) -> None:
        """Wait until the client holds every byte, or asks to go on from where it is."""
        while not download.confirmed:
            if download.error is not None:
                raise download.error
            if not download.resumes.empty():
                raise _Restart
            download.more.clear()
            await asyncio.wait_for(download.more.wait(), self.ack_timeout_s)

    async def _send_chunks(self, download: _Download, files: list[ListedFile], offset: int) -> None:
        # Acknowledgements count from where this pass starts.
        download.window = WindowSender()
        download.window.sent = download.window.acked = download.floor = offset
        async for index, inner, block in self._blocks(download, files, offset):
            for piece in pieces(block):
                while download.error is None and download.window.blocked:
                    download.more.clear()
                    await asyncio.wait_for(download.more.wait(), self.ack_timeout_s)
                    if not download.resumes.empty():
                        raise _Restart
                if download.error is not None:
                    raise download.error
                download.window.take(len(piece))
                await self.send(
                    p.DownloadChunk(
                        transfer_id=download.id,
                        file_index=index,
                        offset=inner,
                        data=encode_chunk(piece),
                    )
                )
                inner += len(piece)

    async def _fail(self, download: _Download, code: str, message: str) -> None:
        with contextlib.suppress(ChannelClosed):
            await self.send(
                p.Error(
                    code=code,
                    message=clip(message, 4000),
                    request_id=download.request_id,
                    transfer_id=download.id,
                )
            )
