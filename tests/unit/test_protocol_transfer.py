"""Transfer state with no I/O: windows, acknowledgements, chunk checks, hashes and names."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sleap_rtc.jobs.digest import sha256_of
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.names import is_plain_name
from sleap_rtc.protocol.transfer import (
    Receiver,
    TransferError,
    WindowSender,
    decode_chunk,
    encode_chunk,
    pieces,
    safe_name,
    safe_parts,
)


def _code(call: object, *args: object) -> str:
    with pytest.raises(TransferError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value.code


def test_a_sender_stops_at_a_full_window_and_an_ack_opens_it() -> None:
    window = WindowSender(window=100)
    assert window.take(60) == 0 and window.take(40) == 60
    assert window.blocked
    with pytest.raises(RuntimeError):
        window.take(1)
    window.ack(50)
    assert not window.blocked and window.take(50) == 100


def test_an_ack_beyond_what_was_sent_or_going_back_is_refused_and_changes_nothing() -> None:
    window = WindowSender(window=100)
    window.take(100)
    window.ack(60)
    assert _code(window.ack, 101) == "INVALID_ACK"
    assert _code(window.ack, 59) == "INVALID_ACK"
    assert (window.sent, window.acked) == (100, 60)
    window.ack(60)  # the same count again is no lie
    window.ack(100)
    assert window.acked == 100


def test_a_file_crosses_with_acks_and_arrives_whole() -> None:
    data = os.urandom(3 * p.ACK_EVERY + 7 * p.CHUNK_BYTES + 17)
    receiver = Receiver([(len(data), hashlib.sha256(data).hexdigest())])
    window = WindowSender()
    landed = bytearray()
    acks = []
    for piece in pieces(data):
        while window.blocked:
            window.ack(acks[-1])
        offset = window.take(len(piece))
        raw, ack = receiver.take(0, offset, encode_chunk(piece))
        landed += raw
        if ack is not None:
            acks.append(ack)
            window.ack(ack)
    receiver.check()
    assert bytes(landed) == data
    # One acknowledgement per ACK_EVERY bytes, at the chunk that crosses the mark.
    assert len(acks) == 3 and all(
        b - a >= p.ACK_EVERY for a, b in zip([0, *acks[:-1]], acks, strict=True)
    )
    assert all(ack % p.CHUNK_BYTES == 0 for ack in acks)
    assert receiver.total == receiver.received == len(data)


def test_a_receiver_refuses_chunks_out_of_place() -> None:
    receiver = Receiver([(4, hashlib.sha256(b"abcd").hexdigest()), (0, "0" * 64)])
    assert _code(receiver.take, 0, 1, encode_chunk(b"a")) == "INVALID_CHUNK"
    assert _code(receiver.take, 2, 0, encode_chunk(b"a")) == "INVALID_CHUNK"
    assert _code(receiver.take, -1, 0, encode_chunk(b"a")) == "INVALID_CHUNK"
    assert _code(receiver.take, 0, 0, "@@@@") == "INVALID_CHUNK"
    assert _code(receiver.take, 1, 0, encode_chunk(b"x")) == "INVALID_CHUNK"  # past its size
    receiver.take(0, 0, encode_chunk(b"ab"))
    assert _code(receiver.check) == "INCOMPLETE"
    receiver.take(0, 2, encode_chunk(b"cd"))
    assert _code(receiver.take, 0, 4, encode_chunk(b"e")) == "INVALID_CHUNK"
    assert _code(receiver.check) == "HASH_MISMATCH"  # the empty file's digest is wrong


def test_decode_chunk_limits_the_size() -> None:
    assert decode_chunk(encode_chunk(b"x" * p.CHUNK_BYTES)) == b"x" * p.CHUNK_BYTES
    assert _code(decode_chunk, encode_chunk(b"x" * (p.CHUNK_BYTES + 1))) == "INVALID_CHUNK"
    assert [len(x) for x in pieces(b"y" * (2 * p.CHUNK_BYTES + 1))] == [
        p.CHUNK_BYTES,
        p.CHUNK_BYTES,
        1,
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("labels.slp", "labels.slp"),
        ("données (v2).slp", "données (v2).slp"),
        ("r_preds, v1 #2.slp", "r_preds, v1 #2.slp"),
        ("x\u202egnp.exe", "x_gnp.exe"),
        ("tab\there.slp", "tab_here.slp"),
        (" name.slp ", "name.slp"),
        ("..hidden", "hidden"),
        ("-rf", "rf"),
        ("a/b\\c", "a_b_c"),
        ("...", "upload"),
        ("", "upload"),
    ],
)
def test_safe_name(name: str, expected: str) -> None:
    assert safe_name(name, "upload") == expected


@given(st.text(max_size=400))
def test_a_safe_name_is_always_a_name_the_protocol_carries(name: str) -> None:
    cleaned = safe_name(name, "download")
    assert is_plain_name(cleaned) and len(cleaned.encode("utf-8", "surrogatepass")) <= 255
    p.UploadBegin(upload_id="u", name=cleaned, size=0, sha256="0" * 64)


@pytest.mark.parametrize(
    "relative", ["", "/etc/passwd", "../x", "a/../../x", "a\\b", "a\0b", "a/b\nc", "x\u202ey"]
)
def test_safe_parts_refuses_names_that_leave_their_folder(relative: str) -> None:
    assert _code(safe_parts, relative) == "INVALID_NAME"


def test_safe_parts_splits_a_relative_name() -> None:
    assert safe_parts("model/best.ckpt") == ("model", "best.ckpt")


def test_sha256_of_a_file(tmp_path: Path) -> None:
    data = os.urandom((1 << 20) + 5)
    (tmp_path / "f").write_bytes(data)
    assert sha256_of(tmp_path / "f") == hashlib.sha256(data).hexdigest()
