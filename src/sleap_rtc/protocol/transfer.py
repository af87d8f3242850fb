"""Windowed file transfers as state with no I/O: what a sender may send, what a receiver
must accept.

Both directions (a client's upload, a worker's download) move a file as base64
chunks of at most :data:`~sleap_rtc.protocol.jobs.CHUNK_BYTES`. The sender keeps at
most :data:`~sleap_rtc.protocol.jobs.TRANSFER_WINDOW` bytes unacknowledged, so a
fast sender never floods a slow channel or the server's relay; the receiver
acknowledges every :data:`~sleap_rtc.protocol.jobs.ACK_EVERY` bytes.

What a peer sends is checked here, once for both sides:

* an acknowledgement may not claim more than was sent, nor less than an earlier
  one (:meth:`WindowSender.ack`); a lie never widens the window;
* chunks must follow on, never go past the size announced, and decode to at most
  one chunk's bytes (:meth:`Receiver.take`);
* at the end every file must have its announced size and SHA-256
  (:meth:`Receiver.check`);
* names a peer announces become plain file names (:func:`safe_name`), and a
  relative path it sends may not leave its folder (:func:`safe_parts`).

Bulk bytes may also take a lane of their own (:mod:`sleap_rtc.transport.lane`): a
direct TLS connection to the worker carrying binary frames, so control messages never
queue behind them. A frame is a header (:data:`FRAME`: id length, offset, length), the
transfer's id, then at most :data:`FRAME_BYTES` raw bytes; its offset counts the bytes
of all the transfer's files together, so a transfer cut off mid-way resumes from the
count its receiver holds (:meth:`Receiver.take_at`). Frames are checked here too:
:func:`frame_header` refuses an over-long frame or an id that isn't one.

Every refusal is a :class:`TransferError` with a machine-readable code; the caller
decides whether it ends one transfer (the worker) or one call (the client).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath

from sleap_rtc.protocol.jobs import (
    ACK_EVERY,
    CHUNK_BYTES,
    ID_PATTERN,
    TRANSFER_WINDOW,
)
from sleap_rtc.protocol.names import MAX_NAME_BYTES, is_plain_name, name_char_ok


class TransferError(Exception):
    """A transfer that can't go on; ``code`` and ``message`` go back to the peer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: Raw bytes in one lane frame.
FRAME_BYTES = 1 << 20
#: A lane frame's header: the id's length, the transfer offset, the data's length.
FRAME = struct.Struct("!BQI")
#: What a lane's client says first, inside TLS: magic, then the token the worker issued.
LANE_MAGIC = b"SRL1"
LANE_HELLO = struct.Struct("!4s32s")
#: The worker's answer once the token checks out (a bad one is answered by closing).
LANE_READY = b"\x01"
_ID = re.compile(ID_PATTERN)


def frame_header(key: str, offset: int, length: int) -> bytes:
    """The header and id of a frame of ``length`` bytes at ``offset`` of transfer ``key``."""
    raw = key.encode("ascii")
    return FRAME.pack(len(raw), offset, length) + raw


def read_frame_header(header: bytes) -> tuple[int, int, int]:
    """``(id length, offset, length)`` of a frame; ``INVALID_FRAME`` if out of bounds."""
    key_len, offset, length = FRAME.unpack(header)
    if not 1 <= key_len <= 64:
        raise TransferError("INVALID_FRAME", f"frame id of {key_len} bytes")
    if length > FRAME_BYTES:
        raise TransferError("INVALID_FRAME", f"frame of {length:,} bytes, over {FRAME_BYTES:,}")
    return key_len, offset, length


def frame_key(raw: bytes) -> str:
    """A frame's transfer id; ``INVALID_FRAME`` unless it is a well-formed id."""
    try:
        key = raw.decode("ascii")
    except UnicodeDecodeError:
        key = ""
    if not _ID.fullmatch(key):
        raise TransferError("INVALID_FRAME", "frame id is not a transfer id")
    return key


def parse_frame(message: bytes) -> tuple[str, int, bytes]:
    """A frame sent as one message (a relay or WebRTC lane): ``(transfer id, offset,
    data)``; ``INVALID_FRAME`` unless header, id and data agree."""
    if len(message) < FRAME.size:
        raise TransferError("INVALID_FRAME", f"a message of {len(message)} bytes is no frame")
    key_len, offset, length = read_frame_header(message[: FRAME.size])
    key = frame_key(message[FRAME.size : FRAME.size + key_len])
    data = message[FRAME.size + key_len :]
    if len(data) != length:
        raise TransferError("INVALID_FRAME", f"frame says {length} bytes, holds {len(data)}")
    return key, offset, data


def position(sizes: Sequence[int], offset: int) -> tuple[int, int]:
    """``(file index, offset in it)`` where ``offset`` of all files together falls.

    An offset at the very end is ``(len(sizes), 0)``; ``INVALID_OFFSET`` past it.
    """
    if offset < 0:
        raise TransferError("INVALID_OFFSET", f"offset {offset} is negative")
    for index, size in enumerate(sizes):
        if offset < size:
            return index, offset
        offset -= size
    if offset:
        raise TransferError("INVALID_OFFSET", "offset past the end of the transfer")
    return len(sizes), 0


def encode_chunk(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_chunk(data: str) -> bytes:
    """A chunk's bytes; ``INVALID_CHUNK`` if it is not base64 or holds over one chunk."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise TransferError("INVALID_CHUNK", "chunk data is not valid base64") from None
    if len(raw) > CHUNK_BYTES:
        raise TransferError("INVALID_CHUNK", f"chunk is over {CHUNK_BYTES} bytes")
    return raw


def pieces(block: bytes) -> Iterator[bytes]:
    """``block`` cut into chunk-sized pieces, in order."""
    for start in range(0, len(block), CHUNK_BYTES):
        yield block[start : start + CHUNK_BYTES]


def safe_name(name: str, default: str) -> str:
    """``name`` as a plain file name a message may carry (``default`` if nothing is left).

    Letters of any script, spaces, commas and ``#`` stay; path separators and control
    or format characters become ``_``; leading ``.``, ``-`` and spaces and trailing
    spaces go (never hidden, never an option); it is cut to 255 UTF-8 bytes at a
    character boundary. The result always passes :func:`~sleap_rtc.protocol.names.is_plain_name`.
    """
    cleaned = "".join(c if name_char_ok(c) else "_" for c in name).lstrip(".- ").rstrip(" ")
    encoded = cleaned.encode("utf-8", "surrogatepass")
    if len(encoded) > MAX_NAME_BYTES:
        cleaned = encoded[:MAX_NAME_BYTES].decode("utf-8", "ignore").rstrip(" ")
    return cleaned if is_plain_name(cleaned) else default


def safe_parts(relative: str) -> tuple[str, ...]:
    """The parts of a relative path a peer sent; ``INVALID_NAME`` if it could leave its folder.

    Refused: an empty or absolute path, ``..``, backslashes, and control or format
    characters (NUL among them). The caller still joins the parts under its own folder
    and checks the result stays inside (a link on its disk is its business).
    """
    path = PurePosixPath(relative)
    parts = path.parts
    if (
        not parts
        or path.is_absolute()
        or ".." in parts
        or not all(name_char_ok(c) for c in relative if c != "/")
    ):
        raise TransferError("INVALID_NAME", f"{relative[:200]!r} is not a safe relative name")
    return parts


class WindowSender:
    """How far a sender may go: ``sent`` bytes handed to the channel, ``acked`` confirmed.

    Invariant: ``acked <= sent``, and neither ever decreases. :meth:`take` is called
    before a chunk is sent, so an acknowledgement can never outrun what was sent.
    """

    def __init__(self, window: int = TRANSFER_WINDOW) -> None:
        self.window = window
        self.sent = 0
        self.acked = 0

    @property
    def blocked(self) -> bool:
        """True while a full window is unacknowledged: wait for an ack before sending."""
        return self.sent - self.acked >= self.window

    def take(self, size: int) -> int:
        """Count ``size`` more bytes as sent; returns the transfer offset they start at.

        Raises RuntimeError while :attr:`blocked` (a bug in the caller, not the peer).
        """
        if self.blocked:
            raise RuntimeError("the transfer window is full; wait for an acknowledgement")
        start = self.sent
        self.sent += size
        return start

    def ack(self, received: int) -> None:
        """Take the peer's count of bytes received.

        ``INVALID_ACK`` when it claims more than was sent or less than it said before:
        either is a broken or lying peer, and the window is left as it was.
        """
        if received > self.sent:
            raise TransferError(
                "INVALID_ACK",
                f"acknowledged {received:,} bytes, but only {self.sent:,} were sent",
            )
        if received < self.acked:
            raise TransferError(
                "INVALID_ACK",
                f"acknowledged {received:,} bytes after acknowledging {self.acked:,}",
            )
        self.acked = received


class Receiver:
    """The files of one transfer arriving in order, each checked against what was announced.

    ``files`` are the announced ``(size, sha256)`` pairs; chunks name a file by its
    index. Acknowledgements count the bytes of all files together.
    """

    def __init__(self, files: Sequence[tuple[int, str]], *, ack_every: int = ACK_EVERY) -> None:
        self.files = list(files)
        self.ack_every = ack_every
        self.written = [0] * len(self.files)
        self.received = 0
        self.acked = 0
        self._hashers = [hashlib.sha256() for _ in self.files]

    @property
    def total(self) -> int:
        return sum(size for size, _ in self.files)

    def take(self, index: int, offset: int, data: str) -> tuple[bytes, int | None]:
        """Check one chunk; returns its bytes and the count to acknowledge when one is due.

        ``INVALID_CHUNK`` for a chunk of no file, at the wrong offset, past the
        announced size, or not base64 of at most one chunk.
        """
        if not 0 <= index < len(self.files):
            raise TransferError("INVALID_CHUNK", f"chunk for file {index}, which was not announced")
        if offset != self.written[index]:
            raise TransferError(
                "INVALID_CHUNK", f"chunk at offset {offset}, expected {self.written[index]}"
            )
        raw = decode_chunk(data)
        if self.written[index] + len(raw) > self.files[index][0]:
            raise TransferError("INVALID_CHUNK", "more bytes than the transfer announced")
        self._add(index, raw)
        if self.received - self.acked >= self.ack_every:
            self.acked = self.received
            return raw, self.received
        return raw, None

    def take_at(self, offset: int, raw: bytes | memoryview) -> list[tuple[int, memoryview]]:
        """Check a frame at ``offset`` of all files together; the pieces to write, per file.

        ``INVALID_FRAME`` unless it starts where the bytes received so far end and stays
        within the sizes announced. A frame may run on from one file into the next.
        """
        if offset != self.received:
            raise TransferError(
                "INVALID_FRAME", f"frame at offset {offset:,}, expected {self.received:,}"
            )
        if self.received + len(raw) > self.total:
            raise TransferError("INVALID_FRAME", "more bytes than the transfer announced")
        view = memoryview(raw)
        out: list[tuple[int, memoryview]] = []
        index = 0
        while view:
            while self.written[index] >= self.files[index][0]:
                index += 1
            room = self.files[index][0] - self.written[index]
            piece, view = view[:room], view[room:]
            self._add(index, piece)
            out.append((index, piece))
        return out

    @property
    def complete(self) -> bool:
        """True once every announced byte arrived (they are checked by :meth:`check`)."""
        return self.received == self.total

    def _add(self, index: int, raw: bytes | memoryview) -> None:
        self._hashers[index].update(raw)
        self.written[index] += len(raw)
        self.received += len(raw)

    def check(self) -> None:
        """``INCOMPLETE`` or ``HASH_MISMATCH`` unless every file arrived whole."""
        for index, (size, sha256) in enumerate(self.files):
            if self.written[index] != size:
                raise TransferError("INCOMPLETE", f"got {self.written[index]:,} of {size:,} bytes")
            if self._hashers[index].hexdigest() != sha256:
                raise TransferError("HASH_MISMATCH", "the file's SHA-256 differs from the one sent")
