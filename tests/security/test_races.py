"""Check-then-use races against a real worker: a file swapped for a link while it is served."""

from __future__ import annotations

import base64
import os
import threading
from typing import Any

import pytest

from tests.security.conftest import Layout, RawPeer

pytestmark = pytest.mark.slow


async def _download(peer: RawPeer, rid: str, path: str) -> tuple[str, bytes]:
    """('END', bytes) or ('ERROR:<code>', bytes so far)."""
    await peer.send({"type": "DOWNLOAD", "request_id": rid, "path": path})
    received = b""
    transfer: str | None = None
    while True:
        message: dict[str, Any] = await peer.recv()
        if message.get("request_id") == rid and message["type"] == "DOWNLOAD_BEGIN":
            transfer = message["transfer_id"]
        elif message.get("transfer_id") == transfer and message["type"] == "DOWNLOAD_CHUNK":
            received += base64.b64decode(message["data"])
        elif message.get("transfer_id") == transfer and message["type"] == "DOWNLOAD_END":
            return "END", received
        elif message["type"] == "ERROR" and (
            message.get("request_id") == rid
            or (transfer and message.get("transfer_id") == transfer)
        ):
            return f"ERROR:{message['code']}", received


async def test_a_file_swapped_for_a_link_never_sends_what_the_link_points_to(
    peer: RawPeer, layout: Layout
) -> None:
    secret = layout.outside / "secret.bin"
    secret.write_bytes(b"SECRET" * 20_000)
    race = layout.data / "race"
    race.mkdir()
    target = race / "file.bin"
    public = b"public" * 20_000
    target.write_bytes(public)
    stop = threading.Event()
    swaps = 0

    def swap() -> None:
        nonlocal swaps
        while not stop.is_set():
            link, plain = race / ".link", race / ".plain"
            link.unlink(missing_ok=True)
            link.symlink_to(secret)
            os.replace(link, target)
            plain.write_bytes(public)
            os.replace(plain, target)
            swaps += 1

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    outcomes: dict[str, int] = {}
    try:
        for index in range(40):
            path = str(target if index % 2 else race)  # the file, and its folder
            outcome, data = await _download(peer, f"race{index}", path)
            assert b"SECRET" not in data, f"download {index} sent the outside file"
            if outcome == "END":
                assert data in (public, b""), len(data)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    finally:
        stop.set()
        swapper.join(5)
    assert swaps > 40
    assert outcomes.get("END", 0) > 0, outcomes  # the race let some through, correctly
    pong = await peer.request({"type": "PING", "nonce": "r"}, lambda m: m["type"] == "PONG")
    assert pong["nonce"] == "r"
    print(f"{swaps} swaps, downloads: {outcomes}")
