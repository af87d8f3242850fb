"""The channel abstraction every transport implements."""

from __future__ import annotations

import asyncio
from typing import Final

#: Messages buffered for a reader that isn't keeping up; then the channel closes.
INBOX_LIMIT: Final = 1024


class ChannelClosed(Exception):
    """The channel is closed; ``reason`` says why, if known."""

    def __init__(self, reason: str = "channel closed") -> None:
        super().__init__(reason)
        self.reason = reason


class Channel:
    """Ordered text messages between two peers.

    Transports feed :meth:`_deliver` and implement :meth:`_transmit` and
    :meth:`_shutdown`; users call :meth:`send`, :meth:`recv` and :meth:`close`.
    """

    kind: str = "channel"

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[str | ChannelClosed] = asyncio.Queue()
        self._closed: ChannelClosed | None = None
        self._shut = False
        self._cleanup: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def close_reason(self) -> str | None:
        return self._closed.reason if self._closed else None

    async def send(self, text: str) -> None:
        if self._closed is not None:
            raise ChannelClosed(self._closed.reason)
        await self._transmit(text)

    async def recv(self) -> str:
        """The next message; raises :class:`ChannelClosed` once the channel is closed."""
        if self._closed is not None and self._inbox.empty():
            raise ChannelClosed(self._closed.reason)
        item = await self._inbox.get()
        if isinstance(item, ChannelClosed):
            self._inbox.put_nowait(item)  # every later recv sees it too
            raise item
        return item

    async def close(self, reason: str = "closed by this side") -> None:
        """Close and release the transport (once, even after the channel was marked closed)."""
        if self._shut:
            return
        self._shut = True
        self._mark_closed(reason)
        await self._shutdown(reason)

    # -- for transports -------------------------------------------------------------------

    def _deliver(self, text: str) -> None:
        if self._closed is not None:
            return
        if self._inbox.qsize() >= INBOX_LIMIT:
            self._abort("peer sent faster than this side could read")
            return
        self._inbox.put_nowait(text)

    def _abort(self, reason: str) -> None:
        """Close from inside the transport: mark it closed now, release it soon."""
        self._mark_closed(reason)
        if not self._shut and self._cleanup is None:
            self._cleanup = asyncio.get_running_loop().create_task(self.close(reason))

    def _mark_closed(self, reason: str) -> None:
        if self._closed is None:
            self._closed = ChannelClosed(reason)
            self._inbox.put_nowait(self._closed)

    async def _transmit(self, text: str) -> None:
        raise NotImplementedError

    async def _shutdown(self, reason: str) -> None:
        return None
