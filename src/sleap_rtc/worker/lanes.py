"""One channel's direct lane: the offer, the connection that took it, and its reader.

The worker's :class:`~sleap_rtc.transport.lane.LaneServer` hands a connection that
said this channel's token to this channel alone; a second one replaces the first
(a client reconnecting after a drop). Frames read from it go to the channel's
uploads; downloads write to :meth:`PeerLane.live`. Closing the channel revokes the
token and drops the lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.transfer import TransferError
from sleap_rtc.transport.base import ChannelClosed
from sleap_rtc.transport.lane import Lane, LaneClosed, LaneServer

log = logging.getLogger("sleap_rtc.worker")

OnFrame = Callable[[str, int, bytes], Awaitable[None]]


class PeerLane:
    def __init__(self, server: LaneServer | None, on_frame: OnFrame) -> None:
        self.server = server
        self.on_frame = on_frame
        self.token: str | None = None
        self.lane: Lane | None = None
        self._reader: asyncio.Task[None] | None = None
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

    def live(self) -> Lane | None:
        """The lane, while it is open."""
        return self.lane if self.lane is not None and not self.lane.closed else None

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
        if self.lane is not None:
            self.lane.abort()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
