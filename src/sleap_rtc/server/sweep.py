"""The server's upkeep while it runs: heartbeat timeouts, last-seen times, expired rows.

One task per server (started and stopped by the app's lifespan). A worker that
sends no heartbeat for ``heartbeat_timeout_s`` is marked offline and
disconnected; last-seen times of connected workers are saved every 30 s (and at
shutdown), so a restart loses at most that much; expired rooms, invites and
refresh tokens are deleted every minute, and the workers of an expired room
disconnected.
"""

from __future__ import annotations

import asyncio

from starlette.concurrency import run_in_threadpool

from sleap_rtc.protocol.signaling import CLOSE_FORBIDDEN, CLOSE_HEARTBEAT_TIMEOUT
from sleap_rtc.server import views
from sleap_rtc.server.hub import WorkerConn
from sleap_rtc.server.logs import log
from sleap_rtc.server.service import rooms, workers
from sleap_rtc.server.state import ServerState


def save_last_seen(state: ServerState, chosen: list[WorkerConn] | None = None) -> None:
    """Write last-seen times of ``chosen`` workers (default: every connected one).

    Blocking (call it in a thread); a failure is logged, never raised, as this runs
    from the sweeper and at shutdown.
    """
    live = list(state.hub.workers.values()) if chosen is None else chosen
    seen = [(w.room_id, w.worker_id, w.last_seen) for w in live]
    if not seen:
        return
    try:
        with state.database.sessions() as session:
            workers.touch_workers(session, seen)
    except Exception:
        log.exception("could not save workers' last-seen times")


def worker_event(state: ServerState, worker: WorkerConn, *, online: bool) -> None:
    """Tell the room's dashboards a worker came, went or changed (status, GPUs)."""
    state.events.publish(worker.room_id, "worker", views.live_worker_entry(worker, online))


def worker_left(state: ServerState, worker: WorkerConn) -> None:
    """A worker was taken out of the hub: the listing keeps it as offline, and the
    room's dashboards are told."""
    state.directory.went_offline(worker)
    state.heap.left()
    worker_event(state, worker, online=False)


async def sweep(state: ServerState) -> None:
    """Drop workers that stopped sending heartbeats; save last-seen; purge expired rows."""
    tick = min(1.0, state.settings.heartbeat_interval_s / 2)
    loop = asyncio.get_running_loop()
    last_save = last_purge = loop.time()
    while True:
        await asyncio.sleep(tick)
        state.heap.tick(len(state.hub.workers))
        for worker in state.hub.overdue(state.settings.heartbeat_timeout_s):
            if state.hub.remove_worker(worker):
                log.info(
                    "worker %s (%s) missed its heartbeats; marked offline",
                    worker.worker_id,
                    worker.capabilities.name,
                )
                worker.conn.close(CLOSE_HEARTBEAT_TIMEOUT, "no heartbeat")
                worker_left(state, worker)
                await run_in_threadpool(save_last_seen, state, [worker])
        now = loop.time()
        if now - last_save >= 30:
            last_save = now
            await run_in_threadpool(save_last_seen, state)
        if now - last_purge >= 60:
            last_purge = now
            try:
                removed = await state.database.run(rooms.purge_expired)
            except Exception:
                log.exception("could not purge expired rooms")
                continue
            state.directory.forget(removed)
            for room_id in removed:
                state.worker_keys.forget_room(room_id)
                state.hub.disconnect_room(room_id, CLOSE_FORBIDDEN, "room has expired")
