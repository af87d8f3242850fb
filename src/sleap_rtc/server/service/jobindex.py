"""The job index: workers' reports in, members' listings out.

A report names a job by the reporting worker's own id (the connection says
which worker it is), so a worker can only write its own jobs. A report older
than what the index holds is ignored, so reports that cross on a reconnect
can't move a job back. The index is bounded per worker (oldest finished jobs
go first) and per job (loss points).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.orm import Session, undefer

from sleap_rtc.protocol import index as ix
from sleap_rtc.protocol.signaling import JobReport
from sleap_rtc.server.db import dialect_insert
from sleap_rtc.server.errors import ApiError
from sleap_rtc.server.models import IndexedJob, LossPoint, utcnow

#: Most jobs the index keeps per worker; the oldest finished ones are dropped first.
MAX_JOBS_PER_WORKER = 5_000
#: Most candidates named when a job id prefix is ambiguous.
MAX_CANDIDATES = 5


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True)
class Recorded:
    """What a report changed: the state before (None for a new job) and the job now."""

    before: str | None
    job: ix.IndexedJob
    changed: bool


def index_since(session: Session, room_id: str, worker_id: str) -> float | None:
    """Up to when (the worker's clock) the index has this worker's jobs."""
    return indexed_until(session, [(room_id, worker_id)]).get((room_id, worker_id))


def indexed_until(
    session: Session, workers: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], float]:
    """:func:`index_since` of several (room id, worker id) at once; those with no job
    indexed are left out."""
    key = (IndexedJob.room_id, IndexedJob.worker_id)
    rows = session.execute(
        select(*key, func.max(IndexedJob.worker_updated))
        .where(tuple_(*key).in_(list(workers)))
        .group_by(*key)
    )
    return {(row[0], row[1]): row[2] for row in rows}


def record_report(session: Session, room_id: str, worker_id: str, report: JobReport) -> Recorded:
    """Store one report of ``worker_id``'s; returns what changed."""
    job = report.job
    row = session.get(IndexedJob, (room_id, worker_id, job.job_id))
    before = row.state if row is not None else None
    if row is not None and row.worker_updated > job.updated_at:
        _add_points(session, room_id, worker_id, job.job_id, report.points)
        if report.log:
            row.log_tail = merge_log(row.log_tail or [], report.log)
        session.commit()
        return Recorded(before, view_of(row).job, changed=False)
    if row is None:
        _make_room(session, room_id, worker_id)
        row = IndexedJob(room_id=room_id, worker_id=worker_id, job_id=job.job_id)
        session.add(row)
    row.owner = job.owner
    row.kind = job.kind
    row.state = job.state
    row.summary = job.summary
    row.reason = job.reason
    row.exit_code = job.exit_code
    row.stopped_early = job.stopped_early
    row.elapsed_s = job.elapsed_s
    row.notify = job.notify
    row.created_at = _when(job.created_at)
    row.updated_at = _when(job.updated_at)
    row.worker_updated = job.updated_at
    row.reported_at = utcnow()
    row.history = [h.model_dump(mode="json") for h in job.history]
    row.progress = job.progress.model_dump(mode="json") if job.progress else None
    row.outputs = list(job.outputs)
    row.results = [r.model_dump(mode="json") for r in job.results]
    row.args = list(job.args)
    if report.log:
        row.log_tail = merge_log(row.log_tail or [], report.log)
    session.flush()
    _add_points(session, room_id, worker_id, job.job_id, report.points)
    session.commit()
    return Recorded(before, job, changed=before != job.state)


def merge_log(tail: list[Any], lines: Sequence[ix.LogLine]) -> list[list[Any]]:
    """``tail`` (``[n, text]`` pairs) with ``lines`` added: ordered by line number, a
    repeated number replaced, the newest :data:`~ix.MAX_LOG_LINES_PER_JOB` kept."""
    merged = {int(n): str(text) for n, text in tail}
    merged.update((line.n, line.text) for line in lines)
    kept = sorted(merged.items())[-ix.MAX_LOG_LINES_PER_JOB :]
    return [[n, text] for n, text in kept]


def log_lines(row_tail: list[Any] | None) -> list[ix.LogLine]:
    return [ix.LogLine.model_construct(n=n, text=text) for n, text in row_tail or []]


def _make_room(session: Session, room_id: str, worker_id: str) -> None:
    """Drop this worker's oldest finished jobs while it has more than the index keeps."""
    count = session.scalar(
        select(func.count()).where(IndexedJob.room_id == room_id, IndexedJob.worker_id == worker_id)
    )
    extra = (count or 0) + 1 - MAX_JOBS_PER_WORKER
    if extra <= 0:
        return
    oldest = session.scalars(
        select(IndexedJob.job_id)
        .where(
            IndexedJob.room_id == room_id,
            IndexedJob.worker_id == worker_id,
            IndexedJob.state.in_(sorted(ix.TERMINAL)),
        )
        .order_by(IndexedJob.created_at)
        .limit(extra)
    ).all()
    if oldest:
        where = (
            (LossPoint.room_id == room_id)
            & (LossPoint.worker_id == worker_id)
            & LossPoint.job_id.in_(oldest)
        )
        session.execute(delete(LossPoint).where(where))
        session.execute(
            delete(IndexedJob).where(
                IndexedJob.room_id == room_id,
                IndexedJob.worker_id == worker_id,
                IndexedJob.job_id.in_(oldest),
            )
        )


def _add_points(
    session: Session, room_id: str, worker_id: str, job_id: str, points: Sequence[ix.LossPoint]
) -> None:
    if not points:
        return
    held = session.scalar(
        select(func.count()).where(
            LossPoint.room_id == room_id,
            LossPoint.worker_id == worker_id,
            LossPoint.job_id == job_id,
        )
    )
    room = ix.MAX_POINTS_PER_JOB - (held or 0)
    if room <= 0:
        return
    rows = [
        {
            "room_id": room_id,
            "worker_id": worker_id,
            "job_id": job_id,
            "model": p.model,
            "epoch": p.epoch,
            "loss": p.loss,
            "val_loss": p.val_loss,
            "at": p.at,
        }
        for p in points[:room]
    ]
    # One statement, executed for many rows: compiled once and cached, however many
    # points a report carries.
    session.execute(_upsert(session.get_bind().dialect.name), rows)


_UPSERTS: dict[str, Any] = {}


def _upsert(dialect: str) -> Any:
    """The insert-or-replace of one loss point, per database dialect."""
    if dialect not in _UPSERTS:
        statement = dialect_insert(dialect)(LossPoint)
        _UPSERTS[dialect] = statement.on_conflict_do_update(
            index_elements=["room_id", "worker_id", "job_id", "model", "epoch"],
            set_={
                "loss": statement.excluded.loss,
                "val_loss": statement.excluded.val_loss,
                "at": statement.excluded.at,
            },
        )
    return _UPSERTS[dialect]


# ------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class JobFilter:
    states: frozenset[str] = frozenset()
    owner: str | None = None
    #: Worker ids (a name given by the caller is resolved to its ids first).
    worker_ids: frozenset[str] | None = None
    kind: str | None = None
    since: float | None = None
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class IndexRow:
    worker_id: str
    job: ix.IndexedJob
    reported_at: datetime
    log_tail: list[ix.LogLine]


def view_of(row: IndexedJob, *, with_log: bool = False) -> IndexRow:
    job = ix.IndexedJob.model_validate(
        {
            "job_id": row.job_id,
            "kind": row.kind,
            "owner": row.owner,
            "state": row.state,
            "created_at": row.created_at.timestamp(),
            "updated_at": row.worker_updated,
            "summary": row.summary,
            "reason": row.reason,
            "exit_code": row.exit_code,
            "stopped_early": row.stopped_early,
            "elapsed_s": row.elapsed_s,
            "history": row.history,
            "progress": row.progress,
            "outputs": row.outputs,
            "results": row.results,
            "notify": row.notify,
            "args": row.args or [],
        }
    )
    tail = log_lines(row.log_tail) if with_log else []
    return IndexRow(row.worker_id, job, row.reported_at, tail)


def list_jobs(session: Session, room_id: str, where: JobFilter) -> tuple[list[IndexRow], int]:
    """A page of the room's jobs, newest first, and how many match in all."""
    query = select(IndexedJob).where(IndexedJob.room_id == room_id)
    if where.states:
        query = query.where(IndexedJob.state.in_(sorted(where.states)))
    if where.owner is not None:
        query = query.where(IndexedJob.owner == where.owner)
    if where.worker_ids is not None:
        query = query.where(IndexedJob.worker_id.in_(sorted(where.worker_ids)))
    if where.kind is not None:
        query = query.where(IndexedJob.kind == where.kind)
    if where.since is not None:
        query = query.where(IndexedJob.created_at >= _when(where.since))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(IndexedJob.created_at.desc(), IndexedJob.job_id)
        .limit(where.limit)
        .offset(where.offset)
    ).all()
    return [view_of(r) for r in rows], total


def find_job(session: Session, room_id: str, room_name: str, ref: str) -> IndexRow:
    """The room's job whose id is ``ref`` or the one id that starts with it.

    Raises ``NO_SUCH_JOB`` (404) or ``AMBIGUOUS_JOB`` (409, naming candidates).
    """
    shown = ref[:64]
    rows = session.scalars(
        select(IndexedJob)
        .options(undefer(IndexedJob.log_tail))
        .where(IndexedJob.room_id == room_id, IndexedJob.job_id == ref)
    ).all()
    if not rows and ref:
        rows = session.scalars(
            select(IndexedJob)
            .options(undefer(IndexedJob.log_tail))
            .where(
                IndexedJob.room_id == room_id,
                func.substr(IndexedJob.job_id, 1, len(ref)) == ref,
            )
            .order_by(IndexedJob.created_at.desc())
            .limit(MAX_CANDIDATES + 1)
        ).all()
    if not rows:
        raise ApiError(
            404,
            "NO_SUCH_JOB",
            f"no job {shown!r} in room {room_name!r}; see `sleap-rtc jobs list --room {room_name}`",
        )
    if len(rows) > 1:
        names = ", ".join(r.job_id for r in rows[:MAX_CANDIDATES])
        more = " and more" if len(rows) > MAX_CANDIDATES else ""
        raise ApiError(
            409,
            "AMBIGUOUS_JOB",
            f"job id {shown!r} matches several jobs in room {room_name!r} ({names}{more}); "
            "give more of the id",
        )
    return view_of(rows[0], with_log=True)


def job_points(session: Session, room_id: str, worker_id: str, job_id: str) -> list[ix.LossPoint]:
    rows = session.execute(
        select(LossPoint.model, LossPoint.epoch, LossPoint.loss, LossPoint.val_loss, LossPoint.at)
        .where(
            LossPoint.room_id == room_id,
            LossPoint.worker_id == worker_id,
            LossPoint.job_id == job_id,
        )
        .order_by(LossPoint.model, LossPoint.epoch)
    ).all()
    return [
        ix.LossPoint.model_construct(model=m, epoch=e, loss=loss, val_loss=val, at=at)
        for m, e, loss, val, at in rows
    ]
