"""SHA-256 of a file: the one digest that manifests, uploads and downloads compare.

A file is read in blocks of :data:`READ_BYTES`, so hashing a checkpoint of many
gigabytes holds one block in memory, never the file. :func:`known_sha256` remembers a
digest while the file's size and modification time stay the same, for a process
that checks the same files again and again (``pipeline status --watch``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

#: Bytes read from a file at once while hashing it.
READ_BYTES = 1 << 20


def sha256_of_blocks(blocks: Iterable[bytes]) -> str:
    """Hex SHA-256 of the concatenated ``blocks`` (a reader that checks as it goes)."""
    digest = hashlib.sha256()
    for block in blocks:
        digest.update(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``."""
    with path.open("rb") as handle:
        return sha256_of_blocks(iter(lambda: handle.read(READ_BYTES), b""))


_known: dict[tuple[str, int, int, int], str] = {}


def known_sha256(path: Path) -> str:
    """:func:`sha256_of`, remembered in this process while the file's identity, size and
    modification time stay the same."""
    info = path.stat()
    key = (os.fspath(path), info.st_ino, info.st_size, info.st_mtime_ns)
    digest = _known.get(key)
    if digest is None:
        digest = _known[key] = sha256_of(path)
    return digest
