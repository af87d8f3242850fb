"""Opening a channel to a worker: a ticket, a WebRTC data channel or the relay, then HELLO.

The channel is a WebRTC data channel when one opens within ``webrtc_timeout``
seconds, else the same protocol relayed through the server (``transport="relay"``
forces it, ``"webrtc"`` refuses the fallback). The ICE servers are the caller's
to choose; nothing here reads configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sleap_rtc.client.errors import ClientError, WorkerError
from sleap_rtc.client.session import ServerClient
from sleap_rtc.protocol.session import ClientSession, Refused, Welcomed
from sleap_rtc.protocol.signaling import Sender
from sleap_rtc.transport.base import Channel, ChannelClosed
from sleap_rtc.transport.envelope import Answer, Close, Open, parse_envelope
from sleap_rtc.transport.relay import ClientRelayChannel, ServerSocket, new_channel_id

log = logging.getLogger("sleap_rtc.client")

Transport = Literal["auto", "webrtc", "relay"]
#: Longest wait for the worker's answer to HELLO.
HELLO_TIMEOUT_S = 20.0


@dataclass
class Connection:
    """An open, welcomed channel: what a :class:`~sleap_rtc.client.jobs.WorkerSession` runs on."""

    channel: Channel
    socket: ServerSocket
    protocol: ClientSession


async def open_webrtc(
    socket: ServerSocket,
    room: str,
    worker_id: str,
    timeout: float,
    ice_servers: Sequence[dict[str, Any]],
) -> Channel:
    """A WebRTC data channel to the worker, signaled through the server; ChannelClosed if
    the worker refuses or does not answer within ``timeout`` seconds."""
    from sleap_rtc.transport.webrtc import complete_offer, make_offer

    ch = new_channel_id()
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[str] = loop.create_future()

    def on_delivery(sender: Sender, payload: dict[str, Any]) -> None:
        if sender.kind != "worker" or sender.id != worker_id or answered.done():
            return
        env = parse_envelope(payload)
        if isinstance(env, Answer):
            answered.set_result(env.sdp)
        elif isinstance(env, Close):
            answered.set_exception(ChannelClosed(env.reason or "worker refused WebRTC"))

    def on_error(code: str, message: str) -> None:
        if not answered.done():
            answered.set_exception(ChannelClosed(message))

    pc, dc, offer = await make_offer(ice_servers)
    socket.subscribe(ch, on_delivery, on_error)
    try:
        await socket.relay(room, worker_id, Open(ch=ch, transport="webrtc", sdp=offer).model_dump())
        try:
            answer = await asyncio.wait_for(answered, timeout)
        except TimeoutError:
            raise ChannelClosed("worker did not answer the WebRTC offer in time") from None
        return await complete_offer(pc, dc, answer, timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            await pc.close()
        raise
    finally:
        socket.unsubscribe(ch)


async def hello(channel: Channel, protocol: ClientSession, ticket: str) -> None:
    """Say HELLO and wait for WELCOME; WorkerError if refused, ClientError if it breaks."""
    protocol.hello(ticket)
    for text in protocol.data_to_send():
        await channel.send(text)
    while True:
        try:
            raw = await asyncio.wait_for(channel.recv(), HELLO_TIMEOUT_S)
        except TimeoutError:
            raise ClientError("worker did not answer HELLO in time") from None
        except ChannelClosed as exc:
            raise ClientError(f"worker closed the channel: {exc.reason}") from None
        protocol.receive_data(raw)
        for event in protocol.events_received():
            if isinstance(event, Welcomed):
                return
            if isinstance(event, Refused):
                if event.error is None:
                    raise ClientError(event.message)
                raise WorkerError(event.code, event.message)


async def connect(
    server: ServerClient,
    room: str,
    worker_id: str,
    *,
    transport: Transport = "auto",
    webrtc_timeout: float = 8.0,
    ice_servers: Sequence[dict[str, Any]] = (),
    idle_timeout: float,
) -> Connection:
    """Get a ticket, open a channel (WebRTC, else relay) and say HELLO.

    On any failure what was opened is closed again.
    """
    ticket = await server.ticket(room, worker_id)
    socket = ServerSocket(server.websocket_url("/v1/client"), await server.access_token())
    try:
        await socket.connect()
    except ChannelClosed as exc:
        raise ClientError(str(exc)) from None
    channel: Channel | None = None
    try:
        if transport in ("auto", "webrtc"):
            try:
                channel = await open_webrtc(socket, room, worker_id, webrtc_timeout, ice_servers)
            except ChannelClosed as exc:
                if transport == "webrtc":
                    raise ClientError(f"no WebRTC channel to the worker: {exc}") from None
                log.info("WebRTC failed (%s); using the relay through the server", exc)
        if channel is None:
            channel = await ClientRelayChannel(socket, room, worker_id).open()
        protocol = ClientSession(idle_timeout=idle_timeout)
        await hello(channel, protocol, ticket.ticket)
    except BaseException:
        if channel is not None:
            await channel.close("session set-up failed")
        await socket.close()
        raise
    return Connection(channel, socket, protocol)
