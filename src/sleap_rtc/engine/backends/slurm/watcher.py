"""One poll for every SLURM job a worker follows (submitit's ``InfoWatcher`` shape).

Each followed job registers its id; one task asks SLURM about all registered ids
in a single :meth:`~sleap_rtc.engine.backends.slurm.tools.SlurmClient.job_states`
call every ``interval`` seconds (or at once after :meth:`SlurmWatcher.poke`), and
stops when nothing is registered. Readers take the last state seen, never wait
on SLURM themselves.

The pipeline's ``--chain=poll`` driver (:mod:`sleap_rtc.pipeline.driver`) batches
its own query per look, synchronously; it does not share this task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sleap_rtc.engine.backends.slurm.tools import SlurmClient, SlurmError

log = logging.getLogger(__name__)


class SlurmWatcher:
    """The latest SLURM state of each registered job, from one batched query per look."""

    def __init__(self, client: SlurmClient, *, interval: float) -> None:
        self.client = client
        self.interval = interval
        self._states: dict[str, str] = {}
        self._watched: dict[str, int] = {}
        self._poller: asyncio.Task[None] | None = None
        self._poke = asyncio.Event()

    def watch(self, slurm_id: str) -> None:
        """Include ``slurm_id`` in every look until as many :meth:`unwatch` calls."""
        self._watched[slurm_id] = self._watched.get(slurm_id, 0) + 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="slurm-poller")
        self.poke()

    def unwatch(self, slurm_id: str) -> None:
        count = self._watched.get(slurm_id, 0) - 1
        if count > 0:
            self._watched[slurm_id] = count
        else:
            self._watched.pop(slurm_id, None)
            self._states.pop(slurm_id, None)

    def poke(self) -> None:
        """Look again now (after a cancel, or when a job's result needs explaining)."""
        self._poke.set()

    def state_of(self, slurm_id: str) -> str | None:
        """The last state seen, or None before SLURM first reported the job."""
        return self._states.get(slurm_id)

    async def _poll(self) -> None:
        while self._watched:
            self._poke.clear()
            ids = list(self._watched)
            try:
                self._states.update(await asyncio.to_thread(self.client.job_states, ids))
            except SlurmError as exc:
                log.warning("SLURM state poll failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.interval)
