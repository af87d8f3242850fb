"""Live connections: which workers are online in which room, which clients are here.

Presence lives in memory (one server process); the database keeps what must
survive a restart (workers known to a room, their last-seen time). Every
connection gets a bounded outbound queue drained by one writer task, so a slow
peer can't stall the server. What other peers relay to a connection may fill
only part of that queue, and one sender only a part of that: a message that
doesn't fit is refused to its sender, so a member flooding a worker gets
errors, while the worker (and everyone else's channels to it) stays up. Only
a peer that doesn't read the server's own messages is disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from starlette.websockets import WebSocket

from sleap_rtc.protocol.signaling import (
    Capabilities,
    Gpu,
    JobControlResult,
    WorkerStatus,
    encode,
)
from sleap_rtc.server.logs import log

CLOSE_TOO_SLOW = 1013


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


class Connection:
    """One authenticated WebSocket and its outbound queue."""

    def __init__(self, ws: WebSocket, queue_limit: int) -> None:
        self.ws = ws
        self._queue: asyncio.Queue[tuple[str, str | None] | _Close] = asyncio.Queue(queue_limit + 1)
        self._limit = queue_limit
        #: Relayed messages may hold this much of the queue (the rest is for the
        #: server's own replies), and one sender this much.
        self.relay_limit = max(1, queue_limit * 3 // 4)
        self.sender_limit = max(1, queue_limit // 4)
        self._held: dict[str, int] = {}
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        #: When this connection was last told a peer is busy, per peer.
        self._busy_told: dict[str, float] = {}

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write())

    def tell_busy(self, peer: str, message: BaseModel, every_s: float = 1.0) -> None:
        """Tell this (sending) connection ``peer`` dropped its message, at most once a
        second per peer: a flooding sender that doesn't read would otherwise fill its
        own queue with these notices."""
        now = time.monotonic()
        if now - self._busy_told.get(peer, -every_s) < every_s:
            return
        if len(self._busy_told) > 1024:
            self._busy_told.clear()
        self._busy_told[peer] = now
        self.send(message)

    async def _write(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _Close):
                    await self.ws.close(item.code, item.reason)
                    return
                text, sender = item
                if sender is not None:
                    self._release(sender)
                await self.ws.send_text(text)
        except Exception:  # the socket is gone; the reader notices and cleans up
            return

    @property
    def closing(self) -> bool:
        return self._closing

    def send(self, message: BaseModel) -> bool:
        """Queue a message; a peer that lets its queue fill up is disconnected."""
        if self._closing:
            return False
        if self._queue.qsize() >= self._limit:
            self.close(CLOSE_TOO_SLOW, "peer is not reading its messages")
            return False
        self._queue.put_nowait((encode(message), None))
        return True

    def offer(self, message: BaseModel, sender: str) -> bool:
        """Queue a message relayed from ``sender``, if it fits; never disconnects this peer.

        False means the message was not queued: this peer's queue holds as many
        relayed messages as it may, or as many from ``sender`` as one sender may.
        """
        if self._closing:
            return False
        held = self._held.get(sender, 0)
        if held >= self.sender_limit or self._queue.qsize() >= self.relay_limit:
            return False
        self._held[sender] = held + 1
        self._queue.put_nowait((encode(message), sender))
        return True

    def _release(self, sender: str) -> None:
        left = self._held.get(sender, 0) - 1
        if left > 0:
            self._held[sender] = left
        else:
            self._held.pop(sender, None)

    def close(self, code: int, reason: str) -> None:
        """Close after nothing else: pending messages are dropped."""
        if self._closing:
            return
        self._closing = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._held.clear()
        self._queue.put_nowait(_Close(code, reason[:120]))

    async def close_and_wait(self, code: int, reason: str, timeout: float = 2.0) -> None:
        """:meth:`close`, then give the writer a moment to send the close frame."""
        self.close(code, reason)
        if self._writer is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._writer), timeout)

    async def finish(self) -> None:
        """Stop the writer once the connection has ended."""
        if self._writer is not None:
            if not self._writer.done():
                self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer


@dataclass
class WorkerConn:
    conn: Connection
    room_id: str
    room_name: str
    worker_id: str
    key_id: str
    capabilities: Capabilities
    status: WorkerStatus = "idle"
    running_jobs: int = 0
    gpus: list[Gpu] = field(default_factory=list)
    connected_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    last_heartbeat: float = field(default_factory=time.monotonic)
    last_seen: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: The capabilities and GPUs as plain data, made once per change for listings.
    capabilities_dict: dict[str, Any] = field(default_factory=dict)
    gpus_dicts: list[dict[str, Any]] = field(default_factory=list)
    #: Users found to be members of this worker's room: user id -> checked until.
    members_checked: dict[int, float] = field(default_factory=dict)
    #: Stop/cancel requests sent to this worker, waiting for its answer, by request id.
    controls: dict[str, asyncio.Future[JobControlResult]] = field(default_factory=dict)
    #: Its room-listing entry, encoded (:mod:`~sleap_rtc.server.directory`); None after
    #: anything it shows changed, so it is encoded again when next listed.
    listing: object | None = None

    def __post_init__(self) -> None:
        self.capabilities_dict = self.capabilities.model_dump(mode="json")
        self.gpus_dicts = [g.model_dump(mode="json") for g in self.gpus]

    @property
    def sender_key(self) -> str:
        """Who this worker is as a sender of relayed messages."""
        return f"worker:{self.room_id}:{self.worker_id}"

    def set_gpus(self, gpus: list[Gpu]) -> None:
        self.gpus = gpus
        self.gpus_dicts = [g.model_dump(mode="json") for g in gpus]
        self.listing = None

    def heard(self) -> None:
        """Anything arrived from it: O(1), no database write (see :mod:`.sweep`)."""
        self.last_heartbeat = time.monotonic()
        self.last_seen = datetime.now(UTC)
        self.listing = None

    def report(self, status: WorkerStatus, running_jobs: int, gpus: list[Gpu] | None) -> bool:
        """Take a heartbeat's status; True when what the room sees of it changed."""
        before = (self.status, self.running_jobs, self.gpus)
        self.status = status
        self.running_jobs = running_jobs
        if gpus is not None:
            self.set_gpus(gpus)
        self.listing = None
        return (self.status, self.running_jobs, self.gpus) != before


@dataclass
class ClientConn:
    conn: Connection
    session_id: str
    user_id: int
    username: str
    expires_at: datetime
    #: The login session of the access token this connection authenticated with.
    login_session: str = ""
    #: Rooms this user was found a member of: name -> (room id, checked until).
    rooms_checked: dict[str, tuple[str, float]] = field(default_factory=dict)

    @property
    def sender_key(self) -> str:
        """Who this client is as a sender of relayed messages: the user, over all sessions."""
        return f"user:{self.user_id}"


class Hub:
    def __init__(self) -> None:
        self.workers: dict[tuple[str, str], WorkerConn] = {}
        #: The same connections by room, so a room's workers are found in O(room).
        self.by_room: dict[str, dict[str, WorkerConn]] = {}
        self.clients: dict[str, ClientConn] = {}

    # workers
    def add_worker(self, worker: WorkerConn, replaced_code: int) -> bool:
        """Make ``worker`` the live connection for its id; False if another key holds the id.

        The same key connecting again replaces its old connection (a worker that
        reconnects before the server noticed it had gone).
        """
        key = (worker.room_id, worker.worker_id)
        old = self.workers.get(key)
        if old is not None and old is not worker:
            if old.key_id != worker.key_id:
                return False
            log.info(
                "worker %s (%s) reconnected; closing its old connection",
                worker.worker_id,
                worker.capabilities.name,
            )
            old.conn.close(replaced_code, "replaced by a new connection of the same worker")
        self.workers[key] = worker
        self.by_room.setdefault(worker.room_id, {})[worker.worker_id] = worker
        return True

    def remove_worker(self, worker: WorkerConn) -> bool:
        key = (worker.room_id, worker.worker_id)
        if self.workers.get(key) is worker:
            del self.workers[key]
            room = self.by_room.get(worker.room_id, {})
            room.pop(worker.worker_id, None)
            if not room:
                self.by_room.pop(worker.room_id, None)
            return True
        return False

    def worker(self, room_id: str, worker_id: str) -> WorkerConn | None:
        found = self.workers.get((room_id, worker_id))
        return None if found is None or found.conn.closing else found

    def room_workers(self, room_id: str) -> list[WorkerConn]:
        room = self.by_room.get(room_id, {})
        return [w for w in room.values() if not w.conn.closing]

    def online_count(self, room_id: str) -> int:
        return len(self.room_workers(room_id))

    def disconnect_key(self, key_id: str, code: int, reason: str) -> int:
        hit = [w for w in self.workers.values() if w.key_id == key_id]
        for worker in hit:
            worker.conn.close(code, reason)
        return len(hit)

    def disconnect_room(self, room_id: str, code: int, reason: str) -> int:
        hit = list(self.by_room.get(room_id, {}).values())
        for worker in hit:
            worker.conn.close(code, reason)
        return len(hit)

    def overdue(self, timeout_s: float) -> list[WorkerConn]:
        now = time.monotonic()
        return [w for w in self.workers.values() if now - w.last_heartbeat > timeout_s]

    # clients
    def add_client(self, client: ClientConn) -> None:
        self.clients[client.session_id] = client

    def remove_client(self, client: ClientConn) -> None:
        if self.clients.get(client.session_id) is client:
            del self.clients[client.session_id]

    def disconnect_login_session(self, login_session: str, code: int, reason: str) -> int:
        hit = [c for c in self.clients.values() if c.login_session == login_session]
        for client in hit:
            client.conn.close(code, reason)
        return len(hit)

    def close_all(self, code: int, reason: str) -> None:
        for worker in list(self.workers.values()):
            worker.conn.close(code, reason)
        for client in list(self.clients.values()):
            client.conn.close(code, reason)
