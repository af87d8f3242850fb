"""Files across a channel: uploads into the worker's upload folder, downloads out of its mounts.

Both directions move base64 chunks of :data:`~sleap_rtc.protocol.jobs.CHUNK_BYTES`
with a window of unacknowledged bytes, so a fast sender never floods a slow
channel or the server's relay. Everything a peer sends is checked: names are
plain file names, offsets must follow on, sizes and hashes must match what was
announced, a zip is extracted only inside its own folder (no absolute paths, no
``..``, no links, bounded size and file count), and a download names a path
inside the worker's mounts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sleap_rtc.jobs.mounts import Mounts
from sleap_rtc.protocol import jobs as p

#: Files in one download and in one unpacked zip.
MAX_FILES = 1000


class TransferError(Exception):
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


@dataclass
class _Upload:
    begin: p.UploadBegin
    part: Path
    final: Path
    handle: BinaryIO
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    received: int = 0
    acked: int = 0


class Uploads:
    """The uploads of one channel; files land in ``root/<user>/``."""

    def __init__(self, root: Path, user: str, max_bytes: int) -> None:
        self.root = root
        self.user = user
        self.max_bytes = max_bytes
        self._active: dict[str, _Upload] = {}

    def begin(self, message: p.UploadBegin) -> None:
        if message.upload_id in self._active:
            raise TransferError("CONFLICT", f"upload {message.upload_id} is already open")
        if len(self._active) >= 4:
            raise TransferError("TOO_MANY", "at most 4 uploads at once on one channel")
        if message.size > self.max_bytes:
            raise TransferError(
                "TOO_LARGE",
                f"{message.name} is {message.size:,} bytes; this worker accepts uploads up to "
                f"{self.max_bytes:,} bytes (max_upload_mb)",
            )
        folder = self.root / _safe_user(self.user)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{message.upload_id[:16]}-{message.name}"
        final = folder / stem
        part = folder / f".{stem}.part"
        if final.exists():
            raise TransferError("OUTPUT_EXISTS", f"{final} exists already")
        handle = part.open("wb")
        self._active[message.upload_id] = _Upload(message, part, final, handle)

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
        upload.handle.write(data)
        upload.hasher.update(data)
        upload.received += len(data)
        if upload.received - upload.acked >= p.ACK_EVERY:
            upload.acked = upload.received
            return upload.received
        return None

    def end(self, message: p.UploadEnd) -> p.UploadDone:
        upload = self._get(message.upload_id)
        del self._active[message.upload_id]
        upload.handle.close()
        if upload.received != upload.begin.size:
            upload.part.unlink(missing_ok=True)
            raise TransferError(
                "INCOMPLETE", f"got {upload.received:,} of {upload.begin.size:,} bytes"
            )
        if upload.hasher.hexdigest() != upload.begin.sha256:
            upload.part.unlink(missing_ok=True)
            raise TransferError("HASH_MISMATCH", "the file's SHA-256 differs from the one sent")
        os.replace(upload.part, upload.final)
        files: list[str] = []
        path = upload.final
        if upload.begin.unpack:
            target = upload.final.with_name(upload.final.name.removesuffix(".zip") + "-unpacked")
            try:
                files = [str(f) for f in safe_extract(upload.final, target, self.max_bytes)]
            except TransferError:
                shutil.rmtree(target, ignore_errors=True)
                raise
            path = target
        return p.UploadDone(upload_id=message.upload_id, path=str(path), files=files)

    def _get(self, upload_id: str) -> _Upload:
        upload = self._active.get(upload_id)
        if upload is None:
            raise TransferError("NO_SUCH_UPLOAD", f"no open upload {upload_id!r}")
        return upload

    def abort(self, upload_id: str | None = None) -> None:
        for key in [upload_id] if upload_id else list(self._active):
            upload = self._active.pop(key, None) if key else None
            if upload is not None:
                upload.handle.close()
                upload.part.unlink(missing_ok=True)


def _safe_user(user: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in user)[:64]
    return cleaned.lstrip(".") or "user"


def safe_extract(archive: Path, target: Path, max_bytes: int) -> list[Path]:
    """Extract a zip inside ``target`` only; returns the files written."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise TransferError("INVALID_ZIP", f"{archive.name} is not a zip file") from None
    written: list[Path] = []
    total = 0
    target.mkdir(parents=True, exist_ok=False)
    with zf:
        entries = zf.infolist()
        if len(entries) > MAX_FILES:
            raise TransferError("INVALID_ZIP", f"zip holds over {MAX_FILES} entries")
        for info in entries:
            name = PurePosixPath(info.filename.replace("\\", "/"))
            if name.is_absolute() or ".." in name.parts or ":" in info.filename:
                raise TransferError(
                    "INVALID_ZIP", f"zip entry {info.filename!r} escapes its folder"
                )
            if stat.S_ISLNK(info.external_attr >> 16):
                raise TransferError("INVALID_ZIP", f"zip entry {info.filename!r} is a link")
            if info.is_dir():
                (target / name).mkdir(parents=True, exist_ok=True)
                continue
            out = target / name
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as source, out.open("xb") as sink:
                for block in iter(lambda: source.read(1 << 20), b""):
                    total += len(block)
                    if total > max_bytes:
                        raise TransferError(
                            "INVALID_ZIP", f"zip unpacks to over {max_bytes:,} bytes"
                        )
                    sink.write(block)
            written.append(out)
    return written


def list_download(mounts: Mounts, raw: str) -> tuple[Path, list[tuple[Path, str]]]:
    """The real path asked for and its files (absolute, relative name), inside the mounts."""
    real, problem = mounts.resolve("path", raw)
    if problem is not None or real is None:
        assert problem is not None
        raise TransferError(str(problem.code), problem.message)
    if real.is_file():
        return real, [(real, real.name)]
    if not real.is_dir():
        raise TransferError("PATH_NOT_FOUND", f"Path not found: {raw}")
    files: list[tuple[Path, str]] = []
    for folder, dirs, names in os.walk(real, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            resolved = path.resolve()
            # A link inside the folder must not lead out of the mounts.
            if mounts.containing(resolved) is None or not resolved.is_file():
                continue
            files.append((resolved, path.relative_to(real).as_posix()))
            if len(files) > MAX_FILES:
                raise TransferError("TOO_MANY", f"{raw} holds over {MAX_FILES} files")
    return real, files
