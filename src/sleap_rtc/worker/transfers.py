"""Files across a channel: uploads into the worker's upload folder, downloads out of its mounts.

Both directions move base64 chunks of :data:`~sleap_rtc.protocol.jobs.CHUNK_BYTES`
with a window of unacknowledged bytes, so a fast sender never floods a slow
channel or the server's relay. Everything a peer sends is checked: names are
plain file names, offsets must follow on, sizes and hashes must match what was
announced, acknowledgements can't claim more than was sent, a zip is extracted
only inside its own folder (no absolute paths, no ``..``, no links, no duplicate
or over-long names, bounded size and file count), and a download names a path
inside the worker's mounts.

What guarantees hold:

* Ids a peer sends only key tables; every file name on disk is made here (a
  random token plus the sanitized name) and created inside the user's upload
  folder through that folder's descriptor, never by a path a link could redirect.
* A download sends only files it listed, each opened beneath its mount root
  without following links (:mod:`sleap_rtc.worker.fsafe`) and checked to be the
  same file (device and inode) that was listed and hashed.
* Every failure is a :class:`TransferError` with a code and a message naming the
  entry (peer text cut by :func:`~sleap_rtc.worker.fsafe.clip`); nothing half
  written is left behind, and the channel stays open.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import hashlib
import logging
import lzma
import os
import secrets
import shutil
import stat
import time
import zipfile
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sleap_rtc.jobs.mounts import Mounts
from sleap_rtc.protocol import jobs as p
from sleap_rtc.transport.base import ChannelClosed
from sleap_rtc.worker import fsafe
from sleap_rtc.worker.fsafe import clip, clip_problem, echo

log = logging.getLogger("sleap_rtc.worker")

#: Files in one download and in one unpacked zip.
MAX_FILES = 1000
#: Entries (files, folders, links) looked at while listing one download.
MAX_SCANNED = 100_000
#: Uploads and downloads open at once on one channel.
MAX_UPLOADS = 4
MAX_DOWNLOADS = 4
#: Longest file name the worker makes for an upload (its ``.part`` must fit NAME_MAX).
MAX_STORED_NAME = 200
#: Longest name (bytes) of one component, and of a whole path, inside a zip.
MAX_ZIP_NAME = 255
MAX_ZIP_PATH = 1024
#: What a download reads from disk at once (then cut into chunks).
READ_BYTES = 1 << 20
#: Compression methods this worker unpacks.
ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class TransferError(Exception):
    """A transfer that can't go on; ``code`` and ``message`` go back to the peer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decode_chunk(data: str) -> bytes:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise TransferError("INVALID_CHUNK", "chunk data is not valid base64") from None
    if len(raw) > p.CHUNK_BYTES:
        raise TransferError("INVALID_CHUNK", f"chunk is over {p.CHUNK_BYTES} bytes")
    return raw


# -- uploads ----------------------------------------------------------------------------------


@dataclass
class _Upload:
    begin: p.UploadBegin
    folder: Path
    folder_fd: int
    part: str
    final: str
    handle: BinaryIO
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    received: int = 0
    acked: int = 0

    def close(self, *, remove_part: bool) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()
        if remove_part:
            with contextlib.suppress(OSError):
                os.unlink(self.part, dir_fd=self.folder_fd)
        with contextlib.suppress(OSError):
            os.close(self.folder_fd)


class Uploads:
    """The uploads of one channel; files land in ``root/<user>/`` under names made here.

    At most :data:`MAX_UPLOADS` are open at once; an upload that fails or is
    aborted leaves nothing behind, and finished ones are removed by
    :meth:`sweep` once they are older than the worker's upload TTL.
    """

    def __init__(self, root: Path, user: str, max_bytes: int) -> None:
        self.root = root
        self.user = user
        self.max_bytes = max_bytes
        self._active: dict[str, _Upload] = {}

    def begin(self, message: p.UploadBegin) -> None:
        if message.upload_id in self._active:
            raise TransferError("CONFLICT", f"upload {echo(message.upload_id)} is already open")
        if len(self._active) >= MAX_UPLOADS:
            raise TransferError("TOO_MANY", f"at most {MAX_UPLOADS} uploads at once on one channel")
        if message.size > self.max_bytes:
            raise TransferError(
                "TOO_LARGE",
                f"{clip(message.name)} is {message.size:,} bytes; this worker accepts uploads "
                f"up to {self.max_bytes:,} bytes (max_upload_mb)",
            )
        folder, folder_fd = self._user_folder()
        try:
            # The worker's own name: a random token, then the peer's name made safe.
            final = _stored_name(secrets.token_hex(8), message.name)
            part = f".{final}.part"
            for name in (final, part):
                _check_child(folder, name)
            fd = os.open(part, _NEW_FILE, 0o666, dir_fd=folder_fd)
        except OSError as exc:
            os.close(folder_fd)
            raise TransferError(
                "UPLOAD_FAILED", f"the worker can't store {clip(message.name)}: {exc.strerror}"
            ) from None
        except BaseException:
            os.close(folder_fd)
            raise
        handle = os.fdopen(fd, "wb")
        self._active[message.upload_id] = _Upload(message, folder, folder_fd, part, final, handle)

    def _user_folder(self) -> tuple[Path, int]:
        """The user's upload folder and a descriptor of it (created if missing).

        It must be a real folder directly inside the upload root: its name comes
        from :func:`user_folder_name`, and it is opened without following a link, so a
        link planted in its place is refused instead of followed.
        """
        name = user_folder_name(self.user)
        folder = self.root / name
        _check_child(self.root, name)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            root_fd = os.open(self.root, _DIR_FLAGS)
        except OSError as exc:
            raise TransferError(
                "UPLOAD_FAILED", f"the worker's upload folder is not usable: {exc.strerror}"
            ) from None
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, dir_fd=root_fd)
            return folder, os.open(name, _DIR_FLAGS | _NOFOLLOW, dir_fd=root_fd)
        except OSError as exc:
            raise TransferError(
                "UPLOAD_FAILED", f"the upload folder {folder} is not usable: {exc.strerror}"
            ) from None
        finally:
            os.close(root_fd)

    def chunk(self, message: p.UploadChunk) -> int | None:
        """Take a chunk; returns the byte count to acknowledge when one is due."""
        upload = self._get(message.upload_id)
        if message.offset != upload.received:
            raise TransferError(
                "INVALID_CHUNK",
                f"chunk at offset {message.offset}, expected {upload.received}",
            )
        data = decode_chunk(message.data)
        if upload.received + len(data) > upload.begin.size:
            raise TransferError("INVALID_CHUNK", "more bytes than the upload announced")
        try:
            upload.handle.write(data)
        except OSError as exc:
            raise TransferError(
                "UPLOAD_FAILED", f"the worker can't store {upload.final}: {exc.strerror}"
            ) from None
        upload.hasher.update(data)
        upload.received += len(data)
        if upload.received - upload.acked >= p.ACK_EVERY:
            upload.acked = upload.received
            return upload.received
        return None

    def end(self, message: p.UploadEnd) -> p.UploadDone:
        """Finish an upload: check it, move it into place and unpack it if asked.

        On any failure nothing of it is left: not the ``.part``, not the file, not
        a half-unpacked folder.
        """
        upload = self._get(message.upload_id)
        del self._active[message.upload_id]
        try:
            upload.handle.close()
        except OSError as exc:
            upload.close(remove_part=True)
            raise TransferError(
                "UPLOAD_FAILED", f"the worker can't store {upload.final}: {exc.strerror}"
            ) from None
        if upload.received != upload.begin.size:
            upload.close(remove_part=True)
            raise TransferError(
                "INCOMPLETE", f"got {upload.received:,} of {upload.begin.size:,} bytes"
            )
        if upload.hasher.hexdigest() != upload.begin.sha256:
            upload.close(remove_part=True)
            raise TransferError("HASH_MISMATCH", "the file's SHA-256 differs from the one sent")
        dir_fd = upload.folder_fd
        try:
            os.replace(upload.part, upload.final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            upload.close(remove_part=True)
            raise TransferError(
                "UPLOAD_FAILED", f"the worker can't store {upload.final}: {exc.strerror}"
            ) from None
        try:
            path = upload.folder / upload.final
            files: list[str] = []
            if upload.begin.unpack:
                target = upload.final.removesuffix(".zip") + "-unpacked"
                _check_child(upload.folder, target)
                try:
                    fd = os.open(upload.final, os.O_RDONLY | _NOFOLLOW, dir_fd=dir_fd)
                except OSError as exc:
                    raise TransferError(
                        "UPLOAD_FAILED", f"the worker can't read {upload.final}: {exc.strerror}"
                    ) from None
                with os.fdopen(fd, "rb") as archive:
                    written = safe_extract(
                        archive, upload.folder / target, self.max_bytes, dir_fd=dir_fd
                    )
                files = [str(f) for f in written]
                path = upload.folder / target
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(upload.final, dir_fd=dir_fd)
            upload.close(remove_part=False)
            raise
        upload.close(remove_part=False)
        return _done_that_fits(message.upload_id, path, files)

    def _get(self, upload_id: str) -> _Upload:
        upload = self._active.get(upload_id)
        if upload is None:
            raise TransferError("NO_SUCH_UPLOAD", f"no open upload {echo(upload_id)}")
        return upload

    def abort(self, upload_id: str | None = None) -> None:
        """Drop one open upload (or all of them), removing their ``.part`` files."""
        for key in [upload_id] if upload_id else list(self._active):
            upload = self._active.pop(key, None) if key else None
            if upload is not None:
                upload.close(remove_part=True)

    @staticmethod
    def sweep(
        root: Path,
        older_than_s: float,
        *,
        keep: Iterable[str | os.PathLike[str]] = (),
        now: float | None = None,
    ) -> list[Path]:
        """Remove uploads left behind: what in ``root/<user>/`` is older than ``older_than_s``.

        Meant to be called periodically by the worker with its upload TTL. An
        entry's age is its own modification time (a finished upload's is when it
        landed, an unpacked folder's when it was unpacked, a stale ``.part``'s its
        last chunk). ``keep`` lists paths still needed (e.g. the paths named by
        jobs that haven't finished); an entry that is or holds one of them stays.
        Links are removed, never followed; folders are removed with
        :func:`shutil.rmtree` through descriptors. Returns what was removed.
        """
        cutoff = (time.time() if now is None else now) - older_than_s
        kept = [Path(os.path.abspath(os.fspath(k))) for k in keep]
        kept += [Path(os.path.realpath(k)) for k in kept]
        removed: list[Path] = []
        try:
            root_fd = os.open(root, _DIR_FLAGS)
        except OSError:
            return removed
        try:
            real_root = Path(os.path.realpath(root))
            with os.scandir(root_fd) as users:
                user_names = [u.name for u in users if u.is_dir(follow_symlinks=False)]
            for user in user_names:
                try:
                    user_fd = os.open(user, _DIR_FLAGS | _NOFOLLOW, dir_fd=root_fd)
                except OSError:
                    continue
                try:
                    removed += _sweep_folder(
                        user_fd,
                        [root / user, real_root / user],
                        lambda _name, info: info.st_mtime < cutoff,
                        kept,
                    )
                finally:
                    os.close(user_fd)
        finally:
            os.close(root_fd)
        return removed

    @staticmethod
    def release(
        root: Path, used: Iterable[str], *, keep: Iterable[str | os.PathLike[str]] = ()
    ) -> list[Path]:
        """Remove the uploads a finished job named: the file, its zip and unpacked folder.

        ``used`` are paths from the job's spec; those inside ``root/<user>/`` name an
        upload by its worker-made token, and every entry of that upload goes (unless a
        path in ``keep``, named by a job still to run, is in it). Returns what was removed.
        """
        real_root = Path(os.path.realpath(root))
        tokens: dict[str, set[str]] = {}
        for raw in used:
            real = Path(os.path.realpath(raw))
            if not real.is_relative_to(real_root):
                continue
            parts = real.relative_to(real_root).parts
            if len(parts) < 2:
                continue
            token = parts[1].split("-", 1)[0]
            if len(token) == 16 and all(c in "0123456789abcdef" for c in token):
                tokens.setdefault(parts[0], set()).add(token + "-")
        kept = [Path(os.path.realpath(os.fspath(k))) for k in keep]
        removed: list[Path] = []
        for user, prefixes in tokens.items():
            try:
                user_fd = os.open(real_root / user, _DIR_FLAGS | _NOFOLLOW)
            except OSError:
                continue
            starts = tuple(prefixes)

            def named(name: str, _info: os.stat_result, starts: tuple[str, ...] = starts) -> bool:
                return name.startswith(starts)

            try:
                removed += _sweep_folder(user_fd, [real_root / user], named, kept)
            finally:
                os.close(user_fd)
        return removed


def _sweep_folder(
    fd: int,
    folders: list[Path],
    wanted: Callable[[str, os.stat_result], bool],
    kept: list[Path],
) -> list[Path]:
    removed = []
    with os.scandir(fd) as scan:
        names = [item.name for item in scan]
    for name in names:
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            continue
        if not wanted(name, info):
            continue
        paths = [folder / name for folder in folders]
        if any(k == path or path in k.parents for k in kept for path in paths):
            continue
        try:
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(name, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)
        except OSError as exc:
            log.warning("could not remove the old upload %s: %s", paths[0], exc)
            continue
        removed.append(paths[0])
    return removed


def _done_that_fits(upload_id: str, path: Path, files: list[str]) -> p.UploadDone:
    """UPLOAD_DONE, its file list shortened (configs and labels kept first) to fit a message."""
    done = p.UploadDone(upload_id=upload_id, path=str(path), files=files)
    if p.fits(done):
        return done
    wanted = [f for f in files if f.endswith((".yaml", ".yml", ".json", ".slp"))]
    ordered = wanted + [f for f in files if f not in set(wanted)]
    while ordered:
        ordered = ordered[: len(ordered) // 2]
        done = p.UploadDone(upload_id=upload_id, path=str(path), files=ordered)
        if p.fits(done):
            return done
    return done


def _check_child(folder: Path, name: str) -> None:
    """Refuse a name that is not a plain entry directly inside ``folder``."""
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\0" in name
        or len(name.encode("utf-8", "surrogateescape")) > 255
        or (folder / name).parent != folder
    ):
        raise TransferError("INVALID_NAME", f"{echo(name)} is not a plain file name")


def _stored_name(token: str, name: str) -> str:
    """``<token>-<name>``, the name cut (its extension kept) so the result stays short."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in " ._+()-") else "_" for c in name)
    cleaned = cleaned.lstrip(" .") or "upload"
    room = MAX_STORED_NAME - len(token) - 1
    if len(cleaned) > room:
        stem, dot, ext = cleaned.rpartition(".")
        ext = f".{ext}" if dot and stem and len(ext) <= 16 else ""
        cleaned = cleaned[: room - len(ext)] + ext if ext else cleaned[:room]
    return f"{token}-{cleaned}"


def user_folder_name(user: str) -> str:
    """The user's upload folder name: ASCII letters, digits and ``._-``, never hidden.

    A name that had to be changed gets a short hash of the original, so two
    users whose names clean to the same text still get different folders.
    """
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in user)
    cleaned = cleaned[:64].lstrip(".") or "user"
    if cleaned != user:
        digest = hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        cleaned = f"{cleaned[:55]}-{digest}"
    return cleaned


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
            nxt = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
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
                target_fd = os.open(target, _DIR_FLAGS | _NOFOLLOW)
            else:
                os.mkdir(target.name, dir_fd=dir_fd)
                target_fd = os.open(target.name, _DIR_FLAGS | _NOFOLLOW, dir_fd=dir_fd)
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
                out = os.open(plan.parts[-1], _NEW_FILE, 0o666, dir_fd=parent)
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
    return ListedFile(where, name, info.st_size, info.st_dev, info.st_ino)


def list_download(mounts: Mounts, raw: str) -> tuple[Path, list[ListedFile]]:
    """The real path asked for and its files, all inside the mounts.

    A folder is walked through descriptors opened beneath its mount root. Inside
    it, a link to a file elsewhere in the mounts is sent as that file (as the
    worker always did); a link leading outside, a link to a folder, a broken or
    looping link and anything not a regular file are left out. A folder swapped
    for a link while it is walked is left out too, never entered.
    """

    def attempt() -> tuple[Path, list[ListedFile]]:
        real, problem = mounts.resolve("path", raw)
        if problem is not None or real is None:
            assert problem is not None
            raise TransferError(str(problem.code), clip_problem(problem.message, raw))
        where = fsafe.locate(mounts, real)
        assert where is not None  # resolve() checked it is inside a mount
        with fsafe.root_fd(where.mount) as root:
            info = fsafe.lstat_beneath(root, where.rel)
            if stat.S_ISREG(info.st_mode):
                return real, [_listed(where, real.name, info)]
            if not stat.S_ISDIR(info.st_mode):
                raise TransferError("PATH_NOT_FOUND", f"Path not found: {clip(raw)}")
            return real, _walk(mounts, where, root, raw)

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
    try:
        digest = hashlib.sha256()
        left = file.size
        while left:
            if stop():
                raise TransferError("CANCELLED", "the download was stopped")
            block = read_exactly(fd, min(READ_BYTES, left), file)
            digest.update(block)
            left -= len(block)
        return digest.hexdigest()
    finally:
        os.close(fd)


def download_name(real: Path) -> str:
    """The name a download is announced under: a plain ASCII file name."""
    cleaned = "".join(
        c if c.isascii() and (c.isalnum() or c in " ._+()-") else "_" for c in real.name
    )[:255]
    return cleaned.lstrip(" ._+()-") or "download"


Send = Callable[[p._Msg], Awaitable[None]]


class _Download:
    def __init__(self, transfer_id: str, request_id: str) -> None:
        self.id = transfer_id
        self.request_id = request_id
        #: Bytes handed to the channel (counted before each send, so an ack can't outrun it).
        self.sent = 0
        self.acked = 0
        self.more = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        #: Set when the peer broke the protocol; the sender stops and reports it.
        self.error: TransferError | None = None
        #: Set when the channel goes away; work in threads stops at the next block.
        self.stopped = False


class Downloads:
    """The downloads of one channel: at most ``max_active`` at once, each windowed.

    The sender keeps at most :data:`~sleap_rtc.protocol.jobs.TRANSFER_WINDOW`
    bytes unacknowledged. An acknowledgement claiming more than was sent is a
    protocol error: the download ends with ERROR ``INVALID_ACK`` (the window is
    never widened by it). Every failure ends the download with an ERROR naming
    its request and transfer; none ends the channel.
    """

    def __init__(
        self,
        mounts: Mounts,
        send: Send,
        *,
        max_active: int = MAX_DOWNLOADS,
        ack_timeout_s: float = 120.0,
    ) -> None:
        self.mounts = mounts
        self.send = send
        self.max_active = max_active
        self.ack_timeout_s = ack_timeout_s
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
        if download is None:
            return
        if message.received > download.sent:
            download.error = TransferError(
                "INVALID_ACK",
                f"acknowledged {message.received:,} bytes, but only {download.sent:,} were sent",
            )
        else:
            download.acked = max(download.acked, message.received)
        download.more.set()

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
            real, files = await asyncio.to_thread(list_download, self.mounts, message.path)
            digests = await asyncio.to_thread(
                lambda: [hash_listed(f, lambda: download.stopped) for f in files]
            )
            begin = p.DownloadBegin(
                request_id=message.request_id,
                transfer_id=download.id,
                name=download_name(real),
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
            for index, file in enumerate(files):
                await self._send_file(download, index, file)
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

    async def _send_file(self, download: _Download, index: int, file: ListedFile) -> None:
        fd = await asyncio.to_thread(open_listed, file)
        try:
            offset = 0
            while offset < file.size:
                block = await asyncio.to_thread(
                    read_exactly, fd, min(READ_BYTES, file.size - offset), file
                )
                for start in range(0, len(block), p.CHUNK_BYTES):
                    piece = block[start : start + p.CHUNK_BYTES]
                    while download.error is None and (
                        download.sent - download.acked >= p.TRANSFER_WINDOW
                    ):
                        download.more.clear()
                        await asyncio.wait_for(download.more.wait(), self.ack_timeout_s)
                    if download.error is not None:
                        raise download.error
                    download.sent += len(piece)
                    await self.send(
                        p.DownloadChunk(
                            transfer_id=download.id,
                            file_index=index,
                            offset=offset + start,
                            data=base64.b64encode(piece).decode("ascii"),
                        )
                    )
                offset += len(block)
        finally:
            os.close(fd)

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
