"""A session's lane to its worker for bulk bytes: asked for on first use, reopened after a drop.

Fastest first (:data:`LANE_KINDS`): a direct lane (the worker offers its addresses,
certificate fingerprint and a token over the session's channel, LANE_OPEN →
LANE_OFFER; :func:`~sleap_rtc.transport.lane.connect_lane` checks the fingerprint
before it says the token); else a relay lane through the server (LANE_OPEN ``via``
relay: the worker's half waits at ``/v1/lane`` for a fresh token); else, on a WebRTC
session, a second data channel on the same connection (``via`` webrtc). A kind the
worker won't offer (an older worker, lanes turned off, a server without relay
lanes) is not asked again this session; one that can't be reached (a firewall,
another network) is tried again after :data:`RETRY_AFTER_S`. Without a lane
transfers go over the channel, and :attr:`ClientLanes.problem` says why.

Frames that arrive go to the transfer they name (:meth:`ClientLanes.attach`);
when the lane drops, each transfer on it hears :class:`LaneLost` and resumes
(:mod:`sleap_rtc.client.transfers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt, wait_exponential

from sleap_rtc.client.errors import ClientError
from sleap_rtc.client.session import ServerClient
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.relaylane import ClientLaneHello
from sleap_rtc.transport.lane import Lane, LaneClosed, connect_lane
from sleap_rtc.transport.relaylane import dial_relay_lane

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


def relay_dialer(server: ServerClient) -> RelayDial:
    """Pairs relay lanes at ``server`` as the account this client is logged in as."""

    async def dial(token: str) -> Lane:
        return await dial_relay_lane(
            server.websocket_url("/v1/lane"),
            await server.access_token(),
            ClientLaneHello(token=token),
        )

    return dial


class _Refused(Exception):
    """The worker won't offer this kind of lane (not worth asking again this session)."""


class FrameSink(Protocol):
    def frame(self, offset: int, data: bytes) -> None: ...

    def notify(self, event: object) -> None: ...


LaneKind = Literal["direct", "relay", "webrtc"]
#: The kinds of lane a session tries, fastest first.
LANE_KINDS: Final[tuple[LaneKind, ...]] = ("direct", "relay", "webrtc")
Ask = Callable[[LaneKind], Awaitable[p.LaneOffer]]
#: Pairs a relay lane: the token from the worker's offer → the lane.
RelayDial = Callable[[str], Awaitable[Lane]]
#: Opens a bulk data channel on the session's own WebRTC connection.
WebRTCDial = Callable[[], Awaitable[Lane]]


class ClientLanes:
    def __init__(
        self,
        ask: Ask,
        *,
        relay: RelayDial | None = None,
        webrtc: WebRTCDial | None = None,
        kinds: Sequence[LaneKind] = LANE_KINDS,
    ) -> None:
        self._ask = ask
        self._dial: dict[LaneKind, Callable[[], Awaitable[Lane]]] = {
            "direct": self._direct,
            "relay": self._relayed,
            "webrtc": self._webrtc,
        }
        self._relay = relay
        self._webrtc_dial = webrtc
        self.enabled = bool(kinds)
        #: Why transfers go over the channel, when they do.
        self.problem: str | None = None if kinds else "lanes are off for this session"
        self._offer: p.LaneOffer | None = None
        available = {"direct": True, "relay": relay is not None, "webrtc": webrtc is not None}
        #: When each kind of lane may be tried again (inf: not in this session).
        self._retry_at: dict[LaneKind, float] = {
            kind: 0.0 if kind in kinds and available[kind] else math.inf for kind in LANE_KINDS
        }
        self._lane: Lane | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._sinks: dict[str, FrameSink] = {}
        #: Lanes opened in this session (a drop and reopen makes two).
        self.opened = 0

    def live(self) -> Lane | None:
        return self._lane if self._lane is not None and not self._lane.closed else None

    async def get(self) -> Lane | None:
        """The open lane, opening one if it can be; None: use the channel."""
        if not self.enabled:
            return None
        async with self._lock:
            lane = self.live()
            if lane is not None:
                return lane
            return await self._open()

    async def reopen(self) -> Lane | None:
        """After a drop: a new lane (a few tries, backing off), or None to use the channel."""
        if not self.enabled:
            return None
        async with self._lock:
            lane = self.live()
            if lane is not None:
                return lane
            retrying = AsyncRetrying(
                stop=stop_after_attempt(RECONNECT_ATTEMPTS),
                wait=wait_exponential(multiplier=0.2, max=2.0),
                retry=retry_if_result(lambda opened: opened is None),
                retry_error_callback=lambda _state: None,
            )
            reopened: Lane | None = await retrying(self._reopen_once)
            return reopened

    async def _reopen_once(self) -> Lane | None:
        # A drop is no reason to wait out the retry time of what just worked.
        self._retry_at = {k: v if math.isinf(v) else 0.0 for k, v in self._retry_at.items()}
        return await self._open()

    async def _open(self) -> Lane | None:
        """The first kind of lane that opens now (in :data:`LANE_KINDS` order); None if none."""
        problems: list[str] = []
        for via in LANE_KINDS:
            if time.monotonic() < self._retry_at[via]:
                continue
            try:
                lane = await self._dial[via]()
            except _Refused as exc:
                self._retry_at[via] = math.inf
                problems.append(str(exc))
                continue
            except LaneClosed as exc:
                self._retry_at[via] = time.monotonic() + RETRY_AFTER_S
                problems.append(exc.reason)
                continue
            self._lane = lane
            self.opened += 1
            self._reader = asyncio.create_task(self._read(lane))
            self.problem = None
            return lane
        if problems:
            self.problem = "no lane for bulk bytes: " + "; ".join(problems)
            log.info("%s; files go over the channel", self.problem)
        return None

    async def _direct(self) -> Lane:
        if self._offer is None:
            try:
                self._offer = await self._ask("direct")
            except ClientError as exc:
                raise _Refused(f"the worker offers no direct lane ({exc})") from None
        offer = self._offer
        assert offer.token is not None  # the offer's validator says so
        try:
            return await connect_lane(offer.addresses, offer.fingerprint or "", offer.token)
        except LaneClosed as exc:
            raise LaneClosed(f"the worker's direct lane can't be reached ({exc.reason})") from None

    async def _relayed(self) -> Lane:
        assert self._relay is not None
        try:
            offer = await self._ask("relay")
        except ClientError as exc:
            raise _Refused(f"the worker offers no relay lane ({exc})") from None
        assert offer.token is not None  # the offer's validator says so
        try:
            return await self._relay(offer.token)
        except LaneClosed as exc:
            raise LaneClosed(f"no relay lane through the server ({exc.reason})") from None

    async def _webrtc(self) -> Lane:
        assert self._webrtc_dial is not None
        try:
            await self._ask("webrtc")
        except ClientError as exc:
            raise _Refused(f"the worker takes no WebRTC bulk channel ({exc})") from None
        try:
            return await self._webrtc_dial()
        except LaneClosed as exc:
            raise LaneClosed(f"no WebRTC bulk channel ({exc.reason})") from None

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
