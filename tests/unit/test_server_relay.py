"""Who may relay to whom, checked alone: the relay's rules over a real (SQLite) database.

No server process and no sockets: live connections are the hub's own objects,
whose outbound queues are never started, so what was forwarded is read back from them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from starlette.websockets import WebSocket

from sleap_rtc.protocol.signaling import Capabilities, Relay
from sleap_rtc.server import db
from sleap_rtc.server.hub import ClientConn, Connection, Hub, WorkerConn
from sleap_rtc.server.service import accounts, relay, rooms

PASSWORD = "correct horse battery"


@dataclass
class World:
    """Room ``lab`` owned by alice with worker ``w1`` online; bob is in no room."""

    database: db.Database
    hub: Hub
    worker: WorkerConn
    alice: ClientConn
    bob: ClientConn


def _conn() -> Connection:
    return Connection(cast(WebSocket, None), queue_limit=16)


def _client(session_id: str, user_id: int, name: str) -> ClientConn:
    expires = datetime.now(UTC) + timedelta(minutes=5)
    return ClientConn(_conn(), session_id, user_id, name, expires)


def _queued(conn: Connection) -> list[dict[str, Any]]:
    """What ``conn`` would have sent, oldest first (its writer never runs here)."""
    items = []
    while not conn._queue.empty():
        item = conn._queue.get_nowait()
        assert isinstance(item, tuple), item  # a message, not a close
        items.append(json.loads(item[0]))
    return items


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    engine = db.create_engine(db.sqlite_url(tmp_path))
    db.upgrade(engine)
    sessions = db.session_factory(engine)
    with sessions() as session:
        alice = accounts.create_user(session, "alice", PASSWORD)
        bob = accounts.create_user(session, "bob", PASSWORD)
        room, _ = rooms.create_room(session, alice.id, "lab", None)
        rooms.create_room(session, bob.id, "elsewhere", None)
    hub = Hub()
    worker = WorkerConn(_conn(), room.id, room.name, "w1", "key_1", Capabilities(name="gpu-1"))
    assert hub.add_worker(worker, 4000)
    world = World(
        db.Database(engine, sessions),
        hub,
        worker,
        _client("c-alice", alice.id, "alice"),
        _client("c-bob", bob.id, "bob"),
    )
    for client in (world.alice, world.bob):
        hub.add_client(client)
    try:
        yield world
    finally:
        engine.dispose()


async def test_a_member_reaches_the_worker_and_it_is_told_who_sent_it(world: World) -> None:
    message = Relay(to="w1", room="lab", payload={"hello": 1})
    assert await relay.worker_for_client(world.database, world.hub, world.alice, message) is (
        world.worker
    )
    await relay.from_client(world.database, world.hub, world.alice, message)
    (delivered,) = _queued(world.worker.conn)
    assert delivered["payload"] == {"hello": 1}
    assert delivered["sender"] == {
        "kind": "client",
        "id": "c-alice",
        "room": "lab",
        "name": "alice",
        "user_id": str(world.alice.user_id),
    }
    assert _queued(world.alice.conn) == []


async def test_a_room_of_someone_else_reads_as_one_that_does_not_exist(world: World) -> None:
    refusals = []
    for room in ("lab", "no-such-room"):
        with pytest.raises(relay.RelayRefused) as refused:
            await relay.worker_for_client(
                world.database, world.hub, world.bob, Relay(to="w1", room=room, payload={})
            )
        refusals.append((refused.value.notice.code, str(refused.value).replace(room, "ROOM")))
    assert refusals[0] == refusals[1]
    assert refusals[0][0] == "NOT_FOUND"
    # The sender is told, and nothing reaches the worker.
    await relay.from_client(
        world.database, world.hub, world.bob, Relay(to="w1", room="lab", payload={})
    )
    assert [m["code"] for m in _queued(world.bob.conn)] == ["NOT_FOUND"]
    assert _queued(world.worker.conn) == []


async def test_a_client_must_name_the_room_and_the_worker_must_be_online(world: World) -> None:
    with pytest.raises(relay.RelayRefused) as no_room:
        await relay.worker_for_client(
            world.database, world.hub, world.alice, Relay(to="w1", payload={})
        )
    assert no_room.value.notice.code == "INVALID_MESSAGE"
    with pytest.raises(relay.RelayRefused) as offline:
        await relay.worker_for_client(
            world.database, world.hub, world.alice, Relay(to="w2", room="lab", payload={})
        )
    assert (offline.value.notice.code, offline.value.notice.peer) == ("PEER_NOT_FOUND", "w2")


async def test_a_worker_reaches_only_sessions_of_its_room_members(world: World) -> None:
    database, hub, worker = world.database, world.hub, world.worker
    found = await relay.client_for_worker(database, hub, worker, Relay(to="c-alice", payload={}))
    assert found is world.alice
    for outsider in ("c-bob", "c-nobody"):
        with pytest.raises(relay.RelayRefused) as refused:
            await relay.client_for_worker(database, hub, worker, Relay(to=outsider, payload={}))
        assert (refused.value.notice.code, refused.value.notice.peer) == (
            "PEER_NOT_FOUND",
            outsider,
        )
    await relay.from_worker(database, hub, worker, Relay(to="c-alice", payload={"ok": True}))
    (delivered,) = _queued(world.alice.conn)
    sender = {"kind": "worker", "id": "w1", "room": "lab", "name": "gpu-1", "user_id": None}
    assert delivered["sender"] == sender


async def test_a_receiver_that_is_full_drops_the_message_and_the_sender_is_told(
    world: World,
) -> None:
    message = Relay(to="w1", room="lab", payload={})
    for _ in range(world.worker.conn.sender_limit + 3):
        await relay.from_client(world.database, world.hub, world.alice, message)
    assert len(_queued(world.worker.conn)) == world.worker.conn.sender_limit
    # One PEER_BUSY notice, however many were dropped within the second.
    notices = _queued(world.alice.conn)
    assert [(n["code"], n["peer"]) for n in notices] == [("PEER_BUSY", "w1")]
