"""Channels relayed through the server's WebSocket: the fallback when WebRTC can't connect.

The client keeps one :class:`ServerSocket` (``/v1/client``); each channel is a
channel id inside relayed payloads. The server authenticates both ends and
stamps the sender, so a relayed channel is as trustworthy as the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from sleap_rtc.protocol.signaling import (
    MAX_MESSAGE_BYTES,
    Delivery,
    ErrorMessage,
    ProtocolError,
    Relay,
    Sender,
    Welcome,
    decode_server,
    encode,
)
from sleap_rtc.transport.base import Channel, ChannelClosed
from sleap_rtc.transport.envelope import Close, Data, Open, parse_envelope

log = logging.getLogger("sleap_rtc.transport")

DeliveryHandler = Callable[[Sender, dict[str, Any]], None]


def new_channel_id() -> str:
    return secrets.token_hex(8)


class ServerSocket:
    """A client's WebSocket to the server, for signaling and relayed channels."""

    def __init__(self, ws_url: str, token: str, *, open_timeout: float = 10.0) -> None:
        self.ws_url = ws_url
        self._token = token
        self.open_timeout = open_timeout
        self.session_id = ""
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._handlers: dict[str, DeliveryHandler] = {}
        self._error_handlers: dict[str, Callable[[str, str], None]] = {}
        #: The peer each channel talks to, where known: errors about a relay to one
        #: peer (``ErrorMessage.peer``) only reach the channels to that peer.
        self._peers: dict[str, str] = {}
        self.closed = asyncio.Event()

    async def connect(self) -> ServerSocket:
        try:
            ws = await connect(
                self.ws_url,
                additional_headers={"Authorization": f"Bearer {self._token}"},
                max_size=MAX_MESSAGE_BYTES + 1024,
                open_timeout=self.open_timeout,
                ping_interval=20,
                ping_timeout=20,
            )
        except InvalidStatus as exc:
            raise ChannelClosed(
                f"server refused the connection (HTTP {exc.response.status_code})"
            ) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ChannelClosed(f"can't reach the server: {exc}") from None
        try:
            first = decode_server(await asyncio.wait_for(ws.recv(), self.open_timeout))
        except (ConnectionClosed, TimeoutError, ProtocolError) as exc:
            await ws.close()
            raise ChannelClosed(f"server did not welcome this client: {exc}") from None
        if isinstance(first, ErrorMessage):
            await ws.close()
            raise ChannelClosed(f"server refused this client: {first.message}")
        if not isinstance(first, Welcome):
            await ws.close()
            raise ChannelClosed(f"expected a welcome, got {first.type!r}")
        self.session_id = first.session_id
        self._ws = ws
        self._reader = asyncio.create_task(self._read(ws))
        return self

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                try:
                    message = decode_server(raw)
                except ProtocolError as exc:
                    log.warning("bad message from the server: %s", exc)
                    continue
                if isinstance(message, Delivery):
                    ch = message.payload.get("ch")
                    handler = self._handlers.get(ch) if isinstance(ch, str) else None
                    if handler is not None:
                        handler(message.sender, message.payload)
                elif isinstance(message, ErrorMessage):
                    for ch, on_error in list(self._error_handlers.items()):
                        peer = self._peers.get(ch)
                        if message.peer is None or peer is None or peer == message.peer:
                            on_error(message.code, message.message)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            for on_error in list(self._error_handlers.values()):
                on_error("DISCONNECTED", "lost the connection to the server")

    def subscribe(
        self,
        ch: str,
        handler: DeliveryHandler,
        on_error: Callable[[str, str], None],
        peer: str | None = None,
    ) -> None:
        self._handlers[ch] = handler
        self._error_handlers[ch] = on_error
        if peer is not None:
            self._peers[ch] = peer

    def unsubscribe(self, ch: str) -> None:
        self._handlers.pop(ch, None)
        self._error_handlers.pop(ch, None)
        self._peers.pop(ch, None)

    async def relay(self, room: str, to: str, payload: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or self.closed.is_set():
            raise ChannelClosed("not connected to the server")
        try:
            await ws.send(encode(Relay(room=room, to=to, payload=payload)))
        except ConnectionClosed:
            raise ChannelClosed("lost the connection to the server") from None

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class ClientRelayChannel(Channel):
    """The client's end of a channel relayed through the server."""

    kind = "relay"

    def __init__(self, socket: ServerSocket, room: str, worker_id: str) -> None:
        super().__init__()
        self.socket = socket
        self.room = room
        self.worker_id = worker_id
        self.ch = new_channel_id()
        socket.subscribe(self.ch, self._on_delivery, self._on_error, peer=worker_id)

    async def open(self) -> ClientRelayChannel:
        await self.socket.relay(
            self.room, self.worker_id, Open(ch=self.ch, transport="relay").model_dump()
        )
        return self

    def _on_delivery(self, sender: Sender, payload: dict[str, Any]) -> None:
        if sender.kind != "worker" or sender.id != self.worker_id:
            return
        env = parse_envelope(payload)
        if isinstance(env, Data):
            self._deliver(json.dumps(env.msg))
        elif isinstance(env, Close):
            self._mark_closed(env.reason or "worker closed the channel")
            self.socket.unsubscribe(self.ch)

    def _on_error(self, code: str, message: str) -> None:
        # PEER_BUSY: the server dropped a message of this channel, so it can't go on.
        if code in ("PEER_NOT_FOUND", "NOT_FOUND", "DISCONNECTED", "TOKEN_EXPIRED", "PEER_BUSY"):
            self._mark_closed(message)
            self.socket.unsubscribe(self.ch)

    async def _transmit(self, text: str) -> None:
        payload = Data(ch=self.ch, msg=json.loads(text)).model_dump()
        await self.socket.relay(self.room, self.worker_id, payload)

    async def _shutdown(self, reason: str) -> None:
        self.socket.unsubscribe(self.ch)
        with contextlib.suppress(ChannelClosed):
            await self.socket.relay(
                self.room, self.worker_id, Close(ch=self.ch, reason=reason).model_dump()
            )


class WorkerRelayChannel(Channel):
    """The worker's end of a relayed channel: replies go to one client session."""

    kind = "relay"

    def __init__(
        self,
        send: Callable[[str, dict[str, Any]], Awaitable[bool]],
        sender: Sender,
        ch: str,
    ) -> None:
        super().__init__()
        self._send = send
        self.sender = sender
        self.ch = ch

    def feed(self, env: Data | Close) -> None:
        if isinstance(env, Data):
            self._deliver(json.dumps(env.msg))
        else:
            self._mark_closed(env.reason or "client closed the channel")

    async def _transmit(self, text: str) -> None:
        payload = Data(ch=self.ch, msg=json.loads(text)).model_dump()
        if not await self._send(self.sender.id, payload):
            self._mark_closed("lost the connection to the server")
            raise ChannelClosed("lost the connection to the server")

    async def _shutdown(self, reason: str) -> None:
        await self._send(self.sender.id, Close(ch=self.ch, reason=reason[:500]).model_dump())
