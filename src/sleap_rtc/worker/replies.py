"""The worker's answers as protocol messages, each cut to fit one message.

A job summary, a page of the job list, a rejection with every problem, a folder
listing: each is built from the worker's records and shortened (fewer entries,
"and K more") until it encodes within
:data:`~sleap_rtc.protocol.jobs.MAX_JOB_MESSAGE_BYTES`, so no reply is ever too
large to send. Names from disk that are not UTF-8 are shown with ``\\xNN`` escapes.
"""

from __future__ import annotations

from typing import Any

from sleap_rtc.jobs.events import TrackProgress, TrainProgress
from sleap_rtc.jobs.results import StepResult
from sleap_rtc.jobs.states import JobState
from sleap_rtc.protocol import jobs as p
from sleap_rtc.worker.files import Entry, FileService
from sleap_rtc.worker.fsafe import display
from sleap_rtc.worker.runner import JobRunner
from sleap_rtc.worker.store import JobRecord


def summarize(record: JobRecord) -> p.JobSummary:
    spec = record.spec
    if record.kind == "train":
        what = ", ".join(str(c) for c in spec.get("config_paths", []))
    else:
        what = f"{spec.get('data_path', '')} with {', '.join(spec.get('model_paths', []))}"
    return p.JobSummary(
        job_id=record.id,
        kind=record.kind,
        state=record.state.value,
        created_at=record.created_at,
        updated_at=record.updated_at,
        reason=(record.reason or "")[:2000] or None,
        exit_code=record.exit_code,
        outputs=_clip_paths(record.outputs),
        progress=progress_of(record.progress),
        stopped_early=record.stopped_early,
        owner=record.owner,
        summary=what[:2000],
    )


def _clip_paths(paths: list[str], budget: int = 16 * 1024) -> list[str]:
    """As many of ``paths`` as fit ``budget`` characters, so one summary always fits."""
    kept: list[str] = []
    for path in paths[:64]:
        budget -= len(path) + 8
        if budget < 0:
            break
        kept.append(path)
    return kept


def progress_of(data: dict[str, Any] | None) -> TrainProgress | TrackProgress | None:
    if not data:
        return None
    try:
        if data.get("kind") == "track":
            return TrackProgress.model_validate(data)
        return TrainProgress.model_validate(data)
    except ValueError:
        return None


def terminal_message(
    record: JobRecord, log_tail: list[str], elapsed_s: float | None = None
) -> p.JobComplete | p.JobFailed:
    """The message that ends a job for its followers: its outputs and what they hold,
    or its reason and last log lines."""
    if record.state is JobState.COMPLETE:
        return p.JobComplete(
            job_id=record.id,
            outputs=record.outputs[:64],
            stopped_early=record.stopped_early,
            elapsed_s=elapsed_s,
            results=_results(record),
        )
    return p.JobFailed(
        job_id=record.id,
        state="CANCELLED" if record.state is JobState.CANCELLED else "FAILED",
        exit_code=record.exit_code,
        elapsed_s=elapsed_s,
        reason=(record.reason or "")[:2000],
        log_tail=p.clip_lines(log_tail, budget=p.MAX_JOB_MESSAGE_BYTES // 3),
    )


def _results(record: JobRecord) -> list[StepResult]:
    """The record's results that still read as results (a store may be older)."""
    found = []
    for data in record.results[:64]:
        try:
            found.append(StepResult.model_validate(data))
        except ValueError:
            continue
    return found


def rejection(request_id: str, job_id: str | None, problems: list[Any]) -> p.JobRejected:
    """A JOB_REJECTED that fits one message: the first problems, then "and K more"."""
    views = [_problem(pr) for pr in problems]
    keep = min(len(views), 100)
    while True:
        shown = views[:keep]
        left = len(views) - keep
        if left:
            shown = [
                *shown[: max(keep - 1, 0)],
                p.ProblemView(
                    field="(more)",
                    code="MORE_PROBLEMS",
                    message=f"and {len(views) - max(keep - 1, 0)} more problem(s); fix these "
                    "first or check the job locally (sleap-rtc local ... --dry-run)",
                ),
            ]
        reply = p.JobRejected(request_id=request_id, job_id=job_id, errors=shown)
        if p.fits(reply) or keep <= 1:
            return reply
        keep //= 2


def job_list_reply(runner: JobRunner, message: p.JobList) -> p.JobListReply:
    """One page of the job list that fits one message; ``next_offset`` asks for the rest."""
    records = runner.store.jobs(limit=message.limit + 1, offset=message.offset)
    more = len(records) > message.limit
    summaries = [summarize(r) for r in records[: message.limit]]
    while True:
        shown = len(summaries)
        reply = p.JobListReply(
            request_id=message.request_id,
            jobs=summaries,
            offset=message.offset,
            next_offset=message.offset + shown if (more or shown < len(records)) else None,
        )
        if p.fits(reply) or len(summaries) <= 1:
            return reply
        summaries = summaries[: len(summaries) // 2]
        more = True


def _fs_entry(entry: Entry, *, with_path: bool) -> p.FsEntry:
    """An entry as the protocol carries it: names from disk that aren't UTF-8 shown
    with ``\\xNN`` escapes (a message can't hold them raw), lengths bounded."""
    return p.FsEntry(
        name=display(entry.name)[:1024],
        kind=entry.kind,
        size=entry.size,
        modified=entry.modified,
        path=display(entry.path)[:4096] if with_path else None,
    )


def file_reply(files: FileService, message: p.FsMounts | p.FsList | p.FsStat | p.FsFind) -> p._Msg:
    """The reply to a file request; long pages are shortened to fit one message."""
    if isinstance(message, p.FsMounts):
        return p.FsMountsReply(
            request_id=message.request_id,
            mounts=[
                p.FsMount(
                    label=m.label,
                    path=m.path,
                    read_only=m.read_only,
                    free_bytes=m.free_bytes,
                    total_bytes=m.total_bytes,
                )
                for m in files.list_mounts()
            ],
        )
    if isinstance(message, p.FsStat):
        return p.FsStatReply(
            request_id=message.request_id, entry=_fs_entry(files.stat(message.path), with_path=True)
        )
    if isinstance(message, p.FsList):
        listing = files.list(
            message.path,
            offset=message.offset,
            limit=message.limit,
            pattern=message.pattern,
            dirs_only=message.dirs_only,
        )
        entries = [_fs_entry(e, with_path=False) for e in listing.entries]
        while True:
            reply = p.FsListReply(
                request_id=message.request_id,
                path=display(listing.path)[:4096],
                entries=entries,
                total=listing.total,
                offset=listing.offset,
            )
            if p.fits(reply) or not entries:
                return reply
            entries = entries[: len(entries) // 2]
    result = files.find(message.query, under=message.under, limit=message.limit)
    matches = [
        p.FsMatch(entry=_fs_entry(m.entry, with_path=True), rank=m.rank, score=round(m.score, 4))
        for m in result.matches
    ]
    while True:
        found = p.FsFindReply(
            request_id=message.request_id,
            matches=matches,
            scanned=result.scanned,
            truncated=result.truncated,
        )
        if p.fits(found) or not matches:
            return found
        matches = matches[: len(matches) // 2]
        result.truncated = result.truncated or "results"


def _problem(problem: Any) -> p.ProblemView:
    return p.ProblemView(
        field=str(problem.field)[:4000],
        path=(str(problem.value)[:4000] if problem.value is not None else None),
        code=str(problem.code),
        message=str(problem.message)[:4000],
    )
