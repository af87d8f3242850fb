"""Worker registrations written in batches: who owns an id, and the group commit.

Real databases (SQLite and PostgreSQL, migrated by Alembic): the upsert differs by
dialect, and a batch must decide ownership row by row as one commit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence

import pytest

pytest.importorskip("sqlalchemy", reason="the server extra")

from sqlalchemy.orm import Session

from sleap_rtc.protocol import index as ix
from sleap_rtc.protocol.signaling import Capabilities, JobReport
from sleap_rtc.server import db
from sleap_rtc.server.batch import GroupCommit
from sleap_rtc.server.errors import ApiError
from sleap_rtc.server.models import Room, Worker, WorkerKey
from sleap_rtc.server.service import jobindex
from sleap_rtc.server.service.workers import Registration, record_registrations


@pytest.fixture
def database(database_url: str) -> Iterator[db.Database]:
    engine = db.create_engine(database_url)
    db.upgrade(engine)
    sessions = db.session_factory(engine)
    with sessions() as session:
        session.add(Room(id="r1", name="lab"))
        session.flush()
        for key in ("k-alice", "k-bob"):
            session.add(WorkerKey(id=key, room_id="r1", name=key, secret_hash=key))
        session.commit()
    yield db.Database(engine, sessions)
    engine.dispose()


def reg(worker_id: str, key: str, name: str | None = None) -> Registration:
    return Registration("r1", "lab", worker_id, key, Capabilities(name=name or worker_id))


def test_a_batch_decides_each_id_for_the_key_that_first_had_it(database: db.Database) -> None:
    with database.sessions() as session:
        assert record_registrations(session, [reg("w-a", "k-alice")]) == [None]
        report = JobReport(
            job=ix.IndexedJob(
                job_id="j1", kind="train", state="RUNNING", created_at=10.0, updated_at=42.0
            )
        )
        jobindex.record_report(session, "r1", "w-a", report)
    with database.sessions() as session:
        answers = record_registrations(
            session,
            [
                reg("w-a", "k-bob"),  # alice's id: refused
                reg("w-a", "k-alice", "renamed"),  # alice again: taken in, since = 42
                reg("w-new", "k-bob"),  # a new id: bob's now
                reg("w-new", "k-alice"),  # ...so alice, later in the same batch, is refused
            ],
        )
    assert [a.code if isinstance(a, ApiError) else a for a in answers] == [
        "WORKER_ID_TAKEN",
        42.0,
        None,
        "WORKER_ID_TAKEN",
    ]
    with database.sessions() as session:
        rows = {w.worker_id: (w.key_id, w.name) for w in session.query(Worker)}
    assert rows == {"w-a": ("k-alice", "renamed"), "w-new": ("k-bob", "w-new")}


async def test_requests_that_arrive_together_share_one_call(database: db.Database) -> None:
    calls: list[int] = []

    def record(session: Session, items: Sequence[Registration]) -> list[object]:
        calls.append(len(items))
        time.sleep(0.2)  # a slow commit: what arrives meanwhile waits for the next one
        return list(record_registrations(session, items))

    batcher: GroupCommit[Registration, object] = GroupCommit(database, record)
    first = asyncio.ensure_future(batcher.submit(reg("w-first", "k-alice")))
    await asyncio.sleep(0.05)  # its call is running
    answers = await asyncio.gather(*(batcher.submit(reg(f"w-{i}", "k-alice")) for i in range(20)))
    assert await first is None and answers == [None] * 20
    assert calls == [1, 20]

    def broken(session: Session, items: Sequence[Registration]) -> list[object]:
        raise RuntimeError("database is gone")

    failing: GroupCommit[Registration, object] = GroupCommit(database, broken)
    results = await asyncio.gather(
        *(failing.submit(reg(f"x-{i}", "k-alice")) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)  # every request learns of it
