"""Where clients' channels arrive at a worker: relayed envelopes and WebRTC offers.

Everything here comes from the network through the server. Envelopes are
validated before use; each client session may hold a few channels, the worker a
bounded number in all; a channel only speaks the job protocol after its ticket
checks out (:mod:`sleap_rtc.worker.tickets`): a ticket issued to the user whose
session the server stamped on the offer, relayed or WebRTC alike, and not used before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sleap_rtc.protocol.signaling import Delivery, Sender, loggable
from sleap_rtc.transport.base import Channel
from sleap_rtc.transport.envelope import Answer, Close, Data, Open, parse_envelope
from sleap_rtc.transport.relay import WorkerRelayChannel
from sleap_rtc.worker.service import JobService

log = logging.getLogger("sleap_rtc.worker")

MAX_CHANNELS_PER_SESSION = 8
MAX_CHANNELS = 128
#: WebRTC offers being answered at once (each holds a peer connection until it opens or
#: times out): per client session, and in all.
MAX_PENDING_OFFERS_PER_SESSION = 2
MAX_PENDING_OFFERS = 16
WEBRTC_OPEN_TIMEOUT_S = 20.0

SendFn = Callable[[str, dict[str, Any]], Awaitable[bool]]


class PeerEndpoint:
    def __init__(
        self,
        service: JobService,
        send: SendFn,
        *,
        ice_servers: Sequence[dict[str, Any]] = (),
        webrtc: bool = True,
    ) -> None:
        self.service = service
        self._send = send
        self.ice_servers = list(ice_servers)
        self.webrtc = webrtc
        self.channels: dict[tuple[str, str], Channel] = {}
        #: Channels whose WebRTC offer is being answered: (session id, channel id).
        self.pending: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_relay(self, delivery: Delivery) -> None:
        sender = delivery.sender
        if sender.kind != "client":
            return
        env = parse_envelope(delivery.payload)
        if env is None:
            kind = delivery.payload.get("op", delivery.payload.get("type"))
            await self._send(
                sender.id,
                {
                    "type": "ERROR",
                    "code": "UNKNOWN_TYPE",
                    "message": f"this worker does not understand {str(kind)[:64]!r} messages",
                },
            )
            return
        key = (sender.id, env.ch)
        if isinstance(env, Open):
            if key in self.channels or key in self.pending:
                return
            per_session = sum(1 for s, _ in (*self.channels, *self.pending) if s == sender.id)
            if per_session >= MAX_CHANNELS_PER_SESSION or len(self.channels) >= MAX_CHANNELS:
                await self._send(
                    sender.id,
                    Close(ch=env.ch, reason="too many open channels on this worker").model_dump(),
                )
                return
            offers = sum(1 for s, _ in self.pending if s == sender.id)
            if env.transport == "webrtc" and (
                offers >= MAX_PENDING_OFFERS_PER_SESSION or len(self.pending) >= MAX_PENDING_OFFERS
            ):
                await self._send(
                    sender.id,
                    Close(
                        ch=env.ch, reason="too many WebRTC offers at once; wait for one to open"
                    ).model_dump(),
                )
                return
            if env.transport == "relay":
                channel = WorkerRelayChannel(self._send, sender, env.ch)
                self.channels[key] = channel
                self._spawn(self._serve(key, channel, sender))
            elif not self.webrtc or not env.sdp:
                reason = "WebRTC is off on this worker" if not self.webrtc else "offer has no SDP"
                await self._send(sender.id, Close(ch=env.ch, reason=reason).model_dump())
            else:
                self.pending.add(key)
                self._spawn(self._open_webrtc(key, env.sdp, sender))
        elif isinstance(env, Data | Close):
            existing = self.channels.get(key)
            if isinstance(existing, WorkerRelayChannel):
                existing.feed(env)
            elif isinstance(env, Data):
                await self._send(sender.id, Close(ch=env.ch, reason="no such channel").model_dump())
        elif isinstance(env, Answer):
            return  # only clients receive answers

    async def _serve(self, key: tuple[str, str], channel: Channel, sender: Sender) -> None:
        try:
            await self.service.serve(channel, sender)
        finally:
            self.channels.pop(key, None)

    async def _open_webrtc(self, key: tuple[str, str], offer: str, sender: Sender) -> None:
        """Answer ``sender``'s offer; the channel's ticket must then be ``sender``'s own."""
        from sleap_rtc.transport.webrtc import answer_offer

        sender_id, ch = key
        try:
            try:
                answer, ready, pc = await answer_offer(offer, self.ice_servers)
            except Exception as exc:
                log.info(
                    "could not answer a WebRTC offer from %s: %s",
                    loggable(sender.name),
                    loggable(exc),
                )
                await self._send(sender_id, Close(ch=ch, reason="bad WebRTC offer").model_dump())
                return
            await self._send(sender_id, Answer(ch=ch, sdp=answer).model_dump())
            try:
                channel = await asyncio.wait_for(ready, WEBRTC_OPEN_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(Exception):
                    await pc.close()
                log.info("WebRTC channel %s did not open in time", loggable(ch))
                return
        finally:
            self.pending.discard(key)
        self.channels[key] = channel
        await self._serve(key, channel, sender)

    async def close(self) -> None:
        for channel in list(self.channels.values()):
            with contextlib.suppress(Exception):
                await channel.close("worker is shutting down")
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
