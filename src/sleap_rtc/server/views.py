"""How the server shows a worker and an indexed job, in listings and live events alike.

The routes answer with these, and the live events (:mod:`sleap_rtc.server.events`)
carry the same shapes, so a dashboard row looks the same read either way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sleap_rtc.jobs.commandline import command_line
from sleap_rtc.protocol import api
from sleap_rtc.protocol.index import TERMINAL, IndexedJob
from sleap_rtc.server.hub import Hub, WorkerConn
from sleap_rtc.server.service import workers


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def presence(live: WorkerConn | None) -> api.PresenceStatus:
    if live is None:
        return "offline"
    return "busy" if live.status == "busy" else "online"


def worker_entry(row: workers.WorkerRow, room_name: str, live: WorkerConn | None) -> dict[str, Any]:
    """One worker as in :class:`api.WorkerView`, built as plain data.

    Listing a room with a thousand workers builds no model per worker: the live
    part comes from the connection, the rest from the stored capabilities.
    """
    worker_id, name, hostname, stored, last_seen = row
    caps: dict[str, Any] = live.capabilities_dict if live else (stored or {})
    return {
        "id": worker_id,
        "name": caps.get("name") or name,
        "room": room_name,
        "status": presence(live),
        "hostname": caps.get("hostname") or hostname,
        "accelerator": caps.get("accelerator", "cpu"),
        "gpus": live.gpus_dicts if live else list(caps.get("gpus", [])),
        "running_jobs": live.running_jobs if live else 0,
        "max_concurrent_jobs": int(caps.get("max_concurrent_jobs", 1)),
        "sleap_nn_version": caps.get("sleap_nn_version"),
        "backends": list(caps.get("backends", [])),
        "mounts": list(caps.get("mounts", [])),
        "sandbox": str(caps.get("sandbox", "off")),
        "last_seen": iso(live.last_seen if live else last_seen),
        "connected_since": iso(live.connected_at) if live else None,
    }


def live_worker_entry(worker: WorkerConn, online: bool) -> dict[str, Any]:
    """A connected worker's entry (``online=False``: as it is shown once it left)."""
    caps = worker.capabilities
    row = (worker.worker_id, caps.name, caps.hostname, worker.capabilities_dict, worker.last_seen)
    return worker_entry(row, worker.room_name, worker if online else None)


def may_control(owner: str | None, state: str, username: str) -> bool:
    """Whether ``username`` may stop or cancel a job now: its owner, while it runs or
    waits. (The worker checks the owner again; its record is the one that counts.)"""
    return owner is not None and owner == username and state not in TERMINAL


def job_view(
    hub: Hub,
    room_id: str,
    room_name: str,
    worker_name: str,
    worker_id: str,
    job: IndexedJob,
    reported_at: datetime,
    username: str | None = None,
) -> api.JobView:
    """``job`` as a member of the room reads it (``username``: who asks, for
    ``can_control``)."""
    return api.JobView(
        **job.model_dump(),
        room=room_name,
        worker_id=worker_id,
        worker_name=worker_name,
        worker_status=presence(hub.worker(room_id, worker_id)),
        reported_at=reported_at,
        command=command_line(job.kind, room_name, worker_name, job.args),
        can_control=username is not None and may_control(job.owner, job.state, username),
    )
