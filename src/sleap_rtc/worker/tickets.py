"""Peer tickets as the worker checks them: signed for one user, room and worker, used once.

The server signs a ticket when a member asks to open a channel to a worker
(``POST /v1/rooms/{room}/tickets``). A ticket alone proves nothing about who
presents it, so the worker also compares its subject with the client session
the server stamped on the channel's offer (:class:`~sleap_rtc.protocol.signaling.Sender`),
and remembers each ticket's id until the ticket expires, so a copied ticket
can't open a second channel.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from sleap_rtc.protocol.signaling import Sender

#: Ticket ids remembered at most at once. Tickets live minutes, so this is only
#: reached by a flood; past it new tickets are refused rather than old ids forgotten.
MAX_REMEMBERED_TICKETS = 100_000


class TicketError(Exception):
    pass


@dataclass(frozen=True)
class Peer:
    """A client whose ticket checked out."""

    user: str
    user_id: str
    room: str


class SeenTickets:
    """Ids of tickets already used, each kept until its ticket expires.

    Memory stays bounded: expired ids are dropped on every claim (the oldest
    expiry first, from a heap), and at most ``limit`` are kept.
    """

    def __init__(
        self, limit: int = MAX_REMEMBERED_TICKETS, clock: Callable[[], float] = time.time
    ) -> None:
        self.limit = limit
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def _forget_expired(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires, jti = heapq.heappop(self._heap)
            if self._expiry.get(jti) == expires:
                del self._expiry[jti]

    def claim(self, jti: str, expires_at: float) -> None:
        """Record ``jti`` as used; raises :class:`TicketError` if it was used before."""
        self._forget_expired(self._clock())
        if jti in self._expiry:
            raise TicketError(
                "ticket was already used; each ticket opens one channel, ask the server for a "
                "new one"
            )
        if len(self._expiry) >= self.limit:
            raise TicketError("too many channels were opened recently; try again in a minute")
        self._expiry[jti] = expires_at
        heapq.heappush(self._heap, (expires_at, jti))


class TicketVerifier:
    """Checks peer tickets with the server's public key (sent at registration)."""

    def __init__(
        self,
        public_key_pem: str,
        issuer: str,
        room: str,
        room_id: str,
        worker_id: str,
        *,
        seen: SeenTickets | None = None,
    ) -> None:
        self._key = public_key_pem
        self.issuer = issuer
        self.room = room
        self.room_id = room_id
        self.worker_id = worker_id
        #: Shared across re-registrations, so a reconnect doesn't forget used tickets.
        self.seen = seen if seen is not None else SeenTickets()

    def verify(self, ticket: str, sender: Sender) -> Peer:
        """The peer ``ticket`` vouches for, if ``sender`` is the user it was issued to."""
        try:
            claims: dict[str, Any] = jwt.decode(
                ticket,
                self._key,
                algorithms=["EdDSA"],
                audience="peer",
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise TicketError("ticket has expired; ask the server for a new one") from None
        except jwt.InvalidTokenError as exc:
            raise TicketError(f"ticket is not valid: {exc}") from None
        if claims.get("wkr") != self.worker_id:
            raise TicketError("ticket is for another worker")
        if claims.get("rid") != self.room_id or claims.get("room") != self.room:
            raise TicketError("ticket is for another room")
        subject = str(claims["sub"])
        if sender.kind != "client" or sender.user_id is None or sender.user_id != subject:
            raise TicketError(
                "ticket was issued to another user; each user must ask the server for their own"
            )
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise TicketError("ticket is not valid: it has no id")
        self.seen.claim(jti, float(claims["exp"]))
        return Peer(user=str(claims.get("name", "")), user_id=subject, room=self.room)
