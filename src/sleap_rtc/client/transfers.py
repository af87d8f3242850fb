"""Moving files to and from a worker over an open session: the client's disk I/O.

The window, chunk and hash rules are :mod:`sleap_rtc.protocol.transfer`'s (the
worker follows the same ones). Here: an upload streams a local file within the
window; a download lands in a hidden staging folder beside its destination and is
moved into place only once every file has its announced size and SHA-256, so a
failed download leaves nothing half-written, and no name the worker sends can
place a file outside the destination.
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
from sleap_rtc.jobs.digest import sha256_of
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.transfer import (
    Receiver,
    TransferError,
    WindowSender,
    encode_chunk,
    safe_name,
    safe_parts,
)

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
) -> p.UploadDone:
    """Send ``path`` as upload ``upload_id``; the worker's UPLOAD_DONE."""
    size = path.stat().st_size
    digest = await asyncio.to_thread(sha256_of, path)
    window = WindowSender()
    await send(
        p.UploadBegin(
            upload_id=upload_id,
            name=safe_name(path.name, "upload"),
            size=size,
            sha256=digest,
            unpack=unpack,
        )
    )

    async def acknowledged(timeout: float) -> Any:
        reply = await receive(timeout)
        if isinstance(reply, p.UploadAck):
            try:
                window.ack(reply.received)
            except TransferError as exc:
                raise _broken("upload", exc) from None
        return reply

    await acknowledged(REPLY_TIMEOUT_S)
    with path.open("rb") as handle:
        while block := handle.read(p.CHUNK_BYTES):
            while window.blocked:
                await acknowledged(REPLY_TIMEOUT_S)
            offset = window.take(len(block))
            await send(p.UploadChunk(upload_id=upload_id, offset=offset, data=encode_chunk(block)))
            if on_progress is not None:
                on_progress(window.sent, size)
    await send(p.UploadEnd(upload_id=upload_id))
    while True:
        reply = await acknowledged(FINISH_TIMEOUT_S)
        if isinstance(reply, p.UploadDone):
            return reply


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


async def receive_files(
    begin: p.DownloadBegin,
    dest: Path,
    *,
    send: Send,
    receive: Receive,
    on_progress: Progress | None = None,
) -> Path:
    """Receive the download ``begin`` announced into ``dest``; returns the local path."""
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / safe_name(begin.name, "download")
    if final.exists():
        raise ClientError(f"{final} exists already; move it away or choose another --download")
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
        while True:
            message = await receive(REPLY_TIMEOUT_S)
            if isinstance(message, p.DownloadEnd):
                break
            if not isinstance(message, p.DownloadChunk):
                raise ClientError(f"the worker sent {message.type} during a download")
            try:
                data, ack = receiver.take(message.file_index, message.offset, message.data)
            except TransferError as exc:
                raise _broken("download", exc) from None
            with targets[message.file_index].open("ab") as handle:
                handle.write(data)
            if on_progress is not None:
                on_progress(receiver.received, receiver.total)
            if ack is not None:
                await send(p.DownloadAck(transfer_id=begin.transfer_id, received=ack))
        try:
            receiver.check()
        except TransferError as exc:
            raise ClientError(f"the download arrived damaged: {exc.message}") from None
        os.replace(targets[0] if single else staging, final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
