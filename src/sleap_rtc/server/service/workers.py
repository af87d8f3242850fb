"""Workers a room knows: their ids, whose key each id belongs to, when each was last seen."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sleap_rtc.protocol.signaling import Capabilities
from sleap_rtc.server.errors import ApiError
from sleap_rtc.server.models import Worker, utcnow


def worker_id_taken(worker_id: str, room_name: str) -> ApiError:
    return ApiError(
        409,
        "WORKER_ID_TAKEN",
        f"worker id {worker_id!r} already belongs to another worker key in room {room_name!r}; "
        "start this worker with the key it first registered with, or give it a new id by "
        "removing the worker_id file from its state folder",
    )


def record_worker(
    session: Session,
    room_id: str,
    room_name: str,
    worker_id: str,
    key_id: str,
    capabilities: Capabilities,
) -> None:
    """Record a worker's registration; raises ``WORKER_ID_TAKEN`` for another key's id.

    A worker id belongs to the key that first registered it, so a member with a
    key of their own can't take over (and listen in on) someone else's worker.
    The claim and the update are one conditional statement, so two keys
    registering the same new id at once can't both win.
    """
    now = utcnow()
    caps = capabilities.model_dump(mode="json")
    if session.get(Worker, (room_id, worker_id)) is None:
        session.add(
            Worker(
                room_id=room_id,
                worker_id=worker_id,
                key_id=key_id,
                name=capabilities.name,
                hostname=capabilities.hostname,
                capabilities=caps,
                first_seen=now,
                last_seen=now,
            )
        )
        try:
            session.commit()
            return
        except IntegrityError:
            session.rollback()  # registered by someone else meanwhile: check whose below
    claimed = session.execute(
        update(Worker)
        .where(
            Worker.room_id == room_id,
            Worker.worker_id == worker_id,
            (Worker.key_id == key_id) | Worker.key_id.is_(None),
        )
        .values(
            key_id=key_id,
            name=capabilities.name,
            hostname=capabilities.hostname,
            capabilities=caps,
            last_seen=now,
        )
    )
    if not getattr(claimed, "rowcount", 0):
        session.rollback()
        raise worker_id_taken(worker_id, room_name)
    session.commit()


def touch_workers(session: Session, seen: Iterable[tuple[str, str, datetime]]) -> None:
    """Save last-seen times of connected workers (room id, worker id, time)."""
    for room_id, worker_id, when in seen:
        session.execute(
            update(Worker)
            .where(Worker.room_id == room_id, Worker.worker_id == worker_id)
            .values(last_seen=when)
        )
    session.commit()


#: (worker id, name, hostname, stored capabilities, last seen)
WorkerRow = tuple[str, str, str, dict[str, Any], datetime]


def room_worker_rows(session: Session, room_id: str) -> list[WorkerRow]:
    rows = session.execute(
        select(
            Worker.worker_id, Worker.name, Worker.hostname, Worker.capabilities, Worker.last_seen
        ).where(Worker.room_id == room_id)
    ).all()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def room_workers(session: Session, room_id: str) -> Sequence[Worker]:
    return session.scalars(
        select(Worker).where(Worker.room_id == room_id).order_by(Worker.name)
    ).all()
