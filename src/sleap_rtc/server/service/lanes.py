"""Relay lanes' rules: who may wait, who may pair, what frames may cost.

- A worker waits only under its own id (the caller checks the key), at most
  :data:`MAX_WAITING_PER_WORKER` halves at once.
- A client pairs only with the half whose digest its token has, and only when it
  is the account the worker named; anything else is refused, and the waiting half
  with it (a token in the wrong hands is spent).
- Pairs at once are bounded per user and for the server; each frame spends the
  user's budget and the server's (:class:`~sleap_rtc.server.service.relay.RelayBudget`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from starlette.websockets import WebSocket

from sleap_rtc.protocol.signaling import CLOSE_FORBIDDEN
from sleap_rtc.server.service.relay import RelayBudget

#: Worker halves waiting at once for one worker.
MAX_WAITING_PER_WORKER: Final = 8
#: Pairs at once for one user, and on the whole server.
MAX_PAIRS_PER_USER: Final = 8
MAX_PAIRS: Final = 256


class LaneRefused(Exception):
    def __init__(self, message: str, close_code: int = CLOSE_FORBIDDEN) -> None:
        super().__init__(message)
        self.message = message
        self.close_code = close_code


@dataclass
class Waiting:
    worker: tuple[str, str]  # (room id, worker id)
    user_id: str
    ws: WebSocket
    #: False once the worker's registered connection is gone (its key revoked, its
    #: room deleted, a reconnect): the pair ends then too.
    alive: Callable[[], bool] = lambda: True
    #: The client's socket once paired (None: refused).
    paired: asyncio.Future[WebSocket | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    #: Set when the pair is over, so the worker's handler returns.
    over: asyncio.Event = field(default_factory=asyncio.Event)


class LaneBoard:
    """Waiting halves by token digest, pairs counted, and the budgets frames spend."""

    def __init__(self, mib_per_user: int, mib_total: int) -> None:
        #: 0 for either turns relay lanes off.
        self.enabled = mib_per_user > 0 and mib_total > 0
        self._per_user = RelayBudget(max(1, mib_per_user) * 1024, scope="lane-user")
        self._total = RelayBudget(max(1, mib_total) * 1024, scope="lane-all")
        self._waiting: dict[str, Waiting] = {}
        self._pairs: Counter[str] = Counter()

    @property
    def pairs(self) -> int:
        return sum(self._pairs.values())

    def wait(self, digest: str, waiting: Waiting) -> None:
        if digest in self._waiting:
            raise LaneRefused("that token is waiting already")
        if sum(w.worker == waiting.worker for w in self._waiting.values()) >= (
            MAX_WAITING_PER_WORKER
        ):
            raise LaneRefused(f"at most {MAX_WAITING_PER_WORKER} relay lanes wait per worker")
        self._waiting[digest] = waiting

    def forget(self, digest: str, waiting: Waiting) -> None:
        if self._waiting.get(digest) is waiting:
            del self._waiting[digest]

    def take(self, token: str, user_id: str) -> Waiting:
        """The half the client's token pairs with; LaneRefused when there is none for it."""
        digest = hashlib.sha256(bytes.fromhex(token)).hexdigest()
        waiting = self._waiting.pop(digest, None)
        if waiting is None:
            raise LaneRefused("no relay lane waits for that token (ask the worker again)")
        if waiting.user_id != user_id:
            waiting.paired.set_result(None)
            raise LaneRefused("that relay lane is for another account")
        if self._pairs[user_id] >= MAX_PAIRS_PER_USER or self.pairs >= MAX_PAIRS:
            waiting.paired.set_result(None)
            raise LaneRefused(
                f"too many relay lanes at once (at most {MAX_PAIRS_PER_USER} per user); "
                "files go over the channel"
            )
        self._pairs[user_id] += 1
        return waiting

    def done(self, user_id: str) -> None:
        self._pairs[user_id] -= 1
        if self._pairs[user_id] <= 0:
            del self._pairs[user_id]

    async def spend(self, user_id: str, size: int) -> None:
        await self._per_user.spend(user_id, size)
        await self._total.spend("all", size)
