"""Who may do what, and what hostile input does: against a real server process.

Simulated workers and clients here speak the WebSocket protocol directly, as a
hostile peer would. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sleap_rtc.client import ServerError
from tests.servers import (
    ServerFactory,
    ServerProcess,
    client_for,
    recv,
    register_raw,
    user_socket,
    ws_url,
)

pytestmark = pytest.mark.slow


async def test_authorization_matrix(server_factory: ServerFactory, tmp_path: Path) -> None:
    server: ServerProcess = server_factory()
    alice = await client_for(server, tmp_path, "alice")
    bob = await client_for(server, tmp_path, "bob")
    carol = await client_for(server, tmp_path, "carol")
    await alice.create_room("alice-lab")
    await bob.create_room("bob-lab")
    key = (await alice.create_key("alice-lab")).secret
    worker, answer = await register_raw(server, key, "w-alice")
    assert answer["type"] == "registered"

    # Another user's room is invisible: not listed, and every route says not found.
    assert [r.name for r in await bob.rooms()] == ["bob-lab"]
    for attempt in (
        bob.workers("alice-lab"),
        bob.room("alice-lab"),
        bob.keys("alice-lab"),
        bob.create_key("alice-lab"),
        bob.invite("alice-lab"),
        bob.delete_room("alice-lab"),
    ):
        with pytest.raises(ServerError) as caught:
            await attempt
        assert (caught.value.status, caught.value.code) == (404, "NOT_FOUND")
    # A name that exists and one that doesn't look the same to an outsider.
    with pytest.raises(ServerError) as missing:
        await bob.workers("no-such-room")
    assert "not found" in missing.value.message

    # bob can't reach alice's worker through the relay, by room or by id.
    bob_ws, _ = await user_socket(server, bob)
    await bob_ws.send(
        json.dumps({"type": "relay", "room": "alice-lab", "to": "w-alice", "payload": {"x": 1}})
    )
    assert (await recv(bob_ws))["code"] == "NOT_FOUND"
    await bob_ws.send(
        json.dumps({"type": "relay", "room": "bob-lab", "to": "w-alice", "payload": {"x": 1}})
    )
    assert (await recv(bob_ws))["code"] == "PEER_NOT_FOUND"

    # carol joins alice's room with an invite; the invite is single-use.
    invite = await alice.invite("alice-lab")
    joined = await carol.join(invite.code)
    assert (joined.name, joined.role, joined.members) == ("alice-lab", "member", 2)
    with pytest.raises(ServerError) as used:
        await bob.join(invite.code)
    assert used.value.code == "INVALID_INVITE"
    assert [w.id for w in await carol.workers("alice-lab")] == ["w-alice"]

    # A member's relay reaches the worker; the sender is what the server
    # authenticated, whatever the payload claims.
    carol_ws, carol_session = await user_socket(server, carol)
    forged = {"sender": {"kind": "worker", "name": "alice"}, "hello": 1}
    await carol_ws.send(
        json.dumps({"type": "relay", "room": "alice-lab", "to": "w-alice", "payload": forged})
    )
    delivered = await recv(worker)
    assert delivered["type"] == "relay"
    # The account's id comes too: workers hold tickets against it.
    assert delivered["sender"].pop("user_id").isdigit()
    assert delivered["sender"] == {
        "kind": "client",
        "id": carol_session,
        "room": "alice-lab",
        "name": "carol",
    }
    assert delivered["payload"] == forged
    # A forged sender outside the payload is refused, not believed.
    await carol_ws.send(
        json.dumps(
            {
                "type": "relay",
                "room": "alice-lab",
                "to": "w-alice",
                "payload": {},
                "sender": {"kind": "worker", "id": "x", "room": "alice-lab", "name": "alice"},
            }
        )
    )
    assert (await recv(carol_ws))["code"] == "INVALID_MESSAGE"

    # The worker answers carol; it can't reach bob (not in the room).
    await worker.send(json.dumps({"type": "relay", "to": carol_session, "payload": {"ok": True}}))
    reply = await recv(carol_ws)
    assert reply["sender"]["kind"] == "worker" and reply["sender"]["id"] == "w-alice"
    assert reply["payload"] == {"ok": True}
    _, bob_session = await user_socket(server, bob)
    await worker.send(json.dumps({"type": "relay", "to": bob_session, "payload": {"leak": 1}}))
    assert (await recv(worker))["code"] == "PEER_NOT_FOUND"

    # Members can't delete the room or invite; owners can.
    with pytest.raises(ServerError) as denied:
        await carol.delete_room("alice-lab")
    assert (denied.value.status, denied.value.code) == (403, "FORBIDDEN")
    with pytest.raises(ServerError):
        await carol.invite("alice-lab")

    # A revoked key can't register.
    listed = await alice.keys("alice-lab")
    await alice.revoke_key("alice-lab", listed[0].id)
    with pytest.raises(ConnectionClosed):
        await recv(worker)  # disconnected at once
    refused, answer = await register_raw(server, key, "w-alice")
    assert (answer["type"], answer["code"]) == ("error", "KEY_REVOKED")
    with pytest.raises(ConnectionClosed) as closed:
        await recv(refused)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

    # Deleting the room removes it for its members too.
    await alice.delete_room("alice-lab")
    assert await carol.rooms() == []
    for ws in (bob_ws, carol_ws):
        await ws.close()
    for client in (alice, bob, carol):
        await client.aclose()


async def test_expired_access_token_is_refused_and_refreshed(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server: ServerProcess = server_factory("--access-token-ttl", "2s")
    alice = await client_for(server, tmp_path, "alice")
    old = await alice.access_token()
    await asyncio.sleep(3)
    async with httpx.AsyncClient(base_url=server.url) as raw:
        answer = await raw.get("/v1/me", headers={"authorization": f"Bearer {old}"})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "TOKEN_EXPIRED"
    # The client refreshes by itself and the refresh token rotates.
    before = alice.session().refresh_token
    assert (await alice.whoami()).username == "alice"
    assert alice.session().refresh_token != before
    # The socket refuses an expired token too.
    ws = await connect(
        ws_url(server, "/v1/client"), additional_headers={"Authorization": f"Bearer {old}"}
    )
    assert (await recv(ws))["code"] == "TOKEN_EXPIRED"
    with pytest.raises(ConnectionClosed):
        await recv(ws)
    # A refresh token used twice ends every session of that user.
    async with httpx.AsyncClient(base_url=server.url) as raw:
        reuse = await raw.post("/v1/auth/refresh", json={"refresh_token": before})
        assert reuse.status_code == 401
        current = await raw.post(
            "/v1/auth/refresh", json={"refresh_token": alice.session().refresh_token}
        )
        assert current.status_code == 401
    await alice.aclose()


async def test_hostile_input_gets_errors_and_the_server_keeps_serving(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server: ServerProcess = server_factory()
    alice = await client_for(server, tmp_path, "alice")
    await alice.create_room("lab")
    key = (await alice.create_key("lab")).secret

    # No key, a bad key, a user token where a worker key belongs.
    for header in ({}, {"Authorization": "Bearer srk_nope"}, {"Authorization": "Basic x"}):
        ws = await connect(ws_url(server, "/v1/worker"), additional_headers=header)
        answer = await recv(ws)
        assert answer["type"] == "error" and answer["code"] in ("UNAUTHORIZED", "INVALID_KEY")
        with pytest.raises(ConnectionClosed):
            await recv(ws)

    # Something other than register first is refused.
    ws = await connect(
        ws_url(server, "/v1/worker"), additional_headers={"Authorization": f"Bearer {key}"}
    )
    await ws.send(json.dumps({"type": "heartbeat", "v": 1}))
    assert (await recv(ws))["code"] == "NOT_REGISTERED"

    worker, answer = await register_raw(server, key, "w1")
    assert answer["type"] == "registered"
    bad_inputs = [
        ("{not json", "MALFORMED"),
        ("[1, 2]", "MALFORMED"),
        (json.dumps({"type": "launch_missiles", "v": 1}), "UNKNOWN_TYPE"),
        (json.dumps({"type": "heartbeat", "v": 99}), "UNSUPPORTED_VERSION"),
        (json.dumps({"type": "heartbeat", "v": 1, "running_jobs": -5}), "INVALID_MESSAGE"),
        (
            json.dumps(
                {"type": "register", "v": 1, "worker_id": "w1", "capabilities": {"name": "x"}}
            ),
            "UNEXPECTED",
        ),
    ]
    for text, code in bad_inputs:
        await worker.send(text)
        answer = await recv(worker)
        assert (answer["type"], answer["code"]) == ("error", code), text
    # The connection survived all of that.
    await worker.send(json.dumps({"type": "ping", "v": 1, "nonce": "n1"}))
    assert await recv(worker) == {"type": "pong", "v": 1, "nonce": "n1"}
    assert [w.status for w in await alice.workers("lab")] == ["online"]

    # Over the size limit: the connection is closed cleanly (1009), nothing else breaks.
    await worker.send("x" * (200 * 1024))
    with pytest.raises(ConnectionClosed) as closed:
        await recv(worker)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    # A flood of bad messages ends the connection.
    flood, answer = await register_raw(server, key, "w2")
    assert answer["type"] == "registered"
    sent = 0
    with contextlib.suppress(ConnectionClosed):  # the server may hang up mid-flood
        for _ in range(25):
            await flood.send("nope")
            sent += 1
    assert sent >= 20  # it took at least its limit of bad messages first
    codes = []
    with pytest.raises(ConnectionClosed):
        while True:
            codes.append((await recv(flood))["code"])
    assert codes and set(codes) == {"MALFORMED"}

    # Bad HTTP bodies get a clear 4xx error, never a 500.
    async with httpx.AsyncClient(base_url=server.url) as raw:
        token = await alice.access_token()
        auth = {"authorization": f"Bearer {token}"}
        answer = await raw.post("/v1/rooms", content=b"{oops", headers=auth)
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "INVALID"
        answer = await raw.post("/v1/rooms", json={"name": "../etc"}, headers=auth)
        assert answer.status_code == 422 and "name" in answer.json()["error"]["message"]
        answer = await raw.post("/v1/rooms", json={"name": "x" * 65}, headers=auth)
        assert answer.status_code == 422
        answer = await raw.get("/v1/rooms", headers={"authorization": "Bearer garbage"})
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "INVALID_TOKEN"
        assert (await raw.get("/health")).status_code == 200
    # And the server still serves everyone.
    assert [r.name for r in await alice.rooms()] == ["lab"]
    await alice.aclose()
