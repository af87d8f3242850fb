"""What a download sends: the files under a path in the mounts, as they were when listed.

A download sends only files it listed, each opened beneath its mount root without
following links (:mod:`sleap_rtc.worker.fsafe`) and checked to be the same file
(device and inode) that was listed and hashed. The sending is :mod:`.downloads`'.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from sleap_rtc.jobs.digest import sha256_of_blocks
from sleap_rtc.jobs.mounts import Mounts
from sleap_rtc.protocol.names import name_char_ok
from sleap_rtc.protocol.transfer import TransferError, safe_name
from sleap_rtc.worker import fsafe
from sleap_rtc.worker.fsafe import clip, clip_problem, echo
from sleap_rtc.worker.transfers import MAX_FILES, MAX_SCANNED, READ_BYTES


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
        # A path may start with a mount's label (``data/models``), as in FS_LIST.
        real, problem = mounts.resolve("path", mounts.by_label(raw) or raw)
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
