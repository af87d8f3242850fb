"""A real server and worker for the hostile-peer suite, and a peer that speaks raw JSON.

One room serves the whole suite: one ``sleap-rtc server`` and one ``sleap-rtc worker``
process, stopped when the run ends (also on failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sleap_rtc.protocol.session import REPLIES
from tests.configs import MODEL_CONFIG
from tests.servers import Room, open_room

pytest.importorskip("sleap_nn", reason="the hostile-peer suite runs a real worker")

#: The wire names of every request (each carries a ``request_id``).
REQUEST_TYPES = {kind.model_fields["type"].default for kind in REPLIES}


@dataclass
class Layout:
    """Where things are on the worker's machine, as an attacker would guess them."""

    root: Path
    data: Path  # the worker's only configured mount (label "data")
    outside: Path  # next to the mount, never shared
    worker_home: Path

    @property
    def state(self) -> Path:
        return self.worker_home / "data" / "worker"

    @property
    def uploads(self) -> Path:
        return self.state / "uploads"


@pytest.fixture(scope="session")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    root = tmp_path_factory.mktemp("hostile")
    data, outside = root / "data", root / "outside"
    data.mkdir()
    outside.mkdir()
    (outside / "secret.slp").write_bytes(b"SECRET-LABELS")
    (outside / "secret.ckpt").write_bytes(b"SECRET-CKPT")
    (outside / "cfg.yaml").write_text("data_config: {}\n" + MODEL_CONFIG + "trainer_config: {}\n")
    (data / "link_out").symlink_to(outside)
    (data / "public.txt").write_text("public\n")
    return Layout(root=root, data=data, outside=outside, worker_home=root / "worker-home")


@pytest.fixture(scope="session")
def hostile_room(layout: Layout) -> Iterator[Room]:
    with open_room(layout.root, layout.data) as room:
        yield room


@pytest.fixture(scope="session", autouse=True)
def _loopback_only() -> Iterator[None]:
    from sleap_rtc.transport.webrtc import pin_host_addresses

    pin_host_addresses(["127.0.0.1"])
    yield
    pin_host_addresses(None)


class RawPeer:
    """A member's channel to the worker, speaking the job protocol as raw JSON.

    It does what the real client does to connect (ticket, WebSocket, relay or WebRTC
    channel, HELLO) and then sends whatever a test writes; a request written without a
    ``request_id`` gets a fresh one, as the real client always sends one.
    """

    def __init__(self, channel: Any, socket: Any, server: Any) -> None:
        self.channel = channel
        self.socket = socket
        self.server = server
        self.welcome: dict[str, Any] | None = None
        self._requests = 0

    @classmethod
    async def open(
        cls,
        room: Room,
        user: str = "alice",
        *,
        transport: str = "relay",
        ticket: str | None = None,
    ) -> RawPeer:
        from sleap_rtc.client.connect import open_webrtc
        from sleap_rtc.transport.relay import ClientRelayChannel, ServerSocket

        server = room.client(user)
        await server.__aenter__()
        if ticket is None:
            ticket = (await server.ticket("lab", room.worker_id)).ticket
        socket = ServerSocket(server.websocket_url("/v1/client"), await server.access_token())
        await socket.connect()
        if transport == "webrtc":
            channel = await open_webrtc(socket, "lab", room.worker_id, 10.0, [])
        else:
            channel = await ClientRelayChannel(socket, "lab", room.worker_id).open()
        peer = cls(channel, socket, server)
        await peer.send({"type": "HELLO", "ticket": ticket})
        peer.welcome = await peer.recv()
        return peer

    async def send(self, message: dict[str, Any] | str) -> None:
        if (
            isinstance(message, dict)
            and message.get("type") in REQUEST_TYPES
            and "request_id" not in message
        ):
            self._requests += 1
            message = {**message, "request_id": f"raw-{self._requests}"}
        await self.channel.send(message if isinstance(message, str) else json.dumps(message))

    async def recv(self, timeout: float = 30) -> dict[str, Any]:
        """The next message that is not a keepalive."""
        while True:
            raw = await asyncio.wait_for(self.channel.recv(), timeout)
            message: dict[str, Any] = json.loads(raw)
            if message.get("type") != "KEEPALIVE":
                return message

    async def request(
        self,
        message: dict[str, Any],
        until: Callable[[dict[str, Any]], bool],
        timeout: float = 30,
    ) -> dict[str, Any]:
        """Send ``message``; return the first reply ``until`` accepts (others are skipped)."""
        await self.send(message)
        async with asyncio.timeout(timeout):
            while True:
                reply = await self.recv(timeout)
                if until(reply):
                    return reply

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.channel.close("test done")
        with contextlib.suppress(Exception):
            await self.socket.close()
        with contextlib.suppress(Exception):
            await self.server.__aexit__(None, None, None)


@pytest.fixture
async def peer(hostile_room: Room) -> AsyncIterator[RawPeer]:
    opened = await RawPeer.open(hostile_room, "alice")
    assert opened.welcome and opened.welcome["type"] == "WELCOME", opened.welcome
    try:
        yield opened
    finally:
        await opened.close()
