"""Worker keys recently checked, so a reconnecting fleet doesn't query each one.

A worker connects with its key's secret; the server looks the key up (and its room)
once and then answers from memory for :data:`TTL_S`. Whatever could make a cached
answer wrong is done by this server process and forgets the entry at once: a key
revoked (:meth:`WorkerKeyCache.forget_key`), a room deleted or expired
(:meth:`WorkerKeyCache.forget_room`). A room's expiry time is checked on every use.
"""

from __future__ import annotations

import time

from sleap_rtc.server import auth
from sleap_rtc.server.db import Database
from sleap_rtc.server.models import Room, WorkerKey, utcnow
from sleap_rtc.server.service import keys

#: How long a checked key is trusted without asking the database again.
TTL_S = 60.0
#: Most keys remembered; the oldest go first.
MAX_KEYS = 100_000


class WorkerKeyCache:
    def __init__(self, database: Database, ttl_s: float = TTL_S) -> None:
        self._database = database
        self._ttl = ttl_s
        self._known: dict[str, tuple[float, WorkerKey, Room]] = {}

    async def authenticate(self, secret: str) -> tuple[WorkerKey, Room]:
        """The key and room for ``secret``; :class:`~sleap_rtc.server.auth.AuthError` if
        it can't be used (unknown, revoked, or its room expired)."""
        digest = auth.digest(secret)
        cached = self._known.get(digest)
        if cached is not None and time.monotonic() < cached[0]:
            _, key, room = cached
            if room.expires_at is not None and room.expires_at <= utcnow():
                raise auth.AuthError("ROOM_EXPIRED", f"room {room.name!r} has expired")
            return key, room
        key, room = await self._database.run(keys.authenticate_worker, secret)
        if len(self._known) >= MAX_KEYS:
            self._known.pop(next(iter(self._known)))
        self._known[digest] = (time.monotonic() + self._ttl, key, room)
        return key, room

    def forget_key(self, key_id: str) -> None:
        self._known = {d: v for d, v in self._known.items() if v[1].id != key_id}

    def forget_room(self, room_id: str) -> None:
        self._known = {d: v for d, v in self._known.items() if v[2].id != room_id}
