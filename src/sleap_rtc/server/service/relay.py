"""The relay's rules: who may pass messages to whom, and what the receiver learns.

- A client reaches a worker only in a room the client's account belongs to (a
  room it doesn't belong to reads as not found); a worker reaches a client
  session only if that session's account belongs to the worker's room.
- The receiver is told who sent a message as the server authenticated them
  (:class:`Sender`), never as the payload claims; a client's delivery names its
  account too, since workers hold channel tickets against it.
- What one sender relays is bounded per second (:class:`RelayBudget`), and what it
  may hold in one receiver's queue by :meth:`Connection.offer`; a message that
  doesn't fit is dropped and the sender told so (``PEER_BUSY``, at most once a
  second per peer), so a flood slows its sender and nobody else.

Membership answers are cached on the connection for :data:`MEMBERSHIP_TTL_S`:
relayed channels carry every job message, and a query per message would cost
more than the message. Unlike the other service modules this one is async: it
works on live connections (:mod:`sleap_rtc.server.hub`) and asks the database
through :class:`~sleap_rtc.server.db.Database`.
"""

from __future__ import annotations

import asyncio
import time

from limits import parse as parse_limit
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from sleap_rtc.protocol.signaling import Delivery, ErrorMessage, Relay, Sender
from sleap_rtc.server.db import Database
from sleap_rtc.server.hub import ClientConn, Connection, Hub, WorkerConn
from sleap_rtc.server.service import rooms

#: How long a membership check is trusted before the database is asked again.
MEMBERSHIP_TTL_S = 10.0
#: How often a sender over its relay budget is looked at again.
THROTTLE_STEP_S = 0.05


class RelayBudget:
    """What each sender may send through the server, in KiB per second.

    A counter per sender (not a list of hits), so a flood costs no memory.
    ``scope`` names the budget, so that several (relayed messages, relay lanes per
    user, relay lanes in all) count apart.
    """

    def __init__(self, kib_per_second: int, scope: str = "relay") -> None:
        self._limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._budget = parse_limit(f"{kib_per_second}/second")
        self._scope = scope

    async def spend(self, sender: str, size: int) -> None:
        """Wait until ``sender`` may send ``size`` more bytes.

        Reading from a sender over its budget pauses, so it is slowed down (its own
        socket backs up) and nobody else is: not the peers it sends to, not the
        server's other connections.
        """
        # One message dearer than the whole budget passes once the window is empty.
        cost = min(1 + size // 1024, self._budget.amount)
        while not self._limiter.hit(self._budget, self._scope, sender, cost=cost):
            await asyncio.sleep(THROTTLE_STEP_S)


class RelayRefused(Exception):
    """A relay message may not be forwarded; :attr:`notice` tells its sender why."""

    def __init__(self, code: str, message: str, peer: str | None = None) -> None:
        super().__init__(message)
        self.notice = ErrorMessage(code=code, message=message, peer=peer)


async def worker_for_client(
    database: Database, hub: Hub, client: ClientConn, message: Relay
) -> WorkerConn:
    """The online worker a client's relay message may go to; raises :class:`RelayRefused`."""
    if message.room is None:
        raise RelayRefused("INVALID_MESSAGE", "relay: room is required")
    now = time.monotonic()
    cached = client.rooms_checked.get(message.room)
    if cached is not None and cached[1] > now:
        room_id = cached[0]
    else:
        room = await database.run(rooms.room_by_name_for_member, client.user_id, message.room)
        if room is None:
            client.rooms_checked.pop(message.room, None)
            raise RelayRefused(
                "NOT_FOUND", f"room {message.room!r} not found (or you are not a member)"
            )
        room_id = room.id
        client.rooms_checked[message.room] = (room_id, now + MEMBERSHIP_TTL_S)
    target = hub.worker(room_id, message.to)
    if target is None:
        raise RelayRefused(
            "PEER_NOT_FOUND",
            f"worker {message.to!r} is not online in room {message.room!r}",
            peer=message.to,
        )
    return target


async def client_for_worker(
    database: Database, hub: Hub, worker: WorkerConn, message: Relay
) -> ClientConn:
    """The client session a worker's relay message may go to; raises :class:`RelayRefused`.

    A session of an account outside the worker's room reads as no session at all.
    """
    target = hub.clients.get(message.to)
    allowed = False
    if target is not None:
        now = time.monotonic()
        if worker.members_checked.get(target.user_id, 0.0) > now:
            allowed = True
        elif await database.run(rooms.is_member, target.user_id, worker.room_id):
            worker.members_checked[target.user_id] = now + MEMBERSHIP_TTL_S
            allowed = True
    if target is None or not allowed:
        raise RelayRefused(
            "PEER_NOT_FOUND",
            f"no client session {message.to!r} in room {worker.room_name!r}",
            peer=message.to,
        )
    return target


async def from_client(database: Database, hub: Hub, client: ClientConn, message: Relay) -> None:
    """Forward a client's relay message to a worker, or tell the client why not."""
    try:
        target = await worker_for_client(database, hub, client, message)
    except RelayRefused as refused:
        client.conn.send(refused.notice)
        return
    sender = Sender(
        kind="client",
        id=client.session_id,
        room=target.room_name,  # the room the client named: the worker was found in it
        name=client.username,
        user_id=str(client.user_id),
    )
    delivery = Delivery(sender=sender, payload=message.payload)
    _forward(
        delivery,
        client.sender_key,
        client.conn,
        target.conn,
        message.to,
        f"worker {message.to!r}",
    )


async def from_worker(database: Database, hub: Hub, worker: WorkerConn, message: Relay) -> None:
    """Forward a worker's relay message to a client session, or tell the worker why not."""
    try:
        target = await client_for_worker(database, hub, worker, message)
    except RelayRefused as refused:
        worker.conn.send(refused.notice)
        return
    sender = Sender(
        kind="worker",
        id=worker.worker_id,
        room=worker.room_name,
        name=worker.capabilities.name,
    )
    delivery = Delivery(sender=sender, payload=message.payload)
    _forward(
        delivery,
        worker.sender_key,
        worker.conn,
        target.conn,
        message.to,
        f"client session {message.to!r}",
    )


def _forward(
    delivery: Delivery,
    sender_key: str,
    source: Connection,
    target: Connection,
    peer: str,
    what: str,
) -> None:
    """Queue ``delivery`` for ``target`` if it fits; else tell ``source`` it was dropped."""
    if not target.offer(delivery, sender_key):
        source.tell_busy(
            peer,
            ErrorMessage(
                code="PEER_BUSY",
                message=f"{what} is not keeping up with what you send; message dropped. "
                "Send less at once, or try again later.",
                peer=peer,
            ),
        )
