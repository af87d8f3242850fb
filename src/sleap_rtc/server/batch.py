"""Group commit: database writes that arrive together share one transaction.

A thousand workers reconnecting after a server restart each register, and each
registration is a row to write. One commit per row makes the database the
bottleneck; :class:`GroupCommit` runs the first request at once and gathers every
request that arrives while it runs into the next call, so the commits per second
stay low however many requests there are, and no request waits for a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

from sleap_rtc.server.db import Database

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Calls ``fn(session, items)`` (one transaction; one result per item, in order)."""

    def __init__(
        self,
        database: Database,
        fn: Callable[[Session, Sequence[T]], Sequence[R]],
        *,
        max_batch: int = 500,
    ) -> None:
        self._database = database
        self._fn = fn
        self._max = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """``item``'s result, once the batch it went into committed."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="group-commit")
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            try:
                results: Sequence[Any] = await self._database.run(
                    self._fn, [item for item, _ in batch]
                )
            except Exception as exc:  # every request of the batch learns of it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
