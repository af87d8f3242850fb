"""Unpacking an uploaded zip inside its own folder, and nowhere else.

Every entry is checked before anything is written: no absolute paths, ``..``,
links, duplicate, ``.`` or over-long names, no encrypted or unsupported entries,
bounded size and file count. Files are created through folder descriptors; a
failure (a bad CRC found while writing, too many bytes) removes what was written.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sleap_rtc.protocol.transfer import TransferError
from sleap_rtc.worker.fsafe import clip, echo
from sleap_rtc.worker.transfers import (
    DIR_FLAGS,
    MAX_FILES,
    MAX_ZIP_NAME,
    MAX_ZIP_PATH,
    NEW_FILE,
    NOFOLLOW,
    ZIP_METHODS,
)

# -- zips -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ZipPlan:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]
    is_dir: bool


def _plan(entries: list[zipfile.ZipInfo], max_bytes: int) -> list[_ZipPlan]:
    """Check every entry before anything is written; the plan of what to write."""
    if len(entries) > MAX_FILES:
        raise TransferError("INVALID_ZIP", f"zip holds over {MAX_FILES} entries")
    plans: list[_ZipPlan] = []
    files: set[tuple[str, ...]] = set()
    folders: set[tuple[str, ...]] = set()
    declared = 0
    for info in entries:
        raw = info.filename
        shown = echo(raw)
        name = raw.replace("\\", "/")
        parts = tuple(part for part in name.split("/") if part not in ("", "."))
        if name.startswith("/") or PurePosixPath(name).is_absolute() or ".." in parts or ":" in raw:
            raise TransferError("INVALID_ZIP", f"zip entry {shown} escapes its folder")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise TransferError("INVALID_ZIP", f"zip entry {shown} is a link")
        if (
            any(len(part.encode("utf-8")) > MAX_ZIP_NAME for part in parts)
            or len(name.encode("utf-8")) > MAX_ZIP_PATH
        ):
            raise TransferError(
                "INVALID_ZIP",
                f"zip entry {shown} has a name over {MAX_ZIP_NAME} bytes "
                f"(or a path over {MAX_ZIP_PATH})",
            )
        is_dir = info.is_dir()
        if not parts:
            if is_dir:
                continue  # "./": the folder itself
            raise TransferError("INVALID_ZIP", f"zip entry {shown} names no file")
        if not is_dir:
            if info.flag_bits & 0x1:
                raise TransferError("INVALID_ZIP", f"zip entry {shown} is encrypted")
            if info.compress_type not in ZIP_METHODS:
                raise TransferError(
                    "INVALID_ZIP",
                    f"zip entry {shown} uses compression method {info.compress_type}, "
                    "which this worker can't unpack (use deflate)",
                )
            if parts in files:
                raise TransferError("INVALID_ZIP", f"zip entry {shown} appears twice")
            files.add(parts)
            declared += info.file_size
        folders.update(parts[:i] for i in range(1, len(parts) + (1 if is_dir else 0)))
        plans.append(_ZipPlan(info, parts, is_dir))
    clash = files & folders
    if clash:
        raise TransferError(
            "INVALID_ZIP", f"zip entry {echo('/'.join(min(clash)))} is both a file and a folder"
        )
    if declared > max_bytes:
        raise TransferError("INVALID_ZIP", f"zip unpacks to over {max_bytes:,} bytes")
    return plans


def _folder_fd(target_fd: int, parts: tuple[str, ...]) -> int:
    """A descriptor of the folder ``parts`` inside ``target_fd``, made as needed, no links."""
    fd = os.dup(target_fd)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, dir_fd=fd)
            nxt = os.open(part, DIR_FLAGS | NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def safe_extract(
    archive: Path | BinaryIO, target: Path, max_bytes: int, *, dir_fd: int | None = None
) -> list[Path]:
    """Extract a zip inside ``target`` only; returns the files written.

    ``target`` must not exist; with ``dir_fd`` it is made as ``target.name``
    inside that folder. Every entry is checked before anything is written
    (names, duplicates, links, compression, declared size), files are created
    through folder descriptors with ``O_EXCL | O_NOFOLLOW``, and the bytes
    actually unpacked are counted. On any failure ``target`` is removed whole and
    a :class:`TransferError` names the entry.
    """
    label = archive.name if isinstance(archive, Path) else target.name
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        raise TransferError("INVALID_ZIP", f"{clip(label)} is not a zip file") from None
    with zf:
        plans = _plan(zf.infolist(), max_bytes)
        try:
            if dir_fd is None:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.mkdir(target)
                target_fd = os.open(target, DIR_FLAGS | NOFOLLOW)
            else:
                os.mkdir(target.name, dir_fd=dir_fd)
                target_fd = os.open(target.name, DIR_FLAGS | NOFOLLOW, dir_fd=dir_fd)
        except OSError as exc:
            raise TransferError(
                "UNPACK_FAILED", f"the worker can't make {target.name}: {exc.strerror}"
            ) from None
        try:
            return _extract(zf, plans, target, target_fd, max_bytes)
        except BaseException:
            with contextlib.suppress(OSError):
                if dir_fd is None:
                    shutil.rmtree(target)
                else:
                    shutil.rmtree(target.name, dir_fd=dir_fd)
            raise
        finally:
            os.close(target_fd)


def _extract(
    zf: zipfile.ZipFile, plans: list[_ZipPlan], target: Path, target_fd: int, max_bytes: int
) -> list[Path]:
    written: list[Path] = []
    total = 0
    for plan in plans:
        shown = echo(plan.info.filename)
        try:
            if plan.is_dir:
                os.close(_folder_fd(target_fd, plan.parts))
                continue
            parent = _folder_fd(target_fd, plan.parts[:-1])
            try:
                out = os.open(plan.parts[-1], NEW_FILE, 0o666, dir_fd=parent)
            finally:
                os.close(parent)
            with os.fdopen(out, "wb") as sink, zf.open(plan.info) as source:
                for block in iter(lambda: source.read(1 << 20), b""):
                    total += len(block)
                    if total > max_bytes:
                        raise TransferError(
                            "INVALID_ZIP", f"zip unpacks to over {max_bytes:,} bytes"
                        )
                    sink.write(block)
        except TransferError:
            raise
        except (
            zipfile.BadZipFile,
            zlib.error,
            lzma.LZMAError,
            EOFError,
            NotImplementedError,
            RuntimeError,
            ValueError,
        ) as exc:
            raise TransferError(
                "INVALID_ZIP", f"zip entry {shown} is damaged or can't be unpacked: {clip(exc)}"
            ) from None
        except OSError as exc:
            raise TransferError(
                "UNPACK_FAILED", f"the worker can't write zip entry {shown}: {exc.strerror}"
            ) from None
        written.append(target.joinpath(*plan.parts))
    return written
