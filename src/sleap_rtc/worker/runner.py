"""The job runner: validate, queue, run on a backend, record, and tell watchers.

A job is validated the moment it is submitted (a rejection lists every problem
and is recorded too), then waits for one of ``max_concurrent_jobs`` slots. Every
event is written to the :class:`JobStore` before it is passed on, so what a
watcher sees is never more than what a later ``status``/``logs`` can show.
Planning (checks, work folder, sandbox, argv) is the :class:`JobPlanner`'s, which
also answers :meth:`JobRunner.preview`. The file is over 500 lines because the
queue (its waiting line and each job's place in it), the slots, cancellation and the
event handling share one object's state; splitting them would pass that state around
instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sleap_rtc.engine.backend import (
    Backend,
    BackendJob,
    EngineJob,
    Finished,
    LogLine,
    ProgressUpdate,
    StepStarted,
    Submitted,
)
from sleap_rtc.engine.results import results_of
from sleap_rtc.jobs.events import Progress, TrainProgress
from sleap_rtc.jobs.mounts import Mounts
from sleap_rtc.jobs.problems import JobRejected
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec, parse_spec
from sleap_rtc.jobs.states import TERMINAL_STATES, JobState, TransitionError
from sleap_rtc.jobs.validation import TrackPlan, TrainPlan
from sleap_rtc.protocol.signaling import loggable
from sleap_rtc.worker.config import WorkerConfig
from sleap_rtc.worker.planning import JobPlanner, Preview
from sleap_rtc.worker.store import JobRecord, JobStore
from sleap_rtc.worker.uploads import Uploads

log = logging.getLogger(__name__)

#: Events buffered per watcher before the oldest progress/log events are dropped.
#: State changes are never dropped.
WATCH_QUEUE = 2000


@dataclass(frozen=True)
class StateEvent:
    job_id: str
    record: JobRecord


@dataclass(frozen=True)
class LogEvent:
    job_id: str
    line: str


@dataclass(frozen=True)
class ProgressEvent:
    job_id: str
    progress: Progress


@dataclass(frozen=True)
class QueueEvent:
    """A queued job's place in the line for a job slot: 1 starts next."""

    job_id: str
    position: int


JobEvent = StateEvent | LogEvent | ProgressEvent | QueueEvent


def _spec_paths(spec: dict[str, Any]) -> list[str]:
    """The path values of a stored spec (strings and lists of strings)."""
    found: list[str] = []
    for value in spec.values():
        items = value if isinstance(value, list) else [value]
        found += [v for v in items if isinstance(v, str) and v.startswith("/")]
    return found


class _Watcher:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[JobEvent] = asyncio.Queue()

    def put(self, event: JobEvent) -> None:
        if self.queue.qsize() >= WATCH_QUEUE and not isinstance(event, StateEvent):
            return  # a slow watcher loses progress/log lines, never a state change
        self.queue.put_nowait(event)


class JobRunner:
    """Owns the queue of jobs on one worker. Use within a running event loop."""

    def __init__(
        self,
        config: WorkerConfig,
        backend: Backend,
        store: JobStore | None = None,
        *,
        shared: bool = True,
        gpu_count: Callable[[], int | None] | None = None,
    ) -> None:
        """``shared=False`` for one person's own jobs (``sleap-rtc local``): the worker's
        state may then sit inside a mount, since no one else submits jobs. ``gpu_count``
        says how many GPUs jobs can use (see :class:`JobPlanner`)."""
        self.config = config
        self.backend = backend
        self.planner = JobPlanner(config, backend.work_root, gpu_count)
        self.mounts: Mounts = self.planner.mounts
        #: One line on how jobs are confined, for the worker's start-up log.
        self.sandbox_note = config.check_sandbox(self.mounts, shared=shared)
        self.models_dir = self.planner.models_dir
        self.uploads_dir = self.planner.uploads_dir
        self.store = store or JobStore(config.resolved_state_dir(), exclusive=True)
        self._slots = asyncio.Semaphore(config.max_concurrent_jobs)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running: dict[str, BackendJob] = {}
        self._cancel_requested: set[str] = set()
        self._watchers: dict[str, list[_Watcher]] = {}
        self._reserved_runs: set[str] = set()
        #: Jobs waiting for a slot, in the order they get one.
        self._waiting: list[str] = []
        #: Jobs' folders are made off the event loop; run names are reserved one at a time.
        self._reserve_lock = threading.Lock()
        self._closing = False
        self._sweeper: asyncio.Task[None] | None = None
        #: Called after every job state change (e.g. to tell the server we are busy).
        self.state_listeners: list[Callable[[JobRecord], None]] = []

    @property
    def running_jobs(self) -> int:
        """Jobs whose process is running now."""
        return len(self._running)

    @property
    def active_jobs(self) -> int:
        """Jobs queued or running in this process."""
        return len(self._tasks)

    # --------------------------------------------------------------- lifecycle

    async def start(self) -> list[JobRecord]:
        """Recover from a previous worker process; returns the records it changed.

        RUNNING jobs lost their process (or their reader) and are marked FAILED
        with the reason; QUEUED jobs never started, so they are validated again
        and queued.
        """
        changed = []
        await self.backend.start()
        self._sweeper = asyncio.create_task(self._sweep_uploads(), name="upload-sweeper")
        for record in self.store.unfinished():
            if record.state is JobState.RUNNING and record.native_id:
                followed = await self.backend.reattach(record.id, record.native_id)
                if followed is not None:
                    self._tasks[record.id] = asyncio.create_task(
                        self._follow(record.id, followed), name=f"runner-{record.id}"
                    )
                    changed.append(record)
                    continue
            if record.state is JobState.RUNNING:
                reason = (
                    await self.backend.reap(record.native_id)
                    if record.native_id
                    else "the worker stopped while the job was starting"
                )
                changed.append(self.store.transition(record.id, JobState.FAILED, reason=reason))
                continue
            try:
                plan = self._plan(parse_spec(record.spec), record.owner)
            except JobRejected as exc:
                changed.append(
                    self.store.transition(
                        record.id,
                        JobState.FAILED,
                        reason="no longer valid after the worker restarted: " + str(exc),
                    )
                )
                continue
            self._launch(record.id, plan)
            changed.append(record)
        return changed

    async def close(self) -> None:
        """Stop accepting work; jobs still running are cancelled and marked FAILED.

        With a backend whose jobs outlive the worker (SLURM), running jobs are left
        to the scheduler and queued ones stay queued: the next start follows them.
        """
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(BaseException):
                await self._sweeper
        if self.backend.jobs_outlive_worker:
            for task in list(self._tasks.values()):
                task.cancel()
            for task in list(self._tasks.values()):
                with contextlib.suppress(BaseException):
                    await task
            await self.backend.close()
            self.store.close()
            return
        # Record the reason first: the CANCELLED the backend reports next is then
        # refused by the state machine, and the record keeps the true cause.
        for record in self.store.unfinished():
            self._record_transition(
                record.id, JobState.FAILED, reason="the worker shut down before the job finished"
            )
        for job_id in list(self._tasks):
            self._cancel_requested.add(job_id)
            running = self._running.get(job_id)
            if running:
                await running.cancel()
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(BaseException):
                await task
        await self.backend.close()
        self.store.close()

    # ------------------------------------------------------------------ submit

    def mounts_for(self, owner: str | None) -> Mounts:
        """The mounts one user's job may name (see :meth:`JobPlanner.mounts_for`)."""
        return self.planner.mounts_for(owner)

    def _plan(self, spec: TrainSpec | TrackSpec, owner: str | None) -> TrainPlan | TrackPlan:
        return self.planner.plan(spec, owner)

    def preview(self, spec: TrainSpec | TrackSpec, owner: str | None = None) -> Preview:
        """What ``spec`` would run here (effective configs, argv, work folder, sandbox),
        checked as :meth:`submit` checks it; nothing is queued, recorded or written.

        Raises :class:`JobRejected` listing every problem.
        """
        return self.planner.preview(spec, owner, sandbox=self.sandbox_note)

    def validate(self, spec: TrainSpec | TrackSpec, owner: str | None) -> TrainPlan | TrackPlan:
        """Check ``spec`` for ``owner`` without queueing it; raises :class:`JobRejected`.

        Reads only the filesystem, so it may run in a thread while the loop goes on.
        """
        return self._plan(spec, owner)

    def submit(
        self,
        spec: TrainSpec | TrackSpec,
        *,
        owner: str | None = None,
        plan: TrainPlan | TrackPlan | None = None,
        rejected: JobRejected | None = None,
    ) -> JobRecord:
        """Validate and queue ``spec``. Raises :class:`JobRejected` with the ``job_id``
        the rejection was recorded under.

        ``plan`` or ``rejected`` is the outcome of a :meth:`validate` already done.
        """
        if self._closing:
            raise RuntimeError("the worker is shutting down")
        job_id = uuid.uuid4().hex[:12]
        payload = spec.model_dump(mode="json")
        try:
            if rejected is not None:
                raise rejected
            if plan is None:
                plan = self._plan(spec, owner)
        except JobRejected as exc:
            self.store.create(
                job_id,
                spec.kind,
                payload,
                JobState.REJECTED,
                reason=f"{len(exc.problems)} problem(s) found before running",
                problems=[p.model_dump(mode="json") for p in exc.problems],
                owner=owner,
            )
            raise JobRejected(exc.problems, job_id=job_id) from None
        self.store.create(job_id, spec.kind, payload, JobState.QUEUED, owner=owner)
        self._launch(job_id, plan)
        record = self.store.get(job_id)
        assert record is not None
        return record

    def _launch(self, job_id: str, plan: TrainPlan | TrackPlan) -> None:
        self._waiting.append(job_id)
        self._tasks[job_id] = asyncio.create_task(
            self._execute(job_id, plan), name=f"runner-{job_id}"
        )

    def queue_position(self, job_id: str) -> int | None:
        """Where a job waiting for a slot is in the line (1: next); None if not waiting."""
        try:
            return self._waiting.index(job_id) + 1
        except ValueError:
            return None

    def _leave_queue(self, job_id: str) -> None:
        """``job_id`` no longer waits: tell those behind it where they are now."""
        if job_id not in self._waiting:
            return
        behind = self._waiting.index(job_id)
        self._waiting.remove(job_id)
        for position, waiting in enumerate(self._waiting[behind:], behind + 1):
            self._publish(QueueEvent(waiting, position))

    async def _engine_job(self, job_id: str, plan: TrainPlan | TrackPlan) -> EngineJob:
        record = self.store.get(job_id)
        owner = record.owner if record is not None else None

        def make() -> EngineJob:
            with self._reserve_lock:
                return self.planner.engine_job(job_id, plan, owner, self._reserved_runs)

        # Off the loop: it writes configs and copies of remapped labels.
        return await asyncio.to_thread(make)

    async def _execute(self, job_id: str, plan: TrainPlan | TrackPlan) -> None:
        engine_job: EngineJob | None = None
        try:
            async with self._slots:
                self._leave_queue(job_id)
                if job_id in self._cancel_requested:
                    self._record_transition(
                        job_id, JobState.CANCELLED, reason="cancelled by the user before it started"
                    )
                    return
                # Checked again now: files may have changed while the job waited.
                record = self._require(job_id)
                try:
                    plan = await asyncio.to_thread(
                        self._plan, parse_spec(record.spec), record.owner
                    )
                except JobRejected as exc:
                    self._record_transition(
                        job_id,
                        JobState.FAILED,
                        reason="no longer valid when it was about to start: " + str(exc)[:4000],
                    )
                    return
                try:
                    engine_job = await self._engine_job(job_id, plan)
                    backend_job = await self.backend.submit(engine_job)
                except Exception as exc:
                    self._record_transition(
                        job_id, JobState.FAILED, reason=f"could not start: {exc}"
                    )
                    return
                self._running[job_id] = backend_job
                self._record_transition(job_id, JobState.RUNNING)
                if job_id in self._cancel_requested:
                    await backend_job.cancel()
                async for event in backend_job.events():
                    await self._on_event(job_id, event)
        finally:
            self._leave_queue(job_id)
            self._running.pop(job_id, None)
            self._tasks.pop(job_id, None)
            if engine_job is not None:
                for step in engine_job.steps:
                    if step.kind == "train" and step.output is not None:
                        with self._reserve_lock:
                            self._reserved_runs.discard(step.output.name)

    async def _follow(self, job_id: str, backend_job: BackendJob) -> None:
        """Follow a running job a previous worker process started."""
        try:
            async with self._slots:
                self._running[job_id] = backend_job
                async for event in backend_job.events():
                    await self._on_event(job_id, event)
        finally:
            self._running.pop(job_id, None)
            self._tasks.pop(job_id, None)

    def _handle(
        self, job_id: str, event: object, results: list[dict[str, Any]] | None = None
    ) -> None:
        if isinstance(event, LogLine):
            self.store.append_log(job_id, event.text)
            self._publish(LogEvent(job_id, event.text))
        elif isinstance(event, ProgressUpdate):
            progress = event.progress
            self.store.set_progress(job_id, progress.model_dump(mode="json"))
            if isinstance(progress, TrainProgress) and progress.epoch_done:
                self.store.add_point(
                    job_id, progress.model_index, progress.epoch, progress.loss, progress.val_loss
                )
            self._publish(ProgressEvent(job_id, progress))
        elif isinstance(event, Submitted):
            self.store.set_native_id(job_id, event.native_id)
            self.store.append_log(job_id, event.note)
            self._publish(LogEvent(job_id, event.note))
        elif isinstance(event, StepStarted):
            self.store.set_native_id(job_id, event.native_id)
            line = (
                f"[sleap-rtc] step {event.step.index}/{event.step.total}: "
                f"{event.step.kind} {event.step.name}"
            )
            self.store.append_log(job_id, line)
            self._publish(LogEvent(job_id, line))
        elif isinstance(event, Finished):
            self._record_transition(
                job_id,
                event.state,
                reason=event.reason,
                exit_code=event.exit_code,
                outputs=event.outputs,
                stopped_early=event.stopped_early,
                results=results,
            )

    async def _on_event(self, job_id: str, event: object) -> None:
        """:meth:`_handle`, reading a completed job's results (its files) off the loop."""
        results = None
        if isinstance(event, Finished) and event.state is JobState.COMPLETE:
            record = self.store.get(job_id)
            kind = record.kind if record is not None else "train"
            found = await asyncio.to_thread(results_of, kind, event.outputs)
            results = [r.model_dump(mode="json") for r in found]
        self._handle(job_id, event, results)

    def _record_transition(self, job_id: str, state: JobState, **fields: Any) -> None:
        try:
            record = self.store.transition(job_id, state, **fields)
        except TransitionError:
            # Already final (e.g. marked FAILED at shutdown); the first word stands.
            log.debug("job %s: ignoring late %s", job_id, state)
            return
        if state in (JobState.COMPLETE, JobState.FAILED, JobState.CANCELLED):
            self._release_uploads(record)
        _log_transition(record, self.store.elapsed(job_id))
        self._publish(StateEvent(job_id, record))
        for listener in self.state_listeners:
            try:
                listener(record)
            except Exception:
                log.exception("state listener failed")

    def _live_paths(self) -> list[str]:
        """Every path named by a job that has not finished: its uploads must stay."""
        return [path for r in self.store.unfinished() for path in _spec_paths(r.spec)]

    def _release_uploads(self, record: JobRecord) -> None:
        """A job that ran is done with the files its owner uploaded for it."""
        try:
            removed = Uploads.release(
                self.uploads_dir, _spec_paths(record.spec), keep=self._live_paths()
            )
        except OSError as exc:
            log.warning("job %s: could not remove its uploads: %s", record.id, exc)
            return
        for path in removed:
            log.info("job %s ended; removed its upload %s", record.id, path)

    async def _sweep_uploads(self) -> None:
        """Remove uploads no job used within ``upload_ttl_s``, every so often."""
        ttl = self.config.upload_ttl_s
        while True:
            try:
                removed = await asyncio.to_thread(
                    Uploads.sweep, self.uploads_dir, ttl, keep=self._live_paths()
                )
                for path in removed:
                    log.info("removed an upload older than %.0f s: %s", ttl, path)
            except Exception:
                log.exception("sweeping old uploads failed")
            await asyncio.sleep(min(ttl / 4, 3600.0))

    def _publish(self, event: JobEvent) -> None:
        for watcher in self._watchers.get(event.job_id, []):
            watcher.put(event)

    # ----------------------------------------------------------------- control

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job. A finished job is returned unchanged."""
        record = self._require(job_id)
        if record.finished:
            return record
        self._cancel_requested.add(job_id)
        running = self._running.get(job_id)
        if running is not None:
            await running.cancel()
        elif record.state is JobState.QUEUED:
            # Still waiting for a slot: end it now rather than when a slot frees.
            task = self._tasks.get(job_id)
            if task is not None:
                task.cancel()
            self._record_transition(
                job_id, JobState.CANCELLED, reason="cancelled by the user before it started"
            )
            return self._require(job_id)
        await self.wait(job_id)
        return self._require(job_id)

    async def stop_early(self, job_id: str) -> bool:
        """Ask a training job to end now, keeping its model. False if not possible."""
        running = self._running.get(job_id)
        return await running.stop_early() if running is not None else False

    def _require(self, job_id: str) -> JobRecord:
        record = self.store.get(job_id)
        if record is None:
            raise KeyError(f"no job {job_id!r} on this worker")
        return record

    async def wait(self, job_id: str) -> JobRecord:
        """Wait until the job is in a terminal state and return its record."""
        async for _ in self.watch(job_id):
            pass
        return self._require(job_id)

    async def watch(self, job_id: str) -> AsyncIterator[JobEvent]:
        """The job's current state, then live events until it ends."""
        watcher = _Watcher()
        self._watchers.setdefault(job_id, []).append(watcher)
        try:
            record = self._require(job_id)
            yield StateEvent(job_id, record)
            if record.finished:
                return
            position = self.queue_position(job_id)
            if position is not None:
                yield QueueEvent(job_id, position)
            while True:
                event = await watcher.queue.get()
                yield event
                if isinstance(event, StateEvent) and event.record.state in TERMINAL_STATES:
                    return
        finally:
            self._watchers[job_id].remove(watcher)
            if not self._watchers[job_id]:
                del self._watchers[job_id]


def _log_transition(record: JobRecord, elapsed_s: float | None) -> None:
    """The worker's console line for a job starting and ending (submissions log their own)."""
    if record.state is JobState.RUNNING:
        log.info("job %s (%s) running", record.id, record.kind)
    elif record.finished:
        took = f" after {elapsed_s:.0f} s" if elapsed_s is not None else ""
        outcome = (
            f"; outputs: {', '.join(record.outputs[:4])}"
            if record.state is JobState.COMPLETE
            else f": {record.reason or 'no reason given'}"
        )
        log.info(
            "job %s (%s) %s%s%s",
            record.id,
            record.kind,
            record.state.value.lower(),
            took,
            loggable(outcome[:2000]),
        )
