"""Tickets against a real worker over both transports: forged, replayed, someone else's."""

from __future__ import annotations

import base64
import json

import pytest

from tests.security.conftest import RawPeer
from tests.servers import Room

pytestmark = pytest.mark.slow


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def _hello(room: Room, user: str, transport: str, ticket: str) -> dict[str, object]:
    peer = await RawPeer.open(room, user, transport=transport, ticket=ticket)
    try:
        assert peer.welcome is not None
        return peer.welcome
    finally:
        await peer.close()


@pytest.mark.parametrize("transport", ["relay", "webrtc"])
async def test_only_a_fresh_ticket_of_ones_own_opens_a_channel(
    hostile_room: Room, transport: str
) -> None:
    async with hostile_room.client("alice") as alice:
        ticket = (await alice.ticket("lab", hostile_room.worker_id)).ticket
        spare = (await alice.ticket("lab", hostile_room.worker_id)).ticket
    header, claims, signature = ticket.split(".")
    forged_signature = signature[:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB")
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(decoded)}."
    cases = {
        "forged signature": ("alice", f"{header}.{claims}.{forged_signature}"),
        "alg none": ("alice", unsigned),
        "someone else's": ("bob", spare),
    }
    outcomes = {}
    for name, (user, token) in cases.items():
        reply = await _hello(hostile_room, user, transport, token)
        outcomes[name] = (reply.get("type"), reply.get("code"))
    first = await _hello(hostile_room, "alice", transport, ticket)
    replayed = await _hello(hostile_room, "alice", transport, ticket)
    assert first["type"] == "WELCOME" and first["user"] == "alice"
    outcomes["replayed"] = (replayed.get("type"), replayed.get("code"))
    assert outcomes == {name: ("ERROR", "UNAUTHORIZED") for name in [*cases, "replayed"]}
