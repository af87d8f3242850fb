"""The SLURM backend: run each job as an sbatch job, from a worker on a login node.

A job becomes one batch script (see :mod:`~sleap_rtc.engine.backends.slurm.script`)
in the job's spool folder (see :mod:`~sleap_rtc.engine.backends.slurm.spool`). On
the compute node the steps run as the local backend runs them
(:mod:`~sleap_rtc.engine.backends.slurm.node`); their log lines, progress and
final result come back through the spool folder on the shared filesystem, so
the client sees a SLURM job exactly as it sees a local one.

The worker asks SLURM about all of its jobs in one ``sacct`` call per poll
(:class:`~sleap_rtc.engine.backends.slurm.watcher.SlurmWatcher`). That catches
what the compute node can't report: a job that never started (cancelled while
pending, a failing setup line), a time limit, a lost node. Cancelling is
``scancel``; stopping early is a ``stop`` file in the spool folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import shutil
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

from sleap_rtc.engine.backend import (
    Backend,
    EngineJob,
    Finished,
    LogLine,
    ProgressUpdate,
    QueuedJob,
    Step,
    StepStarted,
    Submitted,
)
from sleap_rtc.engine.backends.local.backend import MAX_LINE_CHARS
from sleap_rtc.engine.backends.slurm.script import job_environment, render_script
from sleap_rtc.engine.backends.slurm.settings import SlurmSettings
from sleap_rtc.engine.backends.slurm.spool import (
    EVENTS_FILE,
    OUTPUT_FILE,
    READ_FILE,
    SCRIPT_FILE,
    STOP_FILE,
    SpoolFinished,
    SpoolLine,
    SpoolProgress,
    SpoolStep,
    Tail,
    decode,
    read_job,
    write_job,
)
from sleap_rtc.engine.backends.slurm.tools import FINAL_STATES, SlurmClient, SlurmError
from sleap_rtc.engine.backends.slurm.watcher import SlurmWatcher
from sleap_rtc.jobs.states import JobState

log = logging.getLogger(__name__)

#: After SLURM reports a job ended, how long its last events may take to show up
#: in the spool folder (network filesystems) before the worker stops waiting.
FINAL_GRACE_S = 3.0
#: How long a job the compute node reports CANCELLED, that sleap-rtc did not
#: cancel, may take to show why in SLURM (time limit, preemption, scancel).
EXPLAIN_TIMEOUT_S = 60.0
NATIVE_PREFIX = "slurm:"
_TAIL_LINES = 30


def _native(slurm_id: str) -> str:
    return NATIVE_PREFIX + slurm_id


def _why_ended(state: str, slurm_id: str, settings: SlurmSettings, tail: deque[str]) -> Finished:
    """A job SLURM ended without the compute node reporting a result."""
    what = f"SLURM job {slurm_id}"
    last = next((line for line in reversed(tail) if line.strip()), None)
    said = f"; its output ends with: {last.strip()[:500]}" if last else ""
    if state == "CANCELLED":
        return Finished(
            state=JobState.CANCELLED, reason=f"{what} was cancelled outside sleap-rtc{said}"
        )
    if state == "TIMEOUT":
        limit = f" ({settings.time})" if settings.time else ""
        reason = f"{what} reached its time limit{limit}; raise [slurm] time in worker.toml"
    elif state == "OUT_OF_MEMORY":
        limit = f" ({settings.mem})" if settings.mem else ""
        reason = f"{what} ran out of memory{limit}; raise [slurm] mem in worker.toml"
    elif state == "COMPLETED":
        reason = f"{what} ended without reporting a result{said}"
    else:
        reason = f"{what} ended {state} before its steps reported a result{said}"
    return Finished(state=JobState.FAILED, reason=reason)


class SlurmJob(QueuedJob):
    def __init__(
        self,
        backend: SlurmBackend,
        job: EngineJob,
        folder: Path,
        slurm_id: str,
        *,
        resume: bool = False,
    ) -> None:
        super().__init__(job.job_id)
        self._resume = resume
        self.slurm_id = slurm_id
        self._backend = backend
        self._job = job
        self._folder = folder
        self._cancelled = False
        self._step: Step | None = None
        self._done = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"slurm-job-{self.job_id}")

    async def cancel(self) -> None:
        if self._done:
            return
        self._cancelled = True
        try:
            await asyncio.to_thread(self._backend.slurm.scancel, [self.slurm_id])
        except SlurmError as exc:  # e.g. it ended a moment ago; the poll will tell
            log.info("scancel %s: %s", self.slurm_id, exc)
        self._backend.watcher.poke()

    async def stop_early(self) -> bool:
        step = self._step
        if not self._job.stop_early or self._cancelled or step is None or step.kind != "train":
            return False
        (self._folder / STOP_FILE).touch()
        return True

    # ------------------------------------------------------------------ following

    async def _run(self) -> None:
        self._backend.watcher.watch(self.slurm_id)
        try:
            finished = await self._follow()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the job must always end with Finished
            log.exception("following SLURM job %s", self.slurm_id)
            with contextlib.suppress(SlurmError):
                await asyncio.to_thread(self._backend.slurm.scancel, [self.slurm_id])
            finished = Finished(
                state=JobState.FAILED, reason=f"worker error while following the job: {exc!r}"
            )
        finally:
            self._backend.watcher.unwatch(self.slurm_id)
        self._done = True
        self.emit(finished)
        if not self._backend.settings.keep_spool:
            shutil.rmtree(self._folder, ignore_errors=True)

    def _load_offsets(self) -> dict[str, int]:
        try:
            data = json.loads((self._folder / READ_FILE).read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, int) and v >= 0}

    def _save_offsets(self, offsets: dict[str, int]) -> None:
        partial = self._folder / (READ_FILE + ".part")
        with contextlib.suppress(OSError):
            partial.write_text(json.dumps(offsets))
            partial.replace(self._folder / READ_FILE)

    def _replay(self, upto: int) -> Finished | None:
        """After a worker restart: the step running, from the events read before it."""
        try:
            with (self._folder / EVENTS_FILE).open("rb") as handle:
                data = handle.read(upto)
        except FileNotFoundError:
            return None
        for raw in data.splitlines():
            event = decode(raw)
            if isinstance(event, SpoolStep) and event.index <= len(self._job.steps):
                self._step = self._job.steps[event.index - 1]
            elif isinstance(event, SpoolFinished):
                return self._translate(raw)
        return None

    async def _follow(self) -> Finished:
        offsets = self._load_offsets() if self._resume else {}
        events = Tail(self._folder / EVENTS_FILE, offset=offsets.get("events", 0))
        output = Tail(
            self._folder / OUTPUT_FILE, max_line=MAX_LINE_CHARS * 4, offset=offsets.get("output", 0)
        )
        tail: deque[str] = deque(maxlen=_TAIL_LINES)
        shown_state: str | None = None
        final_since: float | None = None
        interval = self._backend.settings.events_interval_s
        if self._resume:
            replayed = self._replay(events.consumed)
            if replayed is not None:
                return await self._settle(replayed, tail)
            self.emit(
                LogLine(f"[sleap-rtc] the worker restarted; following SLURM job {self.slurm_id}")
            )
        saved = (events.consumed, output.consumed)
        while True:
            if (events.consumed, output.consumed) != saved:
                saved = (events.consumed, output.consumed)
                self._save_offsets({"events": saved[0], "output": saved[1]})
            for raw in output.read():
                text = raw.decode("utf-8", errors="replace").rstrip()[:MAX_LINE_CHARS]
                if text:
                    tail.append(text)
                    self.emit(LogLine(text))
            for raw in events.read():
                finished = self._translate(raw)
                if finished is not None:
                    return await self._settle(finished, tail)
            state = self._backend.watcher.state_of(self.slurm_id)
            if state is not None and state != shown_state:
                shown_state = state
                self.emit(LogLine(f"[sleap-rtc] SLURM job {self.slurm_id}: {state}"))
            if state in FINAL_STATES:
                final_since = final_since or time.monotonic()
                if time.monotonic() - final_since > FINAL_GRACE_S:
                    for raw in output.read():
                        tail.append(raw.decode("utf-8", errors="replace"))
                    if self._cancelled:
                        return Finished(state=JobState.CANCELLED, reason="cancelled by the user")
                    return _why_ended(state, self.slurm_id, self._backend.settings, tail)
            await asyncio.sleep(interval)

    def _translate(self, raw: bytes) -> Finished | None:
        event = decode(raw)
        if event is None:
            log.warning("SLURM job %s: ignoring an invalid event line", self.slurm_id)
        elif isinstance(event, SpoolLine):
            self.emit(LogLine(event.text[:MAX_LINE_CHARS]))
        elif isinstance(event, SpoolProgress):
            self.emit(ProgressUpdate(event.progress))
        elif isinstance(event, SpoolStep):
            if event.index <= len(self._job.steps):
                self._step = self._job.steps[event.index - 1]
                self.emit(StepStarted(self._step, _native(self.slurm_id)))
        elif isinstance(event, SpoolFinished):
            self._step = None
            # Only outputs this job planned are passed on.
            planned = {str(s.output) for s in self._job.steps if s.output is not None}
            return Finished(
                state=JobState(event.state),
                exit_code=event.exit_code,
                reason=event.reason,
                outputs=[o for o in event.outputs if o in planned],
                stopped_early=event.stopped_early,
            )
        return None

    async def _settle(self, finished: Finished, tail: deque[str]) -> Finished:
        """The compute node's result, corrected where SLURM knows better."""
        if self._cancelled and finished.state is not JobState.COMPLETE:
            # scancel signals every process of the job; a step may die of it first.
            return Finished(
                state=JobState.CANCELLED,
                exit_code=finished.exit_code,
                reason="cancelled by the user",
                outputs=finished.outputs,
            )
        if finished.state is not JobState.CANCELLED:
            return finished
        # Cancelled on the node, not by sleap-rtc: a time limit, preemption or scancel.
        deadline = time.monotonic() + EXPLAIN_TIMEOUT_S
        self._backend.watcher.poke()
        while time.monotonic() < deadline:
            state = self._backend.watcher.state_of(self.slurm_id)
            if state in FINAL_STATES and state != "COMPLETED" and state != "FAILED":
                why = _why_ended(state, self.slurm_id, self._backend.settings, tail)
                return Finished(
                    state=why.state,
                    exit_code=finished.exit_code,
                    reason=why.reason,
                    outputs=finished.outputs,
                )
            if state in FINAL_STATES:
                break
            await asyncio.sleep(self._backend.settings.events_interval_s)
        return finished


class SlurmBackend(Backend):
    """Runs jobs as SLURM batch jobs; the worker runs on a node that can submit them."""

    name = "slurm"
    jobs_outlive_worker = True

    def __init__(
        self,
        settings: SlurmSettings,
        *,
        spool_dir: Path,
        cancel_grace_s: float = 5.0,
        env: Mapping[str, str] | None = None,
        slurm: SlurmClient | None = None,
        warm_engine: bool = True,
    ) -> None:
        self.settings = settings
        #: The SLURM tools every job of this backend is submitted, watched and cancelled with.
        self.slurm = slurm or SlurmClient()
        self.spool_dir = (settings.spool_dir or spool_dir).expanduser().absolute()
        #: Jobs' own work folders (effective configs, HOME, TMPDIR): the compute nodes
        #: must see them, so they live on the shared filesystem beside the spool.
        self.work_root: Path | None = self.spool_dir / "work"
        self.cancel_grace_s = cancel_grace_s
        #: A batch job of several steps starts them from one warm engine on its node.
        self.warm_engine = warm_engine
        self.env = dict(env or {})
        self.watcher = SlurmWatcher(self.slurm, interval=settings.poll_interval_s)

    @staticmethod
    def check() -> None:
        """Raise :class:`SlurmError` saying what is missing when SLURM can't be used here."""
        for tool in ("sbatch", "sacct", "squeue", "scancel"):
            if shutil.which(tool) is None:
                raise SlurmError(
                    f"backend slurm: {tool} is not on PATH; run the worker on a SLURM "
                    "login node (or load the SLURM module first)"
                )

    async def submit(self, job: EngineJob) -> SlurmJob:
        folder = self.spool_dir / job.job_id
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in (EVENTS_FILE, OUTPUT_FILE, STOP_FILE):
            (folder / stale).unlink(missing_ok=True)
        env = {**job.env, **self.env}
        write_job(folder, dataclasses.replace(job, env=env))
        script = folder / SCRIPT_FILE
        script.write_text(
            render_script(job, folder, self.settings, self.cancel_grace_s, warm=self.warm_engine)
        )
        options = [
            f"--job-name=sleap-rtc-{job.job_id}",
            # "%" starts a filename pattern for sbatch; "%%" is a literal one.
            f"--output={str(folder / OUTPUT_FILE).replace('%', '%%')}",
            "--open-mode=append",
            "--no-requeue",
            f"--chdir={job.cwd or folder}",
        ]
        try:
            slurm_id = await asyncio.to_thread(
                self.slurm.sbatch, script, env=job_environment(), options=options
            )
        except SlurmError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        handle = SlurmJob(self, job, folder, slurm_id)
        partition = f" on partition {self.settings.partition}" if self.settings.partition else ""
        handle.emit(
            Submitted(
                native_id=_native(slurm_id),
                note=f"[sleap-rtc] submitted as SLURM job {slurm_id}{partition}",
            )
        )
        handle.start()
        return handle

    async def reattach(self, job_id: str, native_id: str) -> SlurmJob | None:
        if not native_id.startswith(NATIVE_PREFIX):
            return None
        folder = self.spool_dir / job_id
        try:
            job = read_job(folder)
        except (OSError, ValueError):
            return None  # its spool folder is gone: nothing to follow
        handle = SlurmJob(self, job, folder, native_id.removeprefix(NATIVE_PREFIX), resume=True)
        handle.start()
        return handle

    async def reap(self, native_id: str) -> str:
        reason = "the worker stopped while the job was running"
        if not native_id.startswith(NATIVE_PREFIX):
            return reason
        slurm_id = native_id.removeprefix(NATIVE_PREFIX)
        try:
            state = (await asyncio.to_thread(self.slurm.job_states, [slurm_id])).get(slurm_id)
            if state is not None and state not in FINAL_STATES:
                await asyncio.to_thread(self.slurm.scancel, [slurm_id])
                return f"{reason}; its SLURM job {slurm_id} ({state}) was cancelled"
        except SlurmError as exc:
            return f"{reason}; SLURM job {slurm_id} could not be checked: {exc}"
        return reason
