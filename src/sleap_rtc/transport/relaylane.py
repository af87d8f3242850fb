"""The relay lane's ends: frames as binary WebSocket messages through the server.

:func:`dial_relay_lane` opens ``/v1/lane`` and says the hello
(:mod:`sleap_rtc.protocol.relaylane`). A worker's end is handed back once the server
says ``waiting`` and waits for ``paired`` in :meth:`RelayLane.paired`; a client's is
handed back paired. The socket is its own connection, so frames never queue in front
of the control channel's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from sleap_rtc.protocol.codec import ProtocolError
from sleap_rtc.protocol.relaylane import (
    MAX_LANE_MESSAGE,
    PAIR_TIMEOUT_S,
    ClientLaneHello,
    WorkerLaneHello,
    decode_status,
)
from sleap_rtc.protocol.transfer import frame_header
from sleap_rtc.transport.lane import Lane, LaneClosed

#: How long dialing the server (and hearing its first word) may take.
DIAL_TIMEOUT_S: Final = 10.0
#: Bytes the socket may hold unsent before a send waits (a few frames in flight).
WRITE_LIMIT: Final = 4 << 20


class RelayLane(Lane):
    """One end of a relay lane: each frame one binary WebSocket message."""

    via = "relay"

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__()
        self._ws = ws

    async def paired(self, timeout: float = PAIR_TIMEOUT_S) -> None:
        """A worker's end: wait until the server pairs it with the client."""
        try:
            status = decode_status(await asyncio.wait_for(self._ws.recv(), timeout))
        except (TimeoutError, ConnectionClosed, ProtocolError) as exc:
            self.abort()
            raise LaneClosed(f"the client never took the relay lane ({exc or 'timeout'})") from None
        if status.op != "paired":
            self.abort()
            raise LaneClosed(f"the server did not pair the relay lane: {status.message}")

    async def send(self, key: str, offset: int, data: bytes | memoryview) -> None:
        if self._closed is not None:
            raise LaneClosed(self._closed)
        try:
            await self._ws.send(frame_header(key, offset, len(data)) + bytes(data))
        except ConnectionClosed as exc:
            raise self._lost(f"relay lane lost: {_why(exc)}") from None

    async def recv(self) -> tuple[str, int, bytes]:
        if self._closed is not None:
            raise LaneClosed(self._closed)
        try:
            message = await self._ws.recv()
        except ConnectionClosed as exc:
            raise self._lost(f"relay lane ended: {_why(exc)}") from None
        return self._parse(message)

    def abort(self) -> None:
        self._mark("closed by this side")
        transport = self._ws.transport
        with contextlib.suppress(Exception):
            transport.abort()

    async def close(self) -> None:
        self._mark("closed by this side")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._ws.close(), 2.0)


def _why(exc: ConnectionClosed) -> str:
    received = exc.rcvd
    if received is not None and received.reason:
        return received.reason
    return "the connection closed"


async def dial_relay_lane(
    url: str, bearer: str, hello: WorkerLaneHello | ClientLaneHello
) -> RelayLane:
    """Open the server's lane socket and say ``hello``; LaneClosed if it won't have it.

    A client's lane comes back paired; a worker's once the server said ``waiting``.
    """
    try:
        ws = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {bearer}"},
            max_size=MAX_LANE_MESSAGE,
            compression=None,  # frames are file bytes: deflate costs CPU and gains little
            open_timeout=DIAL_TIMEOUT_S,
            write_limit=WRITE_LIMIT,
            ping_interval=20,
            ping_timeout=60,
            close_timeout=2,
        )
    except InvalidStatus as exc:
        raise LaneClosed(
            f"the server refused the relay lane (HTTP {exc.response.status_code})"
        ) from None
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise LaneClosed(f"can't reach the server's relay lane: {exc}") from None
    try:
        await ws.send(hello.model_dump_json())
        status = decode_status(await asyncio.wait_for(ws.recv(), DIAL_TIMEOUT_S))
    except (ConnectionClosed, TimeoutError, ProtocolError) as exc:
        ws.transport.abort()
        reason = _why(exc) if isinstance(exc, ConnectionClosed) else str(exc) or "timeout"
        raise LaneClosed(f"the server did not open a relay lane: {reason}") from None
    want = "waiting" if isinstance(hello, WorkerLaneHello) else "paired"
    if status.op != want:
        ws.transport.abort()
        raise LaneClosed(f"the server refused the relay lane: {status.message or status.op}")
    return RelayLane(ws)
