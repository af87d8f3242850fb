"""A room's listing through a real server: it follows workers as they come and go,
and filters on the server. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.servers import ServerFactory, register_raw, room_with_two_members

pytestmark = pytest.mark.slow


async def test_the_listing_follows_workers_and_filters_on_the_server(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory()
    alice, _ = await room_with_two_members(server, tmp_path)
    key = (await alice.create_key("lab", "fleet")).secret
    first, _ = await register_raw(server, key, "w-a", "alpha")
    assert [(w.id, w.status) for w in await alice.workers("lab")] == [("w-a", "online")]
    # Registered after the room was first listed, and one that leaves: both shown right.
    second, answer = await register_raw(server, key, "w-b", "beta")
    assert answer["type"] == "registered"
    await first.close()
    want = [("w-b", "online"), ("w-a", "offline")]
    for _ in range(100):
        if [(w.id, w.status) for w in await alice.workers("lab")] == want:
            break
        await asyncio.sleep(0.1)
    assert [(w.id, w.status) for w in await alice.workers("lab")] == want
    offline = await alice.workers("lab", statuses=["offline"])
    assert [(w.id, w.name) for w in offline] == [("w-a", "alpha")]
    async with httpx.AsyncClient(base_url=server.url) as http:
        token = await alice.access_token()
        answer_ = await http.get(
            "/v1/rooms/lab/workers",
            params={"limit": 1},
            headers={"authorization": f"Bearer {token}"},
        )
    assert answer_.status_code == 200, answer_.text
    assert [w["id"] for w in answer_.json()] == ["w-b"]
    assert answer_.headers["x-total-count"] == "2"
    # A worker that re-registers (the same key) is online again, not listed twice.
    again, _ = await register_raw(server, key, "w-a", "alpha-2")
    listed = await alice.workers("lab")
    assert [(w.id, w.name, w.status) for w in listed] == [
        ("w-a", "alpha-2", "online"),
        ("w-b", "beta", "online"),
    ]
    for ws in (second, again):
        await ws.close()
    # The key was checked moments ago (and is trusted for a while): deleting the room
    # must still shut it out at once.
    await alice.delete_room("lab")
    refused, answer = await register_raw(server, key, "w-c")
    assert (answer["type"], answer["code"]) == ("error", "INVALID_KEY"), answer
    await refused.close()
    await alice.aclose()
