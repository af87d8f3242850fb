"""The job index's rules: the server's store of reports (real SQLite, migrated by
Alembic) and the worker's reporter (a real job store), each without the network."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the server extra")

from sqlalchemy.orm import Session

from sleap_rtc.jobs.states import JobState
from sleap_rtc.protocol import index as ix
from sleap_rtc.protocol.signaling import MAX_MESSAGE_BYTES, JobReport, encode
from sleap_rtc.server import db
from sleap_rtc.server.errors import ApiError
from sleap_rtc.server.models import Room
from sleap_rtc.server.service import jobindex
from sleap_rtc.worker.reports import IndexReporter, fit, indexed_job
from sleap_rtc.worker.store import JobStore


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    """A migrated database, SQLite and PostgreSQL (the upsert differs by dialect)."""
    engine = db.create_engine(database_url)
    db.upgrade(engine)
    with db.session_factory(engine)() as opened:
        opened.add(Room(id="r1", name="lab"))
        opened.commit()
        yield opened
    engine.dispose()


def job(job_id: str = "abc123", state: str = "RUNNING", updated: float = 100.0) -> ix.IndexedJob:
    return ix.IndexedJob(
        job_id=job_id,
        kind="train",
        owner="ana",
        state=state,  # type: ignore[arg-type]
        created_at=50.0,
        updated_at=updated,
        history=[ix.StateEntry(at=50.0, state="QUEUED")],
    )


def points(*epochs: int, loss: float = 0.5) -> list[ix.LossPoint]:
    return [ix.LossPoint(epoch=e, loss=loss, val_loss=loss + 0.1, at=60.0 + e) for e in epochs]


def test_reports_are_stored_and_a_stale_one_changes_nothing(session: Session) -> None:
    first = jobindex.record_report(session, "r1", "w1", JobReport(job=job(), points=points(1, 2)))
    assert first.before is None and first.changed
    done = jobindex.record_report(
        session, "r1", "w1", JobReport(job=job(state="COMPLETE", updated=200.0))
    )
    assert done.before == "RUNNING" and done.changed
    stale = jobindex.record_report(
        session, "r1", "w1", JobReport(job=job(state="RUNNING", updated=150.0), points=points(3))
    )
    assert not stale.changed
    found = jobindex.find_job(session, "r1", "lab", "abc")
    assert found.job.state == "COMPLETE" and found.worker_id == "w1"
    # Points are kept (a stale record's too: they are facts, not state), and resent
    # points replace the old ones instead of doubling up.
    jobindex.record_report(
        session, "r1", "w1", JobReport(job=job(state="COMPLETE", updated=300.0), points=points(2))
    )
    epochs = [p.epoch for p in jobindex.job_points(session, "r1", "w1", "abc123")]
    assert epochs == [1, 2, 3]
    assert jobindex.index_since(session, "r1", "w1") == 300.0
    assert jobindex.index_since(session, "r1", "w2") is None


def test_a_worker_cannot_overwrite_another_workers_job(session: Session) -> None:
    jobindex.record_report(session, "r1", "w1", JobReport(job=job(state="COMPLETE")))
    jobindex.record_report(session, "r1", "w2", JobReport(job=job(state="FAILED", updated=999)))
    rows, total = jobindex.list_jobs(session, "r1", jobindex.JobFilter())
    assert total == 2 and {(r.worker_id, r.job.state) for r in rows} == {
        ("w1", "COMPLETE"),
        ("w2", "FAILED"),
    }
    # The same id from two workers is ambiguous, never silently one of them.
    with pytest.raises(ApiError) as caught:
        jobindex.find_job(session, "r1", "lab", "abc123")
    assert caught.value.status == 409 and caught.value.code == "AMBIGUOUS_JOB"


def test_prefixes_filters_and_paging(session: Session) -> None:
    for n, (job_id, state) in enumerate(
        [("aa11", "COMPLETE"), ("aa22", "FAILED"), ("bb33", "RUNNING")]
    ):
        made = job(job_id, state).model_copy(update={"created_at": 10.0 + n})
        jobindex.record_report(session, "r1", "w1", JobReport(job=made))
    assert jobindex.find_job(session, "r1", "lab", "bb").job.job_id == "bb33"
    with pytest.raises(ApiError) as ambiguous:
        jobindex.find_job(session, "r1", "lab", "aa")
    assert "aa11" in ambiguous.value.message and "aa22" in ambiguous.value.message
    with pytest.raises(ApiError) as missing:
        jobindex.find_job(session, "r1", "lab", "zz")
    assert missing.value.status == 404 and "jobs list --room lab" in missing.value.message

    def ids(**kw: object) -> list[str]:
        rows, _ = jobindex.list_jobs(session, "r1", jobindex.JobFilter(**kw))  # type: ignore[arg-type]
        return [r.job.job_id for r in rows]

    assert ids() == ["bb33", "aa22", "aa11"]  # newest first
    assert ids(states=frozenset({"COMPLETE", "FAILED"})) == ["aa22", "aa11"]
    assert ids(since=11.0) == ["bb33", "aa22"]
    assert ids(owner="bob") == [] and ids(owner="ana") == ["bb33", "aa22", "aa11"]
    assert ids(worker_ids=frozenset({"w9"})) == []
    assert ids(limit=1, offset=1) == ["aa22"]


def test_the_index_keeps_a_bounded_number_of_jobs_per_worker(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobindex, "MAX_JOBS_PER_WORKER", 3)
    for n in range(5):
        made = job(f"j{n}", "COMPLETE" if n != 1 else "RUNNING").model_copy(
            update={"created_at": float(n)}
        )
        jobindex.record_report(session, "r1", "w1", JobReport(job=made, points=points(1)))
    rows, total = jobindex.list_jobs(session, "r1", jobindex.JobFilter())
    # The oldest finished jobs went; the running one stays however old it is.
    assert total == 3 and sorted(r.job.job_id for r in rows) == ["j1", "j3", "j4"]
    assert jobindex.job_points(session, "r1", "w1", "j0") == []


def test_a_report_always_fits_one_message() -> None:
    huge = job().model_copy(
        update={
            "outputs": ["/m/" + "x" * 4000] * 64,
            "summary": "s" * 1024,
            "history": [ix.StateEntry(at=1.0, state="QUEUED", reason="r" * 1024)] * 16,
        }
    )
    report = fit(JobReport(job=huge, points=points(*range(200))))
    assert len(encode(report).encode()) <= MAX_MESSAGE_BYTES
    assert report.points and report.job.outputs  # cut, not emptied


def test_the_reporter_sends_changes_and_catches_up_after_a_registration(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    sent: list[JobReport] = []
    connected = True

    async def send(report: JobReport) -> bool:
        if connected:
            sent.append(report)
        return connected

    reporter = IndexReporter(store, send)
    store.listeners.append(reporter.changed)
    store.create("j1", "train", {"config_paths": ["/c.yaml"]}, JobState.QUEUED, owner="ana")
    store.transition("j1", JobState.RUNNING, reason="line one\nline two")
    for epoch in range(1, 251):
        store.add_point("j1", 1, epoch, 1.0 / epoch, float("nan"))

    assert asyncio.run(reporter.flush())
    assert [len(r.points) for r in sent] == [200, 50]
    assert sent[0].job.state == "RUNNING" and sent[0].job.reason == "line one\\nline two"
    assert sent[1].points[-1].epoch == 250 and sent[1].points[-1].val_loss is None

    # Disconnected: the change waits; a registration re-sends what the index lacks.
    connected = False
    store.transition("j1", JobState.COMPLETE)
    assert not asyncio.run(reporter.flush())
    connected = True
    sent.clear()
    reporter.registered(since=0.0)
    assert asyncio.run(reporter.flush())
    assert sent[0].job.state == "COMPLETE" and sum(len(r.points) for r in sent) == 250
    assert [h.state for h in sent[0].job.history] == ["QUEUED", "RUNNING", "COMPLETE"]
    # Nothing changed since: nothing more to send.
    sent.clear()
    reporter.registered(since=store.get("j1").updated_at + 1)  # type: ignore[union-attr]
    assert asyncio.run(reporter.flush()) and sent == []
    store.close()


def test_indexed_job_is_printable_and_bounded(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.create("j2", "track", {"data_path": "/v.mp4", "model_paths": ["/m"]}, JobState.QUEUED)
    store.transition("j2", JobState.FAILED, reason="\x1b[31mred\x1b[0m" + "x" * 5000)
    made = indexed_job(store, store.get("j2"))  # type: ignore[arg-type]
    assert made.reason is not None and "\x1b" not in made.reason and len(made.reason) <= 1024
    assert made.kind == "track" and made.summary.startswith("/v.mp4")
    store.close()


def test_the_migrations_make_the_schema_the_models_describe(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from sleap_rtc.server.models import Base

    engine = db.create_engine(db.sqlite_url(tmp_path))
    db.upgrade(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []
