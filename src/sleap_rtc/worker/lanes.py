"""One channel's lane: the offers, the connection that took one, and its reader.

Three kinds of offer (LANE_OPEN ``via``):

- ``direct``: the worker's :class:`~sleap_rtc.transport.lane.LaneServer` hands a
  connection that said this channel's token to this channel alone.
- ``relay``: :class:`RelayDialer` opens the worker's half at the server's
  ``/v1/lane`` with a fresh token (one per offer) for the channel's peer account,
  and the offer goes out once the server says it waits; when the client pairs, the
  lane is this channel's.
- ``webrtc``: the next bulk data channel the client opens on this channel's own
  WebRTC connection is the lane (:meth:`PeerLane.take`).

A second lane replaces the first (a client reconnecting after a drop). Frames read
from it go to the channel's uploads; downloads write to :meth:`PeerLane.live`.
Closing the channel revokes the token and drops the lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.relaylane import WorkerLaneHello
from sleap_rtc.protocol.transfer import TransferError
from sleap_rtc.transport.base import ChannelClosed
from sleap_rtc.transport.lane import Lane, LaneClosed, LaneServer
from sleap_rtc.transport.relaylane import RelayLane, dial_relay_lane

log = logging.getLogger("sleap_rtc.worker")

OnFrame = Callable[[str, int, bytes], Awaitable[None]]
#: Relay halves one channel may have waiting at the server at once (the server takes
#: a few per worker, so one peer can't hold them all).
MAX_WAITING_RELAYS = 2


class RelayDialer:
    """Opens this worker's halves of relay lanes at its server."""

    def __init__(self, server_url: str, key: str, worker_id: str) -> None:
        base = server_url.rstrip("/")
        self.url = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        self.url += "/v1/lane"
        self._key = key
        self.worker_id = worker_id

    async def open(self, user_id: str) -> tuple[str, RelayLane]:
        """A fresh token and the half waiting for it (LaneClosed if the server refuses)."""
        token = secrets.token_bytes(32)
        hello = WorkerLaneHello(
            worker_id=self.worker_id, user_id=user_id, digest=hashlib.sha256(token).hexdigest()
        )
        return token.hex(), await dial_relay_lane(self.url, self._key, hello)


class PeerLane:
    def __init__(
        self, server: LaneServer | None, on_frame: OnFrame, relay: RelayDialer | None = None
    ) -> None:
        self.server = server
        self.relay = relay
        self.on_frame = on_frame
        self.token: str | None = None
        self.lane: Lane | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting_relays = 0
        self._closed = False

    def offer(self, request_id: str) -> p.LaneOffer:
        """Where to connect and what to say; TransferError ``UNAVAILABLE`` without a server."""
        server = self.server
        if server is None or not server.addresses:
            raise TransferError(
                "UNAVAILABLE",
                "this worker takes no direct transfers (direct_transfers = false); "
                "files go over this channel",
            )
        if self.token is None:
            self.token = server.issue(self._opened)
        return p.LaneOffer(
            request_id=request_id,
            addresses=server.addresses,
            fingerprint=server.fingerprint,
            token=self.token,
        )

    async def offer_relay(self, request_id: str, user_id: str) -> p.LaneOffer:
        """A half waiting at the server for this channel's peer; TransferError if none."""
        if self.relay is None or self._closed:
            raise TransferError(
                "UNAVAILABLE", "this worker takes no relay lanes; files go over this channel"
            )
        if self._waiting_relays >= MAX_WAITING_RELAYS:
            raise TransferError(
                "TOO_MANY", f"at most {MAX_WAITING_RELAYS} relay lanes wait for one channel"
            )
        self._waiting_relays += 1
        try:
            token, half = await self.relay.open(user_id)
        except BaseException as exc:
            self._waiting_relays -= 1
            if isinstance(exc, LaneClosed):
                raise TransferError("UNAVAILABLE", exc.reason) from None
            raise
        self.background(self._pair(half))
        return p.LaneOffer(request_id=request_id, via="relay", token=token)

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` (an offer being made, a half waiting) until done or closed."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pair(self, half: RelayLane) -> None:
        try:
            await half.paired()
        except LaneClosed as exc:
            log.info("relay lane not taken: %s", exc)
            return
        except asyncio.CancelledError:
            half.abort()  # the channel closed before its client came
            raise
        finally:
            self._waiting_relays -= 1
        self._opened(half)

    def live(self) -> Lane | None:
        """The lane, while it is open."""
        return self.lane if self.lane is not None and not self.lane.closed else None

    def take(self, lane: Lane) -> None:
        """A lane opened on the channel's own connection (a WebRTC bulk channel)."""
        self._opened(lane)

    def _opened(self, lane: Lane) -> None:
        if self._closed:
            lane.abort()
            return
        if self.lane is not None:
            self.lane.abort()
        if self._reader is not None:
            self._reader.cancel()
        self.lane = lane
        self._reader = asyncio.create_task(self._read(lane))

    async def _read(self, lane: Lane) -> None:
        try:
            while True:
                key, offset, data = await lane.recv()
                await self.on_frame(key, offset, data)
        except (LaneClosed, ChannelClosed) as exc:
            log.info("lane ended: %s", exc)
        finally:
            lane.abort()

    async def close(self) -> None:
        self._closed = True
        if self.token is not None and self.server is not None:
            self.server.revoke(self.token)
        for task in list(self._tasks):
            task.cancel()
        if self.lane is not None:
            self.lane.abort()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
