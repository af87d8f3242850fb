"""Uploads: files a peer sends into its own folder of the worker's upload folder.

Ids a peer sends only key tables; every file name on disk is made here (a random
token plus the sanitized name) and created inside the user's folder through that
folder's descriptor, never by a path a link could redirect. Offsets must follow
on, sizes and hashes must match what was announced, and a failed upload leaves
nothing behind. Old uploads are swept, and a finished job's are released.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sleap_rtc.jobs.mounts import Mounts
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.transfer import Receiver, TransferError, safe_name
from sleap_rtc.worker import fsafe
from sleap_rtc.worker.fsafe import clip, clip_problem, echo
from sleap_rtc.worker.transfers import (
    DIR_FLAGS,
    MAX_STORED_NAME,
    MAX_UPLOADS,
    NEW_FILE,
    NOFOLLOW,
)
from sleap_rtc.worker.zips import safe_extract

log = logging.getLogger("sleap_rtc.worker")


# -- uploads ----------------------------------------------------------------------------------


@dataclass
class _Upload:
    begin: p.UploadBegin
    folder: Path
    folder_fd: int
    part: str
    final: str
    handle: BinaryIO
    #: Checks each chunk against what UPLOAD_BEGIN announced (offset, size, SHA-256).
    receiver: Receiver
    #: Into a mount's folder (``dest``): the file keeps its name and never replaces one.
    placed: bool = False

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

    def __init__(self, root: Path, user: str, max_bytes: int, mounts: Mounts | None = None) -> None:
        self.root = root
        self.user = user
        self.max_bytes = max_bytes
        #: The user's mounts, where an upload with ``dest`` may land (writable ones only).
        self.mounts = mounts
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
        dest = message.dest
        placed = dest is not None
        if placed and message.unpack:
            raise TransferError(
                "INVALID_REQUEST",
                "unpack works in the upload folder only; send the zip without a "
                "destination to unpack it",
            )
        folder, folder_fd = self._dest_folder(dest) if dest is not None else self._user_folder()
        token = secrets.token_hex(8)
        try:
            if placed:
                final = safe_name(message.name, "upload")
                part = f".{_stored_name(token, final)}.part"
                if _exists(final, folder_fd):
                    raise TransferError("EXISTS", _exists_message(folder, final))
            else:
                # The worker's own name: a random token, then the peer's name made safe.
                final = _stored_name(token, message.name)
                part = f".{final}.part"
            for name in (final, part):
                _check_child(folder, name)
            fd = os.open(part, NEW_FILE, 0o666, dir_fd=folder_fd)
        except OSError as exc:
            os.close(folder_fd)
            raise TransferError(
                "UPLOAD_FAILED", f"the worker can't store {clip(message.name)}: {exc.strerror}"
            ) from None
        except BaseException:
            os.close(folder_fd)
            raise
        handle = os.fdopen(fd, "wb")
        receiver = Receiver([(message.size, message.sha256)])
        self._active[message.upload_id] = _Upload(
            message, folder, folder_fd, part, final, handle, receiver, placed
        )

    def _dest_folder(self, raw: str) -> tuple[Path, int]:
        """The folder ``raw`` names in a writable mount and a descriptor of it, opened
        beneath the mount's root (a link swapped in after the check is not followed)."""
        mounts = self.mounts
        if mounts is None:
            raise TransferError("UNAVAILABLE", "this worker takes uploads into its upload folder")

        def attempt() -> tuple[Path, int]:
            real, problem = mounts.resolve("dest", mounts.by_label(raw) or raw, for_writing=True)
            if problem is not None or real is None:
                assert problem is not None
                raise TransferError(str(problem.code), clip_problem(problem.message, raw))
            where = fsafe.locate(mounts, real)
            assert where is not None  # resolve() checked it is inside a mount
            return real, fsafe.open_dir_inside(where)

        try:
            return fsafe.retry_on_link(attempt)
        except (FileNotFoundError, NotADirectoryError):
            raise TransferError(
                "PATH_NOT_FOUND",
                f"No folder {clip(raw)} on the worker; create it or choose another",
            ) from None
        except OSError as exc:
            raise TransferError(
                "UPLOAD_FAILED", f"the worker can't write into {clip(raw)}: {exc.strerror}"
            ) from None

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
            root_fd = os.open(self.root, DIR_FLAGS)
        except OSError as exc:
            raise TransferError(
                "UPLOAD_FAILED", f"the worker's upload folder is not usable: {exc.strerror}"
            ) from None
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, dir_fd=root_fd)
            return folder, os.open(name, DIR_FLAGS | NOFOLLOW, dir_fd=root_fd)
        except OSError as exc:
            raise TransferError(
                "UPLOAD_FAILED", f"the upload folder {folder} is not usable: {exc.strerror}"
            ) from None
        finally:
            os.close(root_fd)

    def chunk(self, message: p.UploadChunk) -> int | None:
        """Take a chunk; returns the byte count to acknowledge when one is due."""
        upload = self._get(message.upload_id)
        data, ack = upload.receiver.take(0, message.offset, message.data)
        try:
            upload.handle.write(data)
        except OSError as exc:
            raise TransferError(
                "UPLOAD_FAILED", f"the worker can't store {upload.final}: {exc.strerror}"
            ) from None
        return ack

    def frame(self, upload_id: str, offset: int, data: bytes) -> int | None:
        """Take a lane frame; the upload's size once it has every byte, else None.

        A frame for no open upload returns None too (the rest of an aborted one).
        """
        upload = self._active.get(upload_id)
        if upload is None:
            return None
        try:
            for _index, piece in upload.receiver.take_at(offset, data):
                upload.handle.write(piece)
        except OSError as exc:
            raise TransferError(
                "UPLOAD_FAILED", f"the worker can't store {upload.final}: {exc.strerror}"
            ) from None
        return upload.receiver.received if upload.receiver.complete else None

    def received(self, upload_id: str) -> int:
        """Bytes of an open upload the worker holds (where a resumed one goes on)."""
        upload = self._get(upload_id)
        upload.handle.flush()
        return upload.receiver.received

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
        try:
            upload.receiver.check()
        except TransferError:
            upload.close(remove_part=True)
            raise
        dir_fd = upload.folder_fd
        try:
            if upload.placed:
                # A link fails where a file of that name appeared meanwhile; a rename
                # would replace it.
                os.link(upload.part, upload.final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                os.unlink(upload.part, dir_fd=dir_fd)
            else:
                os.replace(upload.part, upload.final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except FileExistsError:
            upload.close(remove_part=True)
            raise TransferError("EXISTS", _exists_message(upload.folder, upload.final)) from None
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
                    fd = os.open(upload.final, os.O_RDONLY | NOFOLLOW, dir_fd=dir_fd)
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
            root_fd = os.open(root, DIR_FLAGS)
        except OSError:
            return removed
        try:
            real_root = Path(os.path.realpath(root))
            with os.scandir(root_fd) as users:
                user_names = [u.name for u in users if u.is_dir(follow_symlinks=False)]
            for user in user_names:
                try:
                    user_fd = os.open(user, DIR_FLAGS | NOFOLLOW, dir_fd=root_fd)
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
                user_fd = os.open(real_root / user, DIR_FLAGS | NOFOLLOW)
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


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _exists_message(folder: Path, name: str) -> str:
    return (
        f"{clip(folder / name)} exists already on the worker; remove it there or put the "
        "file into another folder"
    )


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
    """``<token>-<name>``, the name cut (its extension kept) so the result stays short:
    at most :data:`MAX_STORED_NAME` UTF-8 bytes, cut at a character boundary."""
    cleaned = safe_name(name, "upload")
    room = MAX_STORED_NAME - len(token) - 1

    def cut(text: str, limit: int) -> str:
        return text.encode("utf-8")[:limit].decode("utf-8", "ignore")

    if len(cleaned.encode("utf-8")) > room:
        stem, dot, ext = cleaned.rpartition(".")
        ext = f".{ext}" if dot and stem and len(ext.encode("utf-8")) <= 16 else ""
        cleaned = cut(cleaned, room - len(ext.encode("utf-8"))) + ext if ext else cut(cleaned, room)
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
