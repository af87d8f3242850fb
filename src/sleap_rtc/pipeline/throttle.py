"""How fast a pipeline submits, how much of it may wait in the queue, how often it looks.

A job file's ``throttle`` caps ``max_submit_per_s`` sbatch calls per second and
``max_queued`` jobs of the pipeline pending or running at once; the stages past that
are submitted as room frees, so a 300-job pipeline neither floods the controller nor
trips a site's limit on queued jobs. :class:`Backoff` is the polling interval that
doubles while nothing changes (up to :data:`BACKOFF_FACTOR` times the base) and drops
back to the base when something does. Both take their clock and sleep, so tests can
drive them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

#: A poll interval grows at most to this many times the base while nothing changes.
BACKOFF_FACTOR = 8.0


class ThrottleSettings(BaseModel):
    """A job file's ``throttle``: unset fields don't limit anything."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_submit_per_s: float | None = Field(default=None, gt=0, le=1000)
    max_queued: int | None = Field(default=None, ge=1, le=100_000)


class Throttle:
    """Spaces sbatch calls and says how many more jobs may be queued now."""

    def __init__(
        self,
        settings: ThrottleSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.settings = settings or ThrottleSettings()
        self.clock = clock
        self.sleep = sleep
        self._last: float | None = None
        #: When each sbatch call was let through (the clock's time).
        self.submitted_at: list[float] = []

    def room(self, queued: int) -> int | None:
        """How many more jobs may go in, with ``queued`` of this pipeline's in the queue;
        None for no limit."""
        cap = self.settings.max_queued
        return None if cap is None else max(0, cap - queued)

    def wait_turn(self) -> None:
        """Sleep until the next sbatch call is allowed, and count it."""
        rate = self.settings.max_submit_per_s
        now = self.clock()
        if rate is not None and self._last is not None:
            due = self._last + 1.0 / rate
            if due > now:
                self.sleep(due - now)
                now = self.clock()
        self._last = now
        self.submitted_at.append(now)


class Backoff:
    """A polling interval: the base after a change, doubling while nothing changes."""

    def __init__(self, base: float, factor: float = BACKOFF_FACTOR) -> None:
        self.base = base
        self.most = base * factor
        self.current = base

    def next(self, changed: bool) -> float:
        """The wait before the next look, given whether the last look saw a change."""
        self.current = self.base if changed else min(self.current * 2, self.most)
        return self.current
