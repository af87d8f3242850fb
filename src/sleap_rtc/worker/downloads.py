"""Downloads: files out of the worker's mounts to a peer, with a bounded window.

A download sends only files it listed, each opened beneath its mount root
without following links (:mod:`sleap_rtc.worker.fsafe`) and checked to be the
same file (device and inode) that was listed and hashed. Acknowledgements can't
claim more than was sent, and a channel holds a few downloads at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from sleap_rtc.jobs.digest import sha256_of_blocks
from sleap_rtc.jobs.mounts import Mounts
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.names import name_char_ok
from sleap_rtc.protocol.transfer import (
    TransferError,
    WindowSender,
    encode_chunk,
    pieces,
    position,
    safe_name,
)
from sleap_rtc.transport.base import ChannelClosed
from sleap_rtc.transport.lane import Lane, LaneClosed
from sleap_rtc.worker import fsafe
from sleap_rtc.worker.fsafe import clip, clip_problem, echo
from sleap_rtc.worker.transfers import MAX_DOWNLOADS, MAX_FILES, MAX_SCANNED, READ_BYTES

log = logging.getLogger("sleap_rtc.worker")


# -- downloads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedFile:
    """One file of a download, as it was when listed.

    ``where`` is the file itself (a link's target, for a link to a file elsewhere
    in the mounts), beneath its mount root; ``name`` is its path in the download;
    ``dev``/``ino`` identify it, so what is sent later is the file that was listed.
    """

    where: fsafe.Located
    name: str
    size: int
    dev: int
    ino: int


def _listed(where: fsafe.Located, name: str, info: os.stat_result) -> ListedFile:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise TransferError(
            "INVALID_NAME", f"{echo(name)} is not a UTF-8 name; rename it to download it"
        ) from None
    if len(name) > 4096:
        raise TransferError("INVALID_NAME", f"{echo(name)} is a path over 4096 characters")
    if not all(name_char_ok(c) for c in name if c != "/"):
        raise TransferError(
            "INVALID_NAME",
            f"{echo(name)} holds a control or format character; rename it to download it",
        )
    return ListedFile(where, name, info.st_size, info.st_dev, info.st_ino)


class Listing(NamedTuple):
    """What a download sends: the real path asked for, its files, and whether it is a
    folder (its files named relative to it) or one file."""

    real: Path
    files: list[ListedFile]
    folder: bool


def list_download(mounts: Mounts, raw: str) -> Listing:
    """The real path asked for and its files, all inside the mounts.

    A folder is walked through descriptors opened beneath its mount root. Inside
    it, a link to a file elsewhere in the mounts is sent as that file (as the
    worker always did); a link leading outside, a link to a folder, a broken or
    looping link and anything not a regular file are left out. A folder swapped
    for a link while it is walked is left out too, never entered.
    """

    def attempt() -> Listing:
        real, problem = mounts.resolve("path", raw)
        if problem is not None or real is None:
            assert problem is not None
            raise TransferError(str(problem.code), clip_problem(problem.message, raw))
        where = fsafe.locate(mounts, real)
        assert where is not None  # resolve() checked it is inside a mount
        with fsafe.root_fd(where.mount) as root:
            info = fsafe.lstat_beneath(root, where.rel)
            if stat.S_ISREG(info.st_mode):
                return Listing(real, [_listed(where, real.name, info)], folder=False)
            if not stat.S_ISDIR(info.st_mode):
                raise TransferError("PATH_NOT_FOUND", f"Path not found: {clip(raw)}")
            return Listing(real, _walk(mounts, where, root, raw), folder=True)

    try:
        return fsafe.retry_on_link(attempt)
    except (FileNotFoundError, NotADirectoryError):
        raise TransferError("PATH_NOT_FOUND", f"Path not found: {clip(raw)}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TransferError(
                "INVALID_PATH", f"{clip(raw)} leads through a link that loops or keeps changing"
            ) from None
        raise TransferError(
            "NOT_READABLE", f"The worker can't read {clip(raw)}: {exc.strerror}"
        ) from None


def _walk(mounts: Mounts, top: fsafe.Located, root: int, raw: str) -> list[ListedFile]:
    """Every file under ``top`` (files of a folder by name, then its folders by name)."""
    files: list[ListedFile] = []
    scanned = 0
    stack: list[tuple[str, str]] = [(top.rel, "")]
    while stack:
        rel, prefix = stack.pop()
        try:
            fd = fsafe.open_beneath(root, rel, fsafe.DIR_FLAGS)
        except OSError as exc:
            if not prefix:
                raise  # the folder asked for changed since it was checked: resolve again
            if exc.errno not in (errno.ELOOP, errno.ENOENT, errno.ENOTDIR):
                raise TransferError(
                    "NOT_READABLE", f"The worker can't read {echo(prefix or raw)}: {exc.strerror}"
                ) from None
            continue  # it became a link or went away since its folder was read
        try:
            names: list[str] = []
            with os.scandir(fd) as scan:
                for item in scan:
                    scanned += 1
                    if scanned > MAX_SCANNED:
                        raise TransferError(
                            "TOO_MANY", f"{clip(raw)} holds over {MAX_SCANNED:,} entries"
                        )
                    names.append(item.name)
            folder = top.mount.path / rel if rel else top.mount.path
            subfolders: list[tuple[str, str]] = []
            for name in sorted(names):
                child = f"{prefix}/{name}" if prefix else name
                try:
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    subfolders.append((f"{rel}/{name}" if rel else name, child))
                    continue
                if stat.S_ISLNK(info.st_mode):
                    # Followed only to a file inside the mounts, by resolving it.
                    found = fsafe.stat_inside(mounts, folder / name)
                    if found is None or not stat.S_ISREG(found[1].st_mode):
                        continue
                    files.append(_listed(found[0], child, found[1]))
                elif stat.S_ISREG(info.st_mode):
                    child_rel = f"{rel}/{name}" if rel else name
                    where = fsafe.Located(top.mount, folder / name, child_rel)
                    files.append(_listed(where, child, info))
                else:
                    continue
                if len(files) > MAX_FILES:
                    raise TransferError("TOO_MANY", f"{clip(raw)} holds over {MAX_FILES} files")
            stack.extend(reversed(subfolders))
        except OSError as exc:
            raise TransferError(
                "NOT_READABLE", f"The worker can't read {echo(prefix or raw)}: {exc.strerror}"
            ) from None
        finally:
            os.close(fd)
    return files


def open_listed(file: ListedFile) -> int:
    """A read descriptor of a listed file, opened beneath its mount root without links.

    TransferError ``CHANGED`` when that is no longer the file that was listed
    (replaced, moved, turned into a link).
    """
    try:
        fd = fsafe.open_file_inside(file.where)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOENT, errno.ENOTDIR, errno.EINVAL, errno.EXDEV):
            raise _changed(file) from None
        raise TransferError(
            "NOT_READABLE", f"The worker can't read {echo(file.name)}: {exc.strerror}"
        ) from None
    info = os.fstat(fd)
    if (info.st_dev, info.st_ino) != (file.dev, file.ino) or info.st_size < file.size:
        os.close(fd)
        raise _changed(file)
    return fd


def _changed(file: ListedFile) -> TransferError:
    return TransferError(
        "CHANGED", f"{echo(file.name)} changed while it was being downloaded; try again"
    )


def read_exactly(fd: int, size: int, file: ListedFile) -> bytes:
    """``size`` bytes from ``fd`` (fewer means the file shrank: ``CHANGED``)."""
    parts: list[bytes] = []
    left = size
    while left:
        try:
            block = os.read(fd, left)
        except OSError as exc:
            raise TransferError(
                "NOT_READABLE", f"The worker can't read {echo(file.name)}: {exc.strerror}"
            ) from None
        if not block:
            raise _changed(file)
        parts.append(block)
        left -= len(block)
    return b"".join(parts)


def hash_listed(file: ListedFile, stop: Callable[[], bool] = lambda: False) -> str:
    """SHA-256 of the listed file's first ``size`` bytes, read through its descriptor.

    ``stop`` is asked between blocks (a thread can't be cancelled; a download whose
    channel went away stops reading instead of hashing on for minutes).
    """
    fd = open_listed(file)

    def blocks() -> Iterator[bytes]:
        left = file.size
        while left:
            if stop():
                raise TransferError("CANCELLED", "the download was stopped")
            block = read_exactly(fd, min(READ_BYTES, left), file)
            yield block
            left -= len(block)

    try:
        return sha256_of_blocks(blocks())
    finally:
        os.close(fd)


def download_name(real: Path) -> str:
    """The name a download is announced under: its own name, made plain if it must be."""
    return safe_name(real.name, "download")


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
                if lane is not None:
                    await self._send_frames(download, files, offset, lane)
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
