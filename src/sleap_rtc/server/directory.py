"""The room listing: every worker a room knows, encoded once per change, kept in memory.

``GET /v1/rooms/{room}/workers`` answers from here. A connected worker's entry is
encoded when it is first listed after a change (its status, jobs, GPUs, or the
last-seen time a heartbeat moves) and cached on its
:class:`~sleap_rtc.server.hub.WorkerConn`; a heartbeat only drops that cache, so it
costs O(1) and writes nothing. Workers that are not connected come from the
database once per room (the first listing after the server starts) and are then
kept current by the disconnects this server sees, so a listing reads no worker
rows: it joins cached bytes, O(workers in the room), and filters by status and GPU
memory before it does.

Presence is one server process's (:mod:`~sleap_rtc.server.hub`), and so is this.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sleap_rtc.protocol.api import best_gpu_memory_mb
from sleap_rtc.server.hub import Hub, WorkerConn
from sleap_rtc.server.service import workers
from sleap_rtc.server.views import live_worker_entry, worker_entry

#: Listing order of the statuses: online first, then busy, then offline.
STATUS_ORDER = {"online": 0, "busy": 1, "offline": 2}


@dataclass(frozen=True)
class Listed:
    """One worker as the listing shows it: its sort key, filter values and JSON."""

    name: str
    status: str
    gpu_memory_mb: int
    encoded: bytes


def _listed(entry: dict[str, Any]) -> Listed:
    return Listed(
        name=str(entry["name"]),
        status=str(entry["status"]),
        gpu_memory_mb=best_gpu_memory_mb(
            (g.get("memory_free_mb"), int(g.get("memory_total_mb") or 0)) for g in entry["gpus"]
        ),
        encoded=json.dumps(entry, separators=(",", ":")).encode(),
    )


def listed_live(worker: WorkerConn) -> Listed:
    """A connected worker's entry, from its cache when nothing changed since."""
    cached = worker.listing
    if cached is None:
        cached = worker.listing = _listed(live_worker_entry(worker, online=True))
    assert isinstance(cached, Listed)
    return cached


class RoomDirectory:
    """The workers of each listed room that are not connected, as encoded entries."""

    def __init__(self) -> None:
        self._offline: dict[str, dict[str, Listed]] = {}
        #: Disconnects seen while a room's rows were being read: applied after them.
        self._pending: dict[str, dict[str, Listed]] = {}

    def loaded(self, room_id: str) -> bool:
        return room_id in self._offline

    def loading(self, room_id: str) -> None:
        """A read of ``room_id``'s rows starts; disconnects until :meth:`load` are kept."""
        self._pending.setdefault(room_id, {})

    def load(self, room_id: str, room_name: str, rows: list[workers.WorkerRow]) -> None:
        """Take a room's stored workers (once; a second read finds it loaded)."""
        pending = self._pending.pop(room_id, {})
        if room_id in self._offline:
            return
        entries = {row[0]: _listed(worker_entry(row, room_name, None)) for row in rows}
        entries.update(pending)
        self._offline[room_id] = entries

    def went_offline(self, worker: WorkerConn) -> None:
        """Keep what a worker that disconnected looked like, for the listing."""
        entry = _listed(live_worker_entry(worker, online=False))
        room = self._offline.get(worker.room_id)
        if room is not None:
            room[worker.worker_id] = entry
        elif worker.room_id in self._pending:
            self._pending[worker.room_id][worker.worker_id] = entry

    def forget(self, room_ids: Iterable[str]) -> None:
        """Rooms that were deleted."""
        for room_id in room_ids:
            self._offline.pop(room_id, None)
            self._pending.pop(room_id, None)

    def listing(
        self,
        room_id: str,
        hub: Hub,
        *,
        statuses: set[str] | None = None,
        min_gpu_memory: int | None = None,
        limit: int | None = None,
    ) -> tuple[bytes, int]:
        """The JSON array of the room's workers (online first, then by name and id) that
        match the filters, at most ``limit`` of them; and how many matched in all."""
        live = hub.room_workers(room_id)
        chosen: list[tuple[int, str, str, bytes]] = []

        def take(worker_id: str, listed: Listed) -> None:
            if statuses is not None and listed.status not in statuses:
                return
            if min_gpu_memory is not None and listed.gpu_memory_mb < min_gpu_memory:
                return
            chosen.append((STATUS_ORDER[listed.status], listed.name, worker_id, listed.encoded))

        connected = set()
        for worker in live:
            connected.add(worker.worker_id)
            take(worker.worker_id, listed_live(worker))
        if statuses is None or "offline" in statuses:
            for worker_id, listed in self._offline.get(room_id, {}).items():
                if worker_id not in connected:
                    take(worker_id, listed)
        chosen.sort()
        shown = chosen if limit is None else chosen[:limit]
        return b"[" + b",".join(item[3] for item in shown) + b"]", len(chosen)
