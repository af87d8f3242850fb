"""Workers a room knows: their ids, whose key each id belongs to, when each was last seen."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session

from sleap_rtc.protocol.signaling import Capabilities
from sleap_rtc.server.db import dialect_insert
from sleap_rtc.server.errors import ApiError
from sleap_rtc.server.models import Worker, utcnow
from sleap_rtc.server.service.jobindex import indexed_until


def worker_id_taken(worker_id: str, room_name: str) -> ApiError:
    return ApiError(
        409,
        "WORKER_ID_TAKEN",
        f"worker id {worker_id!r} already belongs to another worker key in room {room_name!r}; "
        "start this worker with the key it first registered with, or give it a new id by "
        "removing the worker_id file from its state folder",
    )


@dataclass(frozen=True)
class Registration:
    """One worker's ``register``, to record (:func:`record_registrations`)."""

    room_id: str
    room_name: str
    worker_id: str
    key_id: str
    capabilities: Capabilities


def record_registrations(
    session: Session, registrations: Sequence[Registration]
) -> list[float | ApiError | None]:
    """Record several registrations in one transaction, in three statements for all.

    For each, in order: up to when the job index has the worker's jobs, or the
    ``WORKER_ID_TAKEN`` error. A worker id belongs to the key that first registered
    it, so a member with a key of their own can't take over (and listen in on)
    someone else's worker; the upsert's update applies only for that key, so even a
    registration the check let through can't move an id to another key.
    """
    pairs = list({(r.room_id, r.worker_id) for r in registrations})
    owners: dict[tuple[str, str], str | None] = {
        (row[0], row[1]): row[2]
        for row in session.execute(
            select(Worker.room_id, Worker.worker_id, Worker.key_id).where(
                tuple_(Worker.room_id, Worker.worker_id).in_(pairs)
            )
        )
    }
    now = utcnow()
    answers: list[float | ApiError | None] = []
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for reg in registrations:
        pair = (reg.room_id, reg.worker_id)
        owner = owners.get(pair)
        if owner is not None and owner != reg.key_id:
            answers.append(worker_id_taken(reg.worker_id, reg.room_name))
            continue
        owners[pair] = reg.key_id  # a second key in the same batch finds it taken
        caps = reg.capabilities
        rows[pair] = {
            "room_id": reg.room_id,
            "worker_id": reg.worker_id,
            "key_id": reg.key_id,
            "name": caps.name,
            "hostname": caps.hostname,
            "capabilities": caps.model_dump(mode="json"),
            "first_seen": now,
            "last_seen": now,
        }
        answers.append(None)
    if rows:
        statement = dialect_insert(session.get_bind().dialect.name)(Worker)
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=[Worker.room_id, Worker.worker_id],
            set_={
                name: excluded[name]
                for name in ("key_id", "name", "hostname", "capabilities", "last_seen")
            },
            where=(Worker.key_id == excluded.key_id) | Worker.key_id.is_(None),
        )
        session.connection().execute(statement, list(rows.values()))
        since = indexed_until(session, list(rows))
        for index, reg in enumerate(registrations):
            if answers[index] is None:
                answers[index] = since.get((reg.room_id, reg.worker_id))
    session.commit()
    return answers


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
