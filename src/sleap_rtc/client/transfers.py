"""Moving files to and from a worker over an open session: the client's disk I/O.

The window, chunk, frame and hash rules are :mod:`sleap_rtc.protocol.transfer`'s
(the worker follows the same ones). Bytes take the session's direct lane when it
has one (:mod:`sleap_rtc.client.lanes`: binary frames beside the channel), else go
over the channel as chunks within the window. A lane that drops mid-way is
reopened, or the transfer goes on over the channel, from the byte count the
receiver holds: nothing is sent twice, and every byte still goes through the hash.

An upload streams a local file; a download lands in a hidden staging folder beside
its destination and is moved into place only once every file has its announced
size and SHA-256, so a failed download leaves nothing half-written, and no name
the worker sends can place a file outside the destination.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sleap_rtc.client.errors import ClientError
from sleap_rtc.client.lanes import ClientLanes, LaneLost, LaneProgress
from sleap_rtc.jobs.digest import sha256_of
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.transfer import (
    FRAME_BYTES,
    Receiver,
    TransferError,
    WindowSender,
    encode_chunk,
    safe_name,
    safe_parts,
)
from sleap_rtc.transport.lane import Lane, LaneClosed

#: Sends one transfer message on the session.
Send = Callable[[Any], Awaitable[None]]
#: The next message of this transfer (WorkerError for an ERROR), within ``timeout`` seconds.
Receive = Callable[[float], Awaitable[Any]]
Progress = Callable[[int, int], None]
#: Longest wait for the worker's next transfer message (the final one may take longer:
#: the worker checks and unpacks what it received).
REPLY_TIMEOUT_S = 120.0
FINISH_TIMEOUT_S = 600.0


def _broken(what: str, exc: TransferError) -> ClientError:
    return ClientError(f"the worker broke the {what}: {exc.message}")


async def upload_file(
    path: Path,
    upload_id: str,
    *,
    unpack: bool,
    send: Send,
    receive: Receive,
    on_progress: Progress | None = None,
    lanes: ClientLanes | None = None,
    queue: asyncio.Queue[Any] | None = None,
    dest: str | None = None,
) -> p.UploadDone:
    """Send ``path`` as upload ``upload_id``; the worker's UPLOAD_DONE.

    ``lanes`` and ``queue`` (this upload's messages) let it go over a lane; ``dest``
    puts it into that folder of a writable mount instead of the upload folder.
    """
    size = path.stat().st_size
    digest = await asyncio.to_thread(sha256_of, path)
    await send(
        p.UploadBegin(
            upload_id=upload_id,
            name=safe_name(path.name, "upload"),
            size=size,
            sha256=digest,
            unpack=unpack,
            dest=dest,
        )
    )
    first = await receive(REPLY_TIMEOUT_S)
    if not isinstance(first, p.UploadAck):
        raise ClientError(f"the worker sent {first.type} instead of acknowledging the upload")
    try:
        WindowSender().ack(first.received)  # nothing was sent yet: only 0 is true
    except TransferError as exc:
        raise _broken("upload", exc) from None
    sink = _Notices(queue) if queue is not None else None
    lane = await lanes.get() if lanes is not None and sink is not None and size else None
    if lanes is not None and sink is not None:
        lanes.attach(upload_id, sink)
    offset = 0
    try:
        with path.open("rb") as handle:
            while True:
                try:
                    if lane is not None:
                        await _frames_up(handle, upload_id, offset, size, lane, on_progress)
                        await _fully_acked(receive, size, lane)
                    else:
                        await _chunks_up(
                            handle, upload_id, offset, size, send, receive, on_progress
                        )
                    break
                except (LaneClosed, _Dropped):
                    assert lanes is not None
                    lane = await lanes.reopen()
                    await send(p.TransferResume(transfer_id=upload_id, lane=lane is not None))
                    offset = await _acked_count(receive, size)
    finally:
        if lanes is not None:
            lanes.detach(upload_id)
    await send(p.UploadEnd(upload_id=upload_id))
    while True:
        reply = await receive(FINISH_TIMEOUT_S)
        if isinstance(reply, p.UploadDone):
            return reply


class _Dropped(Exception):
    """The lane a transfer was using went away."""


class _Notices:
    """A transfer's news from the lane reader: into its message queue."""

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self.queue = queue

    def frame(self, offset: int, data: bytes) -> None:
        pass  # the worker sends no frames for an upload

    def notify(self, event: object) -> None:
        self.queue.put_nowait(event)


async def _frames_up(
    handle: Any, upload_id: str, offset: int, size: int, lane: Lane, on_progress: Progress | None
) -> None:
    handle.seek(offset)
    while offset < size:
        block = await asyncio.to_thread(handle.read, FRAME_BYTES)
        if not block:
            raise ClientError(f"{handle.name} shrank while it was being uploaded")
        await lane.send(upload_id, offset, block)
        offset += len(block)
        if on_progress is not None:
            on_progress(offset, size)


async def _fully_acked(receive: Receive, size: int, lane: Lane) -> None:
    """Wait for the worker to say it holds every byte (or for this lane to drop)."""
    while True:
        reply = await receive(FINISH_TIMEOUT_S)
        if isinstance(reply, LaneLost) and reply.lane is lane:
            raise _Dropped
        if isinstance(reply, p.UploadAck) and reply.received == size:
            return


async def _acked_count(receive: Receive, size: int) -> int:
    """The worker's count of bytes it holds, answering TRANSFER_RESUME."""
    while True:
        reply = await receive(REPLY_TIMEOUT_S)
        if isinstance(reply, p.UploadAck):
            if reply.received > size:
                raise ClientError("the worker claims more of the upload than was sent")
            return reply.received


async def _chunks_up(
    handle: Any,
    upload_id: str,
    offset: int,
    size: int,
    send: Send,
    receive: Receive,
    on_progress: Progress | None,
) -> None:
    window = WindowSender()
    window.sent = window.acked = offset
    handle.seek(offset)

    async def acknowledged() -> None:
        reply = await receive(REPLY_TIMEOUT_S)
        if isinstance(reply, p.UploadAck) and reply.received >= offset:
            try:
                window.ack(reply.received)
            except TransferError as exc:
                raise _broken("upload", exc) from None

    while block := handle.read(p.CHUNK_BYTES):
        while window.blocked:
            await acknowledged()
        at = window.take(len(block))
        await send(p.UploadChunk(upload_id=upload_id, offset=at, data=encode_chunk(block)))
        if on_progress is not None:
            on_progress(window.sent, size)


def local_target(root: Path, relative: str) -> Path:
    """Where a file the worker names ``relative`` lands under ``root``; never outside it."""
    try:
        parts = safe_parts(relative)
    except TransferError:
        raise ClientError(f"the worker sent an unsafe file name {relative!r}") from None
    target = root.joinpath(*parts)
    if root.resolve() not in target.resolve().parents:
        raise ClientError(f"the worker sent an unsafe file name {relative!r}")
    return target


class _Landing:
    """Where a download's lane frames go: checked, written, and announced to its queue."""

    def __init__(self, receiver: Receiver, targets: list[Path], queue: asyncio.Queue[Any]) -> None:
        self.receiver = receiver
        self.targets = targets
        self.queue = queue
        self.error: ClientError | None = None

    def frame(self, offset: int, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            for index, piece in self.receiver.take_at(offset, data):
                with self.targets[index].open("ab") as handle:
                    handle.write(piece)
        except TransferError as exc:
            self.error = _broken("download", exc)
        except OSError as exc:
            self.error = ClientError(f"can't write the download: {exc.strerror}")
        self.queue.put_nowait(LaneProgress())

    def notify(self, event: object) -> None:
        self.queue.put_nowait(event)


async def receive_files(
    begin: p.DownloadBegin,
    dest: Path,
    *,
    send: Send,
    receive: Receive,
    on_progress: Progress | None = None,
    lanes: ClientLanes | None = None,
    queue: asyncio.Queue[Any] | None = None,
    lane: Lane | None = None,
) -> Path:
    """Receive the download ``begin`` announced into ``dest``; returns the local path.

    ``lane``: the session's direct lane when the download was asked for, so the
    worker sends its frames there; they reach this download through ``lanes``, with
    its ``queue`` of messages. Frames start once this side says it is ready for them.
    """
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / safe_name(begin.name, "download")
    if final.exists():
        raise ClientError(f"{final} exists already; move it away or download into another folder")
    staging = dest / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()  # default permissions, unlike a private temp folder
    single = not begin.folder
    if single and len(begin.files) != 1:
        raise ClientError(f"the worker announced one file but listed {len(begin.files)}")
    receiver = Receiver([(f.size, f.sha256) for f in begin.files])
    try:
        targets = [local_target(staging, f.path) for f in begin.files]
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        landing = _Landing(receiver, targets, queue) if queue is not None else None
        if lanes is not None and landing is not None and lane is not None:
            lanes.attach(begin.transfer_id, landing)
            if lane.closed:
                landing.notify(LaneLost(lane, "lane closed"))  # before this download heard
            # Ready: a worker sending over the lane waits for this.
            await send(p.DownloadAck(transfer_id=begin.transfer_id, received=0))
        ended = False
        # Over the lane the last acknowledgement says "all of it" (an empty download: the
        # ready one already did).
        confirmed = receiver.complete
        while not (ended and receiver.complete):
            message = await receive(REPLY_TIMEOUT_S)
            if isinstance(message, p.DownloadEnd):
                ended = True
                if not receiver.complete and lane is None:
                    break  # sent over the channel and short: check() says so
            elif isinstance(message, LaneProgress):
                if landing is not None and landing.error is not None:
                    raise landing.error
                if lane is not None and receiver.complete and not confirmed:
                    # The worker keeps the download open until it hears this.
                    confirmed = True
                    await send(
                        p.DownloadAck(transfer_id=begin.transfer_id, received=receiver.total)
                    )
            elif isinstance(message, LaneLost):
                if message.lane is not lane or receiver.complete:
                    continue
                assert lanes is not None
                lane = await lanes.reopen()
                await send(
                    p.TransferResume(
                        transfer_id=begin.transfer_id,
                        offset=receiver.received,
                        lane=lane is not None,
                    )
                )
                continue
            elif isinstance(message, p.DownloadChunk):
                try:
                    data, ack = receiver.take(message.file_index, message.offset, message.data)
                except TransferError as exc:
                    raise _broken("download", exc) from None
                with targets[message.file_index].open("ab") as handle:
                    handle.write(data)
                if ack is not None:
                    await send(p.DownloadAck(transfer_id=begin.transfer_id, received=ack))
            else:
                raise ClientError(f"the worker sent {message.type} during a download")
            if on_progress is not None:
                on_progress(receiver.received, receiver.total)
        try:
            receiver.check()
        except TransferError as exc:
            raise ClientError(f"the download arrived damaged: {exc.message}") from None
        os.replace(targets[0] if single else staging, final)
        return final
    finally:
        if lanes is not None:
            lanes.detach(begin.transfer_id)
        shutil.rmtree(staging, ignore_errors=True)
