"""The worker's durable job store: SQLite plus one log file per job.

Everything a client may ask about later lives here: the spec, every state change
with its time and reason, the latest progress, outputs and the full log. It is
written as the job runs, so a client that disconnects, or a worker that
restarts, loses nothing. State changes go through
:func:`~sleap_rtc.jobs.states.check_transition`; a terminal state is final.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sleap_rtc.jobs.states import TERMINAL_STATES, JobState, check_transition

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    reason TEXT,
    exit_code INTEGER,
    outputs TEXT NOT NULL DEFAULT '[]',
    problems TEXT NOT NULL DEFAULT '[]',
    progress TEXT,
    native_id TEXT,
    stopped_early INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    results TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS job_states (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    at REAL NOT NULL,
    state TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS job_states_job ON job_states(job_id);
CREATE TABLE IF NOT EXISTS job_points (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    model INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    loss REAL,
    val_loss REAL,
    at REAL NOT NULL,
    PRIMARY KEY (job_id, model, epoch)
);
CREATE INDEX IF NOT EXISTS jobs_updated ON jobs(updated_at);
"""


@dataclass(frozen=True)
class StateChange:
    at: float
    state: JobState
    reason: str | None


@dataclass(frozen=True)
class LogPosition:
    """How far a reader has read a job's log: lines and bytes."""

    lines: int = 0
    offset: int = 0


@dataclass(frozen=True)
class Point:
    """The losses at the end of one epoch of one model of a training job."""

    seq: int
    model: int
    epoch: int
    loss: float | None
    val_loss: float | None
    at: float


#: Told the id of a job whose record changed, and whether its state did.
ChangeListener = Callable[[str, bool], None]


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: str
    spec: dict[str, Any]
    state: JobState
    created_at: float
    updated_at: float
    reason: str | None = None
    exit_code: int | None = None
    outputs: list[str] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    progress: dict[str, Any] | None = None
    native_id: str | None = None
    stopped_early: bool = False
    #: Who submitted it (the user a peer ticket named); None for local jobs.
    owner: str | None = None
    #: What each output of a completed job holds (:class:`~sleap_rtc.jobs.results.StepResult`).
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


class StoreLocked(RuntimeError):
    """Another worker process owns this state folder."""


class JobStore:
    """Job records under ``state_dir`` (``jobs.sqlite3`` and ``logs/<id>.log``).

    With ``exclusive=True`` (what a runner uses) the store takes a lock on the
    folder, so two workers can never run, recover or reap each other's jobs.
    Readers (``status``, ``logs``) open it without the lock.
    """

    def __init__(self, state_dir: Path, *, exclusive: bool = False) -> None:
        self.state_dir = state_dir
        self.logs_dir = state_dir / "logs"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self._lock: int | None = None
        if exclusive:
            self._lock = _take_lock(state_dir / "worker.lock")
        self._db = sqlite3.connect(state_dir / "jobs.sqlite3", isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "owner" not in columns:  # stores made before jobs had owners
            self._db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")
        if "results" not in columns:  # stores made before jobs kept their results
            self._db.execute("ALTER TABLE jobs ADD COLUMN results TEXT NOT NULL DEFAULT '[]'")
        self._logs: dict[str, TextIO] = {}
        #: Called after every change of a job's record (e.g. to report it to the server).
        self.listeners: list[ChangeListener] = []

    def _changed(self, job_id: str, state: bool) -> None:
        for listener in self.listeners:
            listener(job_id, state)

    def close(self) -> None:
        for handle in self._logs.values():
            handle.close()
        self._logs.clear()
        self._db.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    # ---------------------------------------------------------------- writing

    def create(
        self,
        job_id: str,
        kind: str,
        spec: dict[str, Any],
        state: JobState,
        *,
        reason: str | None = None,
        problems: list[dict[str, Any]] | None = None,
        owner: str | None = None,
    ) -> None:
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO jobs (id, kind, spec, state, created_at, updated_at, reason, "
                "problems, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    kind,
                    json.dumps(spec),
                    state.value,
                    now,
                    now,
                    reason,
                    json.dumps(problems or []),
                    owner,
                ),
            )
            self._db.execute(
                "INSERT INTO job_states VALUES (?, ?, ?, ?)", (job_id, now, state.value, reason)
            )
        self._changed(job_id, True)

    def transition(
        self,
        job_id: str,
        state: JobState,
        *,
        reason: str | None = None,
        exit_code: int | None = None,
        outputs: list[str] | None = None,
        stopped_early: bool | None = None,
        results: list[dict[str, Any]] | None = None,
    ) -> JobRecord:
        """Move a job to ``state``; raises TransitionError on an illegal edge."""
        now = time.time()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            current = self._get(job_id)
            if current is None:
                raise KeyError(job_id)
            check_transition(current.state, state)
            self._db.execute(
                "UPDATE jobs SET state=?, updated_at=?, reason=COALESCE(?, reason), "
                "exit_code=COALESCE(?, exit_code), outputs=COALESCE(?, outputs), "
                "stopped_early=COALESCE(?, stopped_early), results=COALESCE(?, results) "
                "WHERE id=?",
                (
                    state.value,
                    now,
                    reason,
                    exit_code,
                    json.dumps(outputs) if outputs is not None else None,
                    int(stopped_early) if stopped_early is not None else None,
                    json.dumps(results) if results is not None else None,
                    job_id,
                ),
            )
            self._db.execute(
                "INSERT INTO job_states VALUES (?, ?, ?, ?)", (job_id, now, state.value, reason)
            )
        if state in TERMINAL_STATES:
            handle = self._logs.pop(job_id, None)
            if handle:
                handle.close()
        record = self.get(job_id)
        assert record is not None
        self._changed(job_id, True)
        return record

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        self._db.execute(
            "UPDATE jobs SET progress=?, updated_at=? WHERE id=?",
            (json.dumps(progress), time.time(), job_id),
        )
        self._changed(job_id, False)

    def add_point(
        self, job_id: str, model: int, epoch: int, loss: float | None, val_loss: float | None
    ) -> None:
        """Keep the losses at the end of an epoch (a repeated epoch replaces the old)."""
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO job_points VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, model, epoch, _finite(loss), _finite(val_loss), now),
            )
            self._db.execute("UPDATE jobs SET updated_at=? WHERE id=?", (now, job_id))
        self._changed(job_id, False)

    def set_native_id(self, job_id: str, native_id: str) -> None:
        self._db.execute("UPDATE jobs SET native_id=? WHERE id=?", (native_id, job_id))

    def append_log(self, job_id: str, line: str) -> None:
        handle = self._logs.get(job_id)
        if handle is None:
            handle = open(self.log_path(job_id), "a", encoding="utf-8")  # noqa: SIM115
            self._logs[job_id] = handle
        handle.write(line.rstrip("\n") + "\n")
        handle.flush()
        self._changed(job_id, False)

    # ---------------------------------------------------------------- reading

    def log_path(self, job_id: str) -> Path:
        return self.logs_dir / f"{job_id}.log"

    def read_log(self, job_id: str, *, tail: int | None = None) -> list[str]:
        path = self.log_path(job_id)
        if not path.is_file():
            return []
        with open(path, encoding="utf-8", errors="replace") as handle:
            if tail is None:
                return [line.rstrip("\n") for line in handle]
            return [line.rstrip("\n") for line in deque(handle, maxlen=tail)]

    def log_since(
        self, job_id: str, since: LogPosition | None, *, limit: int
    ) -> tuple[list[tuple[int, str]], LogPosition]:
        """The log lines after ``since`` (all of them with None), numbered from 1: the
        last ``limit`` of them, and where the reader is now. Reading starts at the byte
        offset, so following a long log costs only what is new."""
        path = self.log_path(job_id)
        start = since or LogPosition()
        try:
            handle = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return [], start
        with handle:
            handle.seek(start.offset)
            kept: deque[tuple[int, str]] = deque(maxlen=limit)
            count, offset = start.lines, start.offset
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break  # a line still being written: read it next time
                count += 1
                offset += len(raw)
                kept.append((count, raw.decode("utf-8", errors="replace").rstrip("\r\n")))
        return list(kept), LogPosition(count, offset)

    def _get(self, job_id: str) -> JobRecord | None:
        row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _record(row) if row else None

    def get(self, job_id: str) -> JobRecord | None:
        return self._get(job_id)

    def find(self, prefix: str) -> JobRecord | None:
        """The job whose id is ``prefix`` or uniquely starts with it."""
        exact = self._get(prefix)
        if exact or not prefix:
            return exact
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE substr(id, 1, ?) = ? LIMIT 2", (len(prefix), prefix)
        ).fetchall()
        return _record(rows[0]) if len(rows) == 1 else None

    def jobs(
        self, *, states: set[JobState] | None = None, limit: int = 100, offset: int = 0
    ) -> list[JobRecord]:
        rows = self._db.execute(
            "SELECT * FROM jobs ORDER BY created_at DESC, id LIMIT ? OFFSET ?", (limit, offset)
        ).fetchall()
        records = [_record(r) for r in rows]
        return [r for r in records if states is None or r.state in states]

    def unfinished(self) -> list[JobRecord]:
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE state IN (?, ?) ORDER BY created_at",
            (JobState.QUEUED.value, JobState.RUNNING.value),
        ).fetchall()
        return [_record(r) for r in rows]

    def history(self, job_id: str) -> list[StateChange]:
        rows = self._db.execute(
            "SELECT at, state, reason FROM job_states WHERE job_id=? ORDER BY rowid", (job_id,)
        ).fetchall()
        return [StateChange(r["at"], JobState(r["state"]), r["reason"]) for r in rows]

    def points(self, job_id: str, *, after: int = 0, limit: int = 10_000) -> list[Point]:
        """A training job's loss points in the order they were kept, after ``seq`` ``after``."""
        rows = self._db.execute(
            "SELECT rowid, model, epoch, loss, val_loss, at FROM job_points "
            "WHERE job_id=? AND rowid>? ORDER BY rowid LIMIT ?",
            (job_id, after, limit),
        ).fetchall()
        return [Point(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def changed_since(self, since: float | None, *, limit: int) -> list[str]:
        """Ids of jobs updated at or after ``since``, oldest change first; with None,
        the ``limit`` most recently updated."""
        if since is None:
            rows = self._db.execute(
                "SELECT id FROM jobs ORDER BY updated_at DESC LIMIT ?", (limit,)
            ).fetchall()
            return [r[0] for r in reversed(rows)]
        rows = self._db.execute(
            "SELECT id FROM jobs WHERE updated_at>=? ORDER BY updated_at LIMIT ?", (since, limit)
        ).fetchall()
        return [r[0] for r in rows]

    def elapsed(self, job_id: str) -> float | None:
        """Seconds from the job's first RUNNING to its end (None if it never ran or runs)."""
        started = ended = None
        for change in self.history(job_id):
            if change.state is JobState.RUNNING and started is None:
                started = change.at
            elif change.state in TERMINAL_STATES:
                ended = change.at
        return ended - started if started is not None and ended is not None else None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _take_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreLocked(
            f"another worker (pid {owner}) is using the state folder {path.parent}; "
            "stop it or give this one its own state_dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _record(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        kind=row["kind"],
        spec=json.loads(row["spec"]),
        state=JobState(row["state"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        reason=row["reason"],
        exit_code=row["exit_code"],
        outputs=json.loads(row["outputs"]),
        problems=json.loads(row["problems"]),
        progress=json.loads(row["progress"]) if row["progress"] else None,
        native_id=row["native_id"],
        stopped_early=bool(row["stopped_early"]),
        owner=row["owner"],
        results=json.loads(row["results"]),
    )
