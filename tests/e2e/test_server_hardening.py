"""What a hostile member of a room can't do: against a real server (and a real worker).

Simulated workers and clients speak the WebSocket protocol directly, as such a
member would. The server-only tests run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sleap_rtc.client import ServerClient
from sleap_rtc.protocol import jobs as p
from sleap_rtc.transport.envelope import Data, Open
from sleap_rtc.transport.relay import ServerSocket, new_channel_id
from tests.servers import (
    PASSWORD,
    Room,
    ServerFactory,
    client_for,
    open_room,
    recv,
    register_raw,
    room_with_two_members,
    sleap_rtc,
    user_socket,
    wait_for,
    ws_url,
)

pytestmark = pytest.mark.slow


async def closed_code(ws: ClientConnection, timeout: float = 10) -> int | None:
    """The close code the server ends ``ws`` with (messages before it are skipped)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await recv(ws, timeout)
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


async def ping(ws: ClientConnection, nonce: str) -> None:
    """Ping over ``ws`` and wait for the pong (skipping anything queued before it)."""
    await ws.send(json.dumps({"type": "ping", "v": 1, "nonce": nonce}))
    while (await recv(ws))["type"] != "pong":
        pass


# -- workers ----------------------------------------------------------------------------------


async def test_a_worker_id_belongs_to_the_key_that_first_registered_it(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory()
    alice, bob = await room_with_two_members(server, tmp_path)
    alice_key = (await alice.create_key("lab", "lab-gpu")).secret
    bob_key = (await bob.create_key("lab", "bob-box")).secret
    worker, answer = await register_raw(server, alice_key, "w-lab")
    assert answer["type"] == "registered"

    # bob registers alice's worker id with his own key: refused, clearly, and closed.
    impostor, refused = await register_raw(server, bob_key, "w-lab")
    assert (refused["type"], refused["code"]) == ("error", "WORKER_ID_TAKEN")
    assert "'w-lab'" in refused["message"] and "worker_id file" in refused["message"]
    assert await closed_code(impostor) == 4403

    # alice's worker is undisturbed: still connected, and alice's messages reach it.
    await ping(worker, "still-here")
    alice_ws, _ = await user_socket(server, alice)
    await alice_ws.send(
        json.dumps({"type": "relay", "room": "lab", "to": "w-lab", "payload": {"n": 1}})
    )
    delivered = await recv(worker)
    assert (delivered["sender"]["name"], delivered["payload"]) == ("alice", {"n": 1})
    listed = await alice.workers("lab")
    assert [(w.id, w.name, w.status) for w in listed] == [("w-lab", "w-lab", "online")]

    # Offline, the id still isn't bob's to take.
    await worker.close()
    for _ in range(100):
        if [w.status for w in await alice.workers("lab")] == ["offline"]:
            break
        await asyncio.sleep(0.1)
    assert [w.status for w in await alice.workers("lab")] == ["offline"]
    impostor, refused = await register_raw(server, bob_key, "w-lab")
    assert refused["code"] == "WORKER_ID_TAKEN"
    await impostor.close()

    # The same key reconnecting replaces its old connection.
    first, answer = await register_raw(server, alice_key, "w-lab")
    assert answer["type"] == "registered"
    second, answer = await register_raw(server, alice_key, "w-lab")
    assert answer["type"] == "registered"
    assert await closed_code(first) == 4409
    await ping(second, "replaced")
    # bob's key registers ids of its own as usual.
    own, answer = await register_raw(server, bob_key, "w-bob")
    assert answer["type"] == "registered"
    for ws in (alice_ws, second, own):
        await ws.close()
    await alice.aclose()
    await bob.aclose()


async def test_a_relay_flood_slows_the_sender_and_the_worker_keeps_serving(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory("--heartbeat-interval", "5", "--heartbeat-timeout", "120")
    alice, bob = await room_with_two_members(server, tmp_path)
    key = (await alice.create_key("lab")).secret
    worker, answer = await register_raw(server, key, "w1")
    assert answer["type"] == "registered"
    bob_ws, _ = await user_socket(server, bob)
    alice_ws, _ = await user_socket(server, alice)

    # bob floods the worker with large relays while it is busy (not reading).
    flood = json.dumps(
        {"type": "relay", "room": "lab", "to": "w1", "payload": {"blob": "x" * 58_000}}
    )

    async def flooding() -> None:
        with contextlib.suppress(ConnectionClosed):
            for _ in range(3000):
                await bob_ws.send(flood)

    task = asyncio.create_task(flooding())
    try:
        # bob is told his messages are dropped; the worker is not disconnected for them.
        told = await recv(bob_ws, timeout=60)
        assert (told["type"], told["code"], told.get("peer")) == ("error", "PEER_BUSY", "w1")
        # alice still gets through: her message is queued behind bob's share of the queue.
        await alice_ws.send(
            json.dumps({"type": "relay", "room": "lab", "to": "w1", "payload": {"from": "alice"}})
        )
        from_bob = 0
        while True:
            delivered = await recv(worker, timeout=30)
            if delivered["sender"]["name"] == "alice":
                assert delivered["payload"] == {"from": "alice"}
                break
            from_bob += 1
        assert from_bob > 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await ping(worker, "alive")
    assert [w.status for w in await alice.workers("lab")] == ["online"]
    for ws in (worker, bob_ws, alice_ws):
        await ws.close()
    await alice.aclose()
    await bob.aclose()


# -- HTTP -------------------------------------------------------------------------------------


async def test_oversized_http_bodies_are_refused_before_parsing(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory()
    alice = await client_for(server, tmp_path, "alice")
    auth = {"authorization": f"Bearer {await alice.access_token()}"}
    big = b'{"username": "' + b"a" * (2 * 1024 * 1024) + b'", "password": "x"}'

    async def chunked() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(64):
            yield b"x" * 32768
        yield b'"}'

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as raw:
        answer = await raw.post(
            "/v1/auth/login", content=big, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "TOO_LARGE"
        assert "limit of 1048576 bytes" in answer.json()["error"]["message"]
        # Without a Content-Length (chunked), the same.
        answer = await raw.post("/v1/rooms", content=chunked(), headers=auth)
        assert answer.status_code == 413 and answer.json()["error"]["code"] == "TOO_LARGE"
        # Bodies under the limit are served as before.
        answer = await raw.post("/v1/rooms", json={"name": "lab"}, headers=auth)
        assert answer.status_code == 201
        assert (await raw.get("/health")).status_code == 200
    await alice.aclose()


# -- accounts ---------------------------------------------------------------------------------


async def test_parallel_login_guesses_get_no_more_tries_than_the_limit(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory("--login-failures-per-minute", "5")
    server.add_user("alice")
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as raw:
        answers = await asyncio.gather(
            *(
                raw.post("/v1/auth/login", json={"username": "alice", "password": f"guess-{i}"})
                for i in range(40)
            )
        )
    codes = [a.status_code for a in answers]
    assert codes.count(401) <= 5, codes
    assert set(codes) <= {401, 429} and codes.count(429) >= 35
    assert all(a.headers.get("retry-after") for a in answers if a.status_code == 429)


async def test_failed_logins_behind_a_shared_address_dont_lock_out_everyone(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory("--login-failures-per-minute", "3")
    server.add_user("bob")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as raw:
        # Someone behind the same address fails, up to the limit, on six accounts.
        for name in ("alice", "carol", "dave", "erin", "frank", "grace"):
            for _ in range(3):
                answer = await raw.post(
                    "/v1/auth/login", json={"username": name, "password": "wrong password"}
                )
                assert answer.status_code == 401, answer.text
            answer = await raw.post(
                "/v1/auth/login", json={"username": name, "password": "wrong password"}
            )
            assert answer.status_code == 429
        # bob, behind the same address, logs in with his password.
        answer = await raw.post("/v1/auth/login", json={"username": "bob", "password": PASSWORD})
        assert answer.status_code == 200, answer.text


async def test_logout_ends_the_access_token_at_once(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory()
    alice = await client_for(server, tmp_path, "alice")
    token = await alice.access_token()
    # alice is logged in on a second machine too; that session is not ended.
    laptop = ServerClient(server.url, store=alice.store.__class__(tmp_path / "laptop.json"))
    await laptop.login("alice", PASSWORD)
    live, _ = await user_socket(server, alice)
    auth = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url) as raw:
        assert (await raw.get("/v1/me", headers=auth)).status_code == 200
        assert await alice.logout()
        answer = await raw.get("/v1/me", headers=auth)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "SESSION_ENDED"
        assert (await raw.get("/v1/rooms", headers=auth)).status_code == 401
    # The open WebSocket of that session is closed; a new one is refused.
    assert await closed_code(live) == 4401
    ws = await connect(
        ws_url(server, "/v1/client"), additional_headers={"Authorization": f"Bearer {token}"}
    )
    assert (await recv(ws))["code"] == "SESSION_ENDED"
    assert await closed_code(ws) == 4401
    # The other session goes on.
    assert (await laptop.whoami()).username == "alice"
    await alice.aclose()
    await laptop.aclose()


async def test_names_with_control_characters_are_refused(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory()
    alice = await client_for(server, tmp_path, "alice")
    await alice.create_room("lab")
    auth = {"authorization": f"Bearer {await alice.access_token()}"}
    async with httpx.AsyncClient(base_url=server.url) as raw:
        for name in ("gpu\n1", "\x1b[31mred", "tab\there", "line\u2028break", " "):
            answer = await raw.post("/v1/rooms/lab/keys", json={"name": name}, headers=auth)
            assert answer.status_code == 422, (name, answer.text)
            assert "key name" in answer.json()["error"]["message"]
        for name in ("lab\n", "lab\r\nx", "\x00lab"):
            answer = await raw.post("/v1/rooms", json={"name": name}, headers=auth)
            assert answer.status_code == 422, (name, answer.text)
            assert "name" in answer.json()["error"]["message"]
        # Printable names are fine.
        answer = await raw.post("/v1/rooms/lab/keys", json={"name": "lab gpu 1"}, headers=auth)
        assert answer.status_code == 201
    key = (await alice.create_key("lab")).secret
    for name in ("evil\nname", "\x1b]0;title\x07", "zero\u200bwidth"):
        ws, refused = await register_raw(server, key, "w1", name=name)
        assert (refused["type"], refused["code"]) == ("error", "INVALID_MESSAGE"), name
        assert "capabilities.name" in refused["message"]
        await ws.close()
    for name in ("eve\n", "eve\nmallory", "eve\x1b"):
        made = sleap_rtc(
            server.home,
            "server",
            "add-user",
            name,
            "--password-stdin",
            "--database-url",
            server.database_url,
            input=PASSWORD + "\n",
        )
        assert made.returncode == 1 and "user name" in made.stderr, (name, made.stderr)
    await alice.aclose()


def test_server_data_folder_and_database_are_private(tmp_path: Path) -> None:
    def add_user(data_dir: Path, name: str) -> None:
        made = sleap_rtc(
            tmp_path / "home",
            "server",
            "add-user",
            name,
            "--password-stdin",
            "--data-dir",
            str(data_dir),
            input=PASSWORD + "\n",
        )
        assert made.returncode == 0, made.stderr

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    fresh = tmp_path / "fresh" / "server"
    add_user(fresh, "alice")
    assert mode(fresh) == 0o700
    assert mode(fresh / "server.db") == 0o600
    # A folder and a database left readable by others are made private.
    loose = tmp_path / "loose"
    add_user(loose, "alice")
    loose.chmod(0o755)
    (loose / "server.db").chmod(0o644)
    add_user(loose, "bob")
    assert mode(loose) == 0o700
    assert mode(loose / "server.db") == 0o600


async def test_peer_text_cant_forge_server_log_lines(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    from sqlalchemy.orm import Session

    from sleap_rtc.server import auth, db
    from sleap_rtc.server.models import User

    server = server_factory()
    alice = await client_for(server, tmp_path, "alice")
    await alice.create_room("lab")
    key = (await alice.create_key("lab")).secret
    forged = "2030-01-01 00:00:00,000 INFO sleap_rtc.server: FORGED"
    # An account whose name has a line break (as one made before names were checked).
    engine = db.create_engine(server.database_url)
    with Session(engine) as session:
        session.add(User(username=f"eve\n{forged}", password_hash=auth.hash_password(PASSWORD)))
        session.commit()
    engine.dispose()
    async with httpx.AsyncClient(base_url=server.url) as raw:
        answer = await raw.post(
            "/v1/auth/login", json={"username": f"eve\n{forged}", "password": PASSWORD}
        )
        assert answer.status_code == 200
    ws, _ = await register_raw(server, key, "w1", name=f"w\n{forged}")
    await ws.close()
    assert server.proc is not None
    proc = server.proc
    wait_for(
        lambda: any("login: eve" in line for line in proc.stderr),
        10,
        "the login to be logged",
    )
    # One line, the peer's text escaped; nothing that starts like a line of the server's own.
    assert not [line for line in proc.stderr if line.startswith("2030-01-01")], proc.output()
    assert any(f"login: eve\\n{forged} from" in line for line in proc.stderr)
    await alice.aclose()


# -- tickets, against a real worker -------------------------------------------------------------


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    data = tmp_path_factory.mktemp("data")
    (data / "models").mkdir()
    with open_room(tmp_path_factory.mktemp("hardening"), data) as opened:
        yield opened


class _Relay:
    """Channels relayed through one user's server socket, read as raw envelopes."""

    def __init__(self, socket: ServerSocket, worker_id: str) -> None:
        self.socket = socket
        self.worker_id = worker_id
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def hello(self, ticket: str) -> dict[str, Any]:
        """Open a channel and say HELLO with ``ticket``; the worker's answer."""
        ch = new_channel_id()
        self.socket.subscribe(
            ch, lambda sender, payload: self.inbox.put_nowait(payload), lambda c, m: None
        )
        await self.socket.relay("lab", self.worker_id, Open(ch=ch, transport="relay").model_dump())
        hello = {"type": "HELLO", "v": 1, "ticket": ticket}
        await self.socket.relay("lab", self.worker_id, Data(ch=ch, msg=hello).model_dump())
        payload = await asyncio.wait_for(self.inbox.get(), 30)
        return dict(payload["msg"])


async def _hello_over_webrtc(socket: ServerSocket, worker_id: str, ticket: str) -> Any:
    from sleap_rtc.client.connect import open_webrtc

    channel = await open_webrtc(socket, "lab", worker_id, 30, ())
    try:
        await channel.send(p.encode(p.Hello(ticket=ticket)))
        return p.decode_worker(await asyncio.wait_for(channel.recv(), 30))
    finally:
        await channel.close("done")


@pytest.mark.usefixtures("loopback_candidates")
async def test_a_ticket_opens_one_channel_for_the_user_it_was_issued_to(room: Room) -> None:
    async with room.client("alice") as alice, room.client("bob") as bob:
        alice_socket = await ServerSocket(
            alice.websocket_url("/v1/client"), await alice.access_token()
        ).connect()
        bob_socket = await ServerSocket(
            bob.websocket_url("/v1/client"), await bob.access_token()
        ).connect()
        try:
            # bob, a member of the room, copies a ticket alice was issued.
            stolen = (await alice.ticket("lab", room.worker_id)).ticket
            answer = await _Relay(bob_socket, room.worker_id).hello(stolen)
            assert (answer["type"], answer["code"]) == ("ERROR", "UNAUTHORIZED")
            assert "another user" in answer["message"]
            # Over WebRTC too: the server stamps bob's session on the offer.
            refused = await _hello_over_webrtc(bob_socket, room.worker_id, stolen)
            assert isinstance(refused, p.Error), refused
            assert refused.code == "UNAUTHORIZED" and "another user" in refused.message

            # For alice it opens one channel, once.
            relay = _Relay(alice_socket, room.worker_id)
            welcome = await relay.hello(stolen)
            assert (welcome["type"], welcome["user"]) == ("WELCOME", "alice")
            again = await relay.hello(stolen)
            assert (again["type"], again["code"]) == ("ERROR", "UNAUTHORIZED")
            assert "already used" in again["message"]

            # Over WebRTC the same: a fresh ticket once, then never again.
            fresh = (await alice.ticket("lab", room.worker_id)).ticket
            welcomed = await _hello_over_webrtc(alice_socket, room.worker_id, fresh)
            assert isinstance(welcomed, p.Welcome) and welcomed.user == "alice"
            replayed = await _hello_over_webrtc(alice_socket, room.worker_id, fresh)
            assert isinstance(replayed, p.Error) and "already used" in replayed.message
        finally:
            await alice_socket.close()
            await bob_socket.close()
    assert room.worker.process.poll() is None
