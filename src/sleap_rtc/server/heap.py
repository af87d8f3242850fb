"""Keeping connections out of the garbage collector's full passes.

Each connected worker holds a few hundred objects that live as long as its
connection. With ten thousand connected, a full collection walks millions of
objects and stops the server for about a second, and while a fleet connects
Python runs one each time the long-lived objects grew by a quarter: many seconds
of pauses in a 30 s reconnect (measured with ``bench/server_presence.py --gc-stats``).

:class:`HeapPolicy` freezes (:func:`gc.freeze`) what exists whenever the number of
connections grew by :data:`FREEZE_EVERY` since the last freeze, so the collector
looks only at what is newer. Frozen objects are never collected, so when
connections that went away add up to a quarter of those frozen, everything is
thawed, collected once and frozen again: reference cycles of closed connections
are freed, at the cost of the one full pass Python would have made anyway.
"""

from __future__ import annotations

import gc

#: Connections added between two freezes.
FREEZE_EVERY = 500


class HeapPolicy:
    def __init__(self, freeze_every: int = FREEZE_EVERY) -> None:
        self._every = freeze_every
        self._frozen_at = 0
        self._gone = 0
        self.freezes = 0
        self.collections = 0

    def left(self) -> None:
        """One connection ended."""
        self._gone += 1

    def tick(self, connected: int) -> None:
        """Called now and then (the sweep) with the number of connections."""
        if self._gone >= max(self._every, self._frozen_at // 4):
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self.collections += 1
            self._gone = 0
            self._frozen_at = connected
        elif connected - self._frozen_at >= self._every:
            gc.freeze()
            self.freezes += 1
            self._frozen_at = connected
        elif connected < self._frozen_at:
            self._frozen_at = connected
