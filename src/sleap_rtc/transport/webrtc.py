"""WebRTC data channels (aiortc), negotiated through the server's relay.

The client sends an ``open`` envelope with its offer (all ICE candidates
gathered, no trickle); the worker answers; the data channel carries the job
protocol peer to peer. A second data channel on the same connection can carry
bulk frames (:class:`WebRTCLane`), opened by the client once the worker agreed
(LANE_OPEN ``via`` webrtc) and handed to the channel's :attr:`WebRTCChannel.on_lane`.
ICE servers (STUN/TURN) come from the settings; none by
default, which suits a LAN and loopback. ``ice_host_addresses`` pins the host
candidates, e.g. ``["127.0.0.1"]`` on a machine whose only peer is itself
(aioice leaves loopback out by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from sleap_rtc.protocol.transfer import frame_header
from sleap_rtc.transport.base import Channel, ChannelClosed
from sleap_rtc.transport.lane import Lane, LaneClosed

log = logging.getLogger("sleap_rtc.transport")

#: Bytes queued in a data channel before send() waits for them to drain.
BUFFER_LIMIT = 1024 * 1024
#: How long closing waits for what was sent last (a refusal, say) to go out.
FLUSH_TIMEOUT_S = 2.0
CHANNEL_LABEL = "sleap-rtc-jobs"
#: The bulk data channel beside it, for lane frames.
BULK_LABEL = "sleap-rtc-bulk"
#: Bytes a bulk channel may queue before a frame waits: little, so that a control
#: message (on the same connection, behind what is queued) waits little too.
BULK_BUFFER = 16 * 1024
#: Raw bytes per frame on a bulk channel (a message fits what any peer accepts, 64 KiB).
BULK_FRAME_BYTES = 60 * 1024
#: Frames received but not yet read before the bulk channel is dropped.
BULK_INBOX = 1024


HOSTS_ENV = "SLEAP_RTC_ICE_HOSTS"


def host_addresses_from_env() -> list[str] | None:
    """``SLEAP_RTC_ICE_HOSTS=127.0.0.1,10.0.0.5`` pins the host candidates."""
    value = os.environ.get(HOSTS_ENV, "").strip()
    return [a.strip() for a in value.split(",") if a.strip()] or None


def pin_host_addresses(addresses: Sequence[str] | None) -> None:
    """Offer exactly these host candidates (process-wide); None restores aioice's own."""
    import aioice.ice

    original = getattr(aioice.ice, "_sleap_rtc_original_hosts", None)
    if original is None:
        original = aioice.ice.get_host_addresses
        aioice.ice._sleap_rtc_original_hosts = original  # type: ignore[attr-defined]
    if not addresses:
        aioice.ice.get_host_addresses = original
        return
    fixed = list(addresses)

    def hosts(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = hosts


def _configuration(ice_servers: Sequence[dict[str, Any]]) -> Any:
    from aiortc import RTCConfiguration, RTCIceServer

    servers = [
        RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
        for s in ice_servers
    ]
    # An empty list, not the default: aiortc's default adds a public STUN server,
    # which stalls set-up for seconds on a closed network.
    return RTCConfiguration(iceServers=servers)


def _open_event(dc: Any) -> asyncio.Event:
    """Set once the data channel ``dc`` is open (at once if it is already)."""
    opened = asyncio.Event()
    if dc.readyState == "open":
        opened.set()
    dc.on("open", opened.set)
    return opened


class WebRTCChannel(Channel):
    kind = "webrtc"

    def __init__(self, pc: Any, dc: Any) -> None:
        super().__init__()
        self._pc = pc
        self._dc = dc
        #: The worker's side: who takes a bulk channel the client opens (None: refused).
        self.on_lane: Callable[[WebRTCLane], None] | None = None
        self.opened = _open_event(dc)

        @dc.on("message")
        def _message(message: str | bytes) -> None:
            if isinstance(message, bytes):
                try:
                    message = message.decode("utf-8")
                except UnicodeDecodeError:
                    self._deliver("\x00binary")
                    return
            self._deliver(message)

        @dc.on("close")
        def _closed() -> None:
            self._abort("peer closed the channel")

        @pc.on("connectionstatechange")
        async def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._abort(f"peer connection {pc.connectionState}")

    async def _transmit(self, text: str) -> None:
        while self._dc.bufferedAmount > BUFFER_LIMIT:
            if self.closed or self._dc.readyState != "open":
                raise ChannelClosed(self.close_reason or "channel closed")
            await asyncio.sleep(0.01)
        if self._dc.readyState != "open":
            self._mark_closed("channel closed")
            raise ChannelClosed("channel closed")
        self._dc.send(text)

    async def open_lane(self, timeout: float = 10.0) -> WebRTCLane:
        """The client's side: a bulk channel on this connection (LaneClosed if it won't open)."""
        if self.closed:
            raise LaneClosed(self.close_reason or "channel closed")
        lane = WebRTCLane(self._pc.createDataChannel(BULK_LABEL, ordered=True))
        try:
            await asyncio.wait_for(lane.opened.wait(), timeout)
        except TimeoutError:
            lane.abort()
            raise LaneClosed("the WebRTC bulk channel did not open") from None
        if lane.closed:
            raise LaneClosed("the worker closed the WebRTC bulk channel")
        return lane

    def _bulk(self, dc: Any) -> None:
        if self.on_lane is None or self.closed:
            dc.close()
            return
        self.on_lane(WebRTCLane(dc))

    async def _shutdown(self, reason: str) -> None:
        # Closing the peer connection drops what aiortc still buffers, so the last
        # messages (an ERROR before a refusal's close) would never arrive.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_TIMEOUT_S
        while (
            self._dc.readyState == "open" and self._dc.bufferedAmount > 0 and loop.time() < deadline
        ):
            await asyncio.sleep(0.01)
        with contextlib.suppress(Exception):
            self._dc.close()
        with contextlib.suppress(Exception):
            await self._pc.close()


async def make_offer(ice_servers: Sequence[dict[str, Any]] = ()) -> tuple[Any, Any, str]:
    """A peer connection with a data channel, and its offer SDP (candidates included)."""
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection(_configuration(ice_servers))
    dc = pc.createDataChannel(CHANNEL_LABEL, ordered=True)
    await pc.setLocalDescription(await pc.createOffer())
    return pc, dc, pc.localDescription.sdp


async def complete_offer(pc: Any, dc: Any, answer_sdp: str, timeout: float) -> WebRTCChannel:
    """Apply the worker's answer and wait until the data channel is open."""
    from aiortc import RTCSessionDescription

    channel = WebRTCChannel(pc, dc)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        await asyncio.wait_for(channel.opened.wait(), timeout)
    except (TimeoutError, ValueError) as exc:
        await channel.close("could not open")
        raise ChannelClosed(f"WebRTC channel did not open: {exc or 'timed out'}") from None
    return channel


async def answer_offer(
    offer_sdp: str, ice_servers: Sequence[dict[str, Any]] = ()
) -> tuple[str, asyncio.Future[WebRTCChannel], Any]:
    """The worker's side: an answer SDP, and a future for the channel once it opens."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(_configuration(ice_servers))
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[WebRTCChannel] = loop.create_future()

    @pc.on("datachannel")
    def _datachannel(dc: Any) -> None:
        if dc.label == BULK_LABEL and ready.done() and not ready.cancelled():
            ready.result()._bulk(dc)
            return
        if dc.label != CHANNEL_LABEL or ready.done():
            dc.close()
            return
        channel = WebRTCChannel(pc, dc)

        def opened() -> None:
            if not ready.done():
                ready.set_result(channel)

        if dc.readyState == "open":
            opened()
        else:
            dc.on("open", opened)

    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    return pc.localDescription.sdp, ready, pc


class WebRTCLane(Lane):
    """A lane on a second data channel of a WebRTC connection: binary frames of at most
    :data:`BULK_FRAME_BYTES`, sent while little is queued (see :data:`BULK_BUFFER`)."""

    via = "webrtc"

    def __init__(self, dc: Any) -> None:
        super().__init__()
        self._dc = dc
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.opened = _open_event(dc)

        @dc.on("message")
        def _message(message: str | bytes) -> None:
            if self._closed is not None:
                return
            if not isinstance(message, bytes) or self._inbox.qsize() >= BULK_INBOX:
                self._mark("the peer broke the lane (text, or frames faster than read)")
                self._inbox.put_nowait(None)
                self._dc.close()
                return
            self._inbox.put_nowait(message)

        @dc.on("close")
        def _closed() -> None:
            self._mark("the peer closed the lane")
            self.opened.set()
            self._inbox.put_nowait(None)

    async def send(self, key: str, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        for start in range(0, len(view), BULK_FRAME_BYTES):
            piece = view[start : start + BULK_FRAME_BYTES]
            while self._dc.bufferedAmount > BULK_BUFFER and self._closed is None:
                await asyncio.sleep(0.002)
            if self._closed is not None or self._dc.readyState != "open":
                raise self._lost(self._closed or "the WebRTC bulk channel closed")
            self._dc.send(frame_header(key, offset + start, len(piece)) + bytes(piece))

    async def recv(self) -> tuple[str, int, bytes]:
        message = await self._inbox.get()
        if message is None:
            self._inbox.put_nowait(None)  # every later recv sees the end too
            raise LaneClosed(self._closed or "lane closed")
        return self._parse(message)

    def abort(self) -> None:
        self._mark("closed by this side")
        self._inbox.put_nowait(None)
        with contextlib.suppress(Exception):
            self._dc.close()

    async def close(self) -> None:
        self.abort()
