"""A session's direct lane to its worker: asked for on first use, reopened after a drop.

The worker offers its addresses, certificate fingerprint and a token over the
session's channel (LANE_OPEN → LANE_OFFER); :func:`~sleap_rtc.transport.lane.connect_lane`
checks the fingerprint before it says the token. A worker that offers no lane (an
older one, or ``direct_transfers = false``) is asked once per session; one that
can't be reached (a firewall, another network) is tried again after
:data:`RETRY_AFTER_S`. Either way transfers go over the channel instead, and
:attr:`ClientLanes.problem` says why.

Frames that arrive go to the transfer they name (:meth:`ClientLanes.attach`);
when the lane drops, each transfer on it hears :class:`LaneLost` and resumes
(:mod:`sleap_rtc.client.transfers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from sleap_rtc.client.errors import ClientError
from sleap_rtc.protocol import jobs as p
from sleap_rtc.transport.lane import Lane, LaneClosed, connect_lane

log = logging.getLogger("sleap_rtc.client")

#: How long after a failed connection a session tries the offered addresses again.
RETRY_AFTER_S: Final = 60.0
#: Connections tried when a lane drops mid-transfer before going on over the channel.
RECONNECT_ATTEMPTS: Final = 3


@dataclass(frozen=True)
class LaneLost:
    """The lane a transfer was using dropped (put in that transfer's queue)."""

    lane: Lane
    reason: str


@dataclass(frozen=True)
class LaneProgress:
    """A frame of a download arrived and was written (keeps its wait alive)."""


class FrameSink(Protocol):
    def frame(self, offset: int, data: bytes) -> None: ...

    def notify(self, event: object) -> None: ...


class ClientLanes:
    def __init__(self, ask: Callable[[], Awaitable[p.LaneOffer]], *, enabled: bool = True) -> None:
        self._ask = ask
        self.enabled = enabled
        #: Why transfers go over the channel, when they do.
        self.problem: str | None = None if enabled else "direct transfers are off"
        self._offer: p.LaneOffer | None = None
        self._refused = False
        self._retry_at = 0.0
        self._lane: Lane | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._sinks: dict[str, FrameSink] = {}
        #: Lanes opened in this session (a drop and reopen makes two).
        self.opened = 0

    def live(self) -> Lane | None:
        return self._lane if self._lane is not None and not self._lane.closed else None

    async def get(self) -> Lane | None:
        """The open lane, opening it if it can be; None: use the channel."""
        if not self.enabled:
            return None
        async with self._lock:
            lane = self.live()
            if lane is not None:
                return lane
            if self._refused or time.monotonic() < self._retry_at:
                return None
            try:
                return await self._open()
            except LaneClosed as exc:
                self.problem = f"the worker's direct lane can't be reached ({exc.reason})"
                self._retry_at = time.monotonic() + RETRY_AFTER_S
                log.info("%s; files go over the channel", self.problem)
                return None

    async def reopen(self) -> Lane | None:
        """After a drop: a new lane (a few tries, backing off), or None to use the channel."""
        if not self.enabled or self._refused:
            return None
        async with self._lock:
            lane = self.live()
            if lane is not None:
                return lane
            try:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(RECONNECT_ATTEMPTS),
                    wait=wait_exponential(multiplier=0.2, max=2.0),
                    retry=retry_if_exception_type(LaneClosed),
                    reraise=True,
                ):
                    with attempt:
                        return await self._open()
            except LaneClosed as exc:
                self.problem = f"the direct lane dropped and did not come back ({exc.reason})"
                self._retry_at = time.monotonic() + RETRY_AFTER_S
        return None

    async def _open(self) -> Lane | None:
        if self._offer is None:
            try:
                self._offer = await self._ask()
            except ClientError as exc:
                self._refused = True
                self.problem = f"the worker offers no direct lane ({exc})"
                return None
        offer = self._offer
        lane = await connect_lane(offer.addresses, offer.fingerprint, offer.token)
        self._lane = lane
        self.opened += 1
        self._reader = asyncio.create_task(self._read(lane))
        self.problem = None
        return lane

    def attach(self, key: str, sink: FrameSink) -> None:
        """Frames naming ``key`` go to ``sink``, and so does news of a dropped lane."""
        self._sinks[key] = sink

    def detach(self, key: str) -> None:
        self._sinks.pop(key, None)

    async def _read(self, lane: Lane) -> None:
        reason = "lane closed"
        try:
            while True:
                key, offset, data = await lane.recv()
                sink = self._sinks.get(key)
                if sink is not None:
                    sink.frame(offset, data)
        except LaneClosed as exc:
            reason = exc.reason
        finally:
            lane.abort()
            for sink in list(self._sinks.values()):
                sink.notify(LaneLost(lane, reason))

    async def close(self) -> None:
        self.enabled = False
        if self._lane is not None:
            self._lane.abort()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
