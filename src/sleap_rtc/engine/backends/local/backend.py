"""The local backend: run a job's sleap-nn steps as child processes here.

Each step runs in its own session (process group), so cancelling reaches every
process sleap-nn starts, and nothing is left behind: after a step ends, any
straggler in its group is killed. Training progress is read from sleap-nn's ZMQ
publisher on a port bound here (port 0, so two jobs never collide); stop-early is
sent through its ZMQ controller.

With the warm engine on (:mod:`sleap_rtc.engine.warm`), a step that runs this
environment's ``sleap-nn`` is forked from a process that has already imported it
instead of started cold; everything above holds the same. When no warm start is
possible the step starts cold and its log says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
from collections import deque
from pathlib import Path

import psutil

from sleap_rtc.engine import sandbox
from sleap_rtc.engine.backend import (
    Backend,
    EngineJob,
    Finished,
    LogLine,
    ProgressUpdate,
    QueuedJob,
    Step,
    StepStarted,
)
from sleap_rtc.engine.commands import zmq_overrides
from sleap_rtc.engine.progress import TrainProgressTracker, parse_track_line
from sleap_rtc.engine.warm_client import WarmEngine, WarmProcess, WarmUnavailable
from sleap_rtc.jobs.events import NOTE_PREFIX
from sleap_rtc.jobs.states import JobState

#: Longest log line kept; longer lines are cut (a runaway print can't eat memory).
MAX_LINE_CHARS = 16 * 1024
#: Largest ZMQ progress message accepted from sleap-nn.
MAX_ZMQ_BYTES = 1024 * 1024
#: How many trailing log lines are kept to explain a failure.
TAIL_LINES = 30

_ERROR_LINE = re.compile(r"^\s*([A-Za-z_.]*(Error|Exception|Interrupt)\b.*)$")


def native_id_of(pid: int) -> str:
    """``pid@start_time``: identifies a process even after its pid is reused."""
    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        created = 0.0
    return f"{pid}@{created:.3f}"


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _failure_reason(step: Step, code: int, tail: deque[str]) -> str:
    what = f"sleap-nn {step.kind} ({step.name})"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"{what} was killed by {name}"
    for line in reversed(tail):
        match = _ERROR_LINE.match(line)
        if match:
            return f"{what} exited with code {code}: {match.group(1).strip()[:500]}"
    return f"{what} exited with code {code}"


def job_environment(job: EngineJob, backend_env: dict[str, str]) -> dict[str, str]:
    """What a step's processes see: the allowed part of ours, then the job's own."""
    cwd = job.cwd
    if cwd is not None:
        (cwd / "tmp").mkdir(parents=True, exist_ok=True)
    return sandbox.job_environment(
        os.environ,
        allow=job.env_allow,
        work_dir=cwd,
        extra={
            **backend_env,
            **job.env,
            "PYTHONUNBUFFERED": "1",
            "TERM": "dumb",
            "NO_COLOR": "1",
        },
    )


class LocalJob(QueuedJob):
    def __init__(
        self,
        job: EngineJob,
        *,
        cancel_grace_s: float,
        env: dict[str, str],
        warm: WarmEngine | None = None,
    ) -> None:
        super().__init__(job.job_id)
        self._job = job
        self._grace = cancel_grace_s
        self._env = env
        self._warm = warm
        self._proc: asyncio.subprocess.Process | WarmProcess | None = None
        self._cancelled = False
        self._cancel_asked = asyncio.Event()
        self._stop_requested = False
        self._controller = None  # zmq PUB socket of the running training step
        self._step: Step | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"job-{self.job_id}")

    async def cancel(self) -> None:
        self._cancelled = True
        self._cancel_asked.set()
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        for sig, wait in (
            (signal.SIGINT, self._grace),
            (signal.SIGTERM, self._grace),
            (signal.SIGKILL, None),
        ):
            if not _signal_group(proc.pid, sig):
                return
            if wait is None:
                break
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), wait)
                return
            except TimeoutError:
                continue

    async def stop_early(self) -> bool:
        if (
            not self._job.stop_early
            or self._step is None
            or self._step.kind != "train"
            or self._cancelled
        ):
            return False
        self._stop_requested = True
        return True

    # ------------------------------------------------------------------ running

    async def _run(self) -> None:
        try:
            finished = await self._run_steps()
        except asyncio.CancelledError:
            await self._kill_now()
            raise
        except Exception as exc:  # the job must always end with Finished
            await self._kill_now()
            finished = Finished(
                state=JobState.FAILED, reason=f"worker error while running the job: {exc!r}"
            )
        self.emit(finished)

    async def _kill_now(self) -> None:
        if self._proc is not None:
            _signal_group(self._proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await self._proc.wait()

    async def _run_steps(self) -> Finished:
        outputs: list[str] = []
        last_code: int | None = None
        for step in self._job.steps:
            if self._cancelled:
                break
            code, tail, error = await self._run_step(step)
            last_code = code
            if self._cancelled or code is None:
                break
            if code != 0:
                reason = error or _failure_reason(step, code, tail)
                return Finished(
                    state=JobState.FAILED,
                    exit_code=code,
                    reason=reason,
                    outputs=outputs,
                    stopped_early=self._stop_requested,
                )
            missing = self._missing_output(step)
            if missing:
                return Finished(
                    state=JobState.FAILED, exit_code=code, reason=missing, outputs=outputs
                )
            if step.output is not None:
                outputs.append(str(step.output))
        if self._cancelled:
            return Finished(
                state=JobState.CANCELLED,
                exit_code=last_code,
                reason="cancelled by the user",
                outputs=outputs,
            )
        return Finished(
            state=JobState.COMPLETE,
            exit_code=0,
            outputs=outputs,
            stopped_early=self._stop_requested,
        )

    @staticmethod
    def _missing_output(step: Step) -> str | None:
        if step.output is None:
            return None
        if step.kind == "train" and not (step.output / "best.ckpt").is_file():
            return (
                f"sleap-nn train ({step.name}) finished without writing {step.output / 'best.ckpt'}"
            )
        if step.kind == "track" and not step.output.is_file():
            return f"sleap-nn predict finished without writing {step.output}"
        return None

    async def _start(
        self, argv: list[str], env: dict[str, str]
    ) -> tuple[asyncio.subprocess.Process | WarmProcess | None, str | None]:
        """Start a step's process, warm where it can be; None when cancelled first.

        Also returns the note to log when a warm start was wanted but not possible.
        """
        note = None
        if self._warm is not None and self._warm.eligible(argv):
            spawn = asyncio.ensure_future(
                self._warm.spawn(argv, env=env, cwd=self._job.cwd, policy=self._job.sandbox)
            )
            asked = asyncio.ensure_future(self._cancel_asked.wait())
            try:
                await asyncio.wait({spawn, asked}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                asked.cancel()
                if not spawn.done():
                    spawn.cancel()
                    with contextlib.suppress(BaseException):
                        await spawn
            if spawn.cancelled():
                return None, None
            try:
                return spawn.result(), None
            except WarmUnavailable as exc:
                note = f"{NOTE_PREFIX}sleap-nn starts cold: no warm engine ({exc})"
        if self._cancelled:
            return None, note
        if self._job.sandbox is not None:
            argv = sandbox.wrap(argv, self._job.sandbox)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=self._job.cwd,
            limit=MAX_ZMQ_BYTES,
        )
        return proc, note

    async def _run_step(self, step: Step) -> tuple[int | None, deque[str], str | None]:
        import zmq
        import zmq.asyncio

        self._step = step
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        error: list[str] = []
        argv = list(step.argv)
        ctx = sub = pub = None
        tracker = None
        if step.kind == "train":
            ctx = zmq.asyncio.Context()
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.MAXMSGSIZE, MAX_ZMQ_BYTES)
            sub.subscribe(b"")
            publish_port = sub.bind_to_random_port("tcp://127.0.0.1")
            controller_port = None
            if self._job.stop_early:
                pub = ctx.socket(zmq.PUB)
                pub.setsockopt(zmq.LINGER, 0)
                controller_port = pub.bind_to_random_port("tcp://127.0.0.1")
            argv += zmq_overrides(publish_port, controller_port)
            tracker = TrainProgressTracker(step)
        env = job_environment(self._job, self._env)
        helpers: list[asyncio.Task[None]] = []
        try:
            self._proc, cold_note = await self._start(argv, env)
            proc = self._proc
            if proc is None:
                return None, tail, None
            self.emit(StepStarted(step=step, native_id=native_id_of(proc.pid)))
            for note in (*step.notes, *([cold_note] if cold_note else [])):
                self.emit(LogLine(note))
            assert proc.stdout is not None
            helpers.append(asyncio.create_task(self._read_output(proc.stdout, step, tail, error)))
            if sub is not None and tracker is not None:
                helpers.append(asyncio.create_task(self._read_zmq(sub, tracker)))
            if pub is not None:
                helpers.append(asyncio.create_task(self._send_stop(pub, proc)))
            if self._cancelled:  # cancel() came while the process was being started
                helpers.append(asyncio.create_task(self.cancel()))
            code = await proc.wait()
            # Output and progress published just before exit are still in flight.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(helpers[0]), 5)
            await asyncio.sleep(0.05 if sub is not None else 0)
            lost = proc.lost if isinstance(proc, WarmProcess) else None
            return code, tail, lost or (error[0] if error else None)
        finally:
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(BaseException):
                    await task
            if self._proc is not None:
                _signal_group(self._proc.pid, signal.SIGKILL)  # stragglers of the group
            for sock in (sub, pub):
                if sock is not None:
                    sock.close(linger=0)
            if ctx is not None:
                ctx.term()
            self._step = None

    async def _read_output(
        self, stream: asyncio.StreamReader, step: Step, tail: deque[str], error: list[str]
    ) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line over the reader's limit: take what is buffered
                raw = await stream.read(MAX_ZMQ_BYTES)
            if not raw:
                return
            for part in raw.decode("utf-8", errors="replace").replace("\r", "\n").split("\n"):
                text = part.rstrip()
                if not text:
                    continue
                if len(text) > MAX_LINE_CHARS:
                    text = text[:MAX_LINE_CHARS] + " …[cut]"
                if step.kind == "track":
                    parsed = parse_track_line(text)
                    if parsed is not None and not isinstance(parsed, str):
                        self.emit(ProgressUpdate(parsed))
                        continue
                    if isinstance(parsed, str) and not error:
                        error.append(f"sleap-nn predict failed: {parsed}")
                tail.append(text)
                self.emit(LogLine(text))

    async def _read_zmq(self, sub: object, tracker: TrainProgressTracker) -> None:
        while True:
            raw = await sub.recv()  # type: ignore[attr-defined]
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if isinstance(message, dict):
                progress = tracker.feed(message)
                if progress is not None:
                    self.emit(ProgressUpdate(progress))

    async def _send_stop(self, pub: object, proc: asyncio.subprocess.Process | WarmProcess) -> None:
        # PUB/SUB drops messages sent before the subscriber connects, and sleap-nn
        # only polls at batch ends, so the stop command is repeated until it lands.
        while proc.returncode is None:
            if self._stop_requested:
                await pub.send_string(json.dumps({"command": "stop"}))  # type: ignore[attr-defined]
            await asyncio.sleep(0.25)


def _retrieve(task: asyncio.Task[object]) -> None:
    if not task.cancelled():
        task.exception()


class LocalBackend(Backend):
    """Runs jobs as child processes of the worker.

    ``warm_engine`` forks steps from a pre-imported sleap-nn (:mod:`~sleap_rtc.engine.warm`);
    it warms up in :meth:`start` and ends in :meth:`close`.
    """

    name = "local"

    def __init__(
        self,
        *,
        cancel_grace_s: float = 5.0,
        env: dict[str, str] | None = None,
        warm_engine: bool = False,
        warm_folder: Path | None = None,
    ) -> None:
        self.cancel_grace_s = cancel_grace_s
        self.env = dict(env or {})
        self.warm: WarmEngine | None = None
        if warm_engine:
            self.warm = WarmEngine(
                sandbox.job_environment(os.environ, extra=self.env),
                stdout_limit=MAX_ZMQ_BYTES,
                folder=warm_folder,
            )

    async def start(self) -> None:
        if self.warm is not None:
            # Warms up in the background; a failure is reported by the first step.
            self.warm.start().add_done_callback(_retrieve)

    async def close(self) -> None:
        if self.warm is not None:
            await self.warm.close()

    async def submit(self, job: EngineJob) -> LocalJob:
        local = LocalJob(job, cancel_grace_s=self.cancel_grace_s, env=self.env, warm=self.warm)
        local.start()
        return local

    async def reap(self, native_id: str) -> str:
        reason = "the worker stopped while the job was running"
        try:
            pid_text, created_text = native_id.split("@", 1)
            pid, created = int(pid_text), float(created_text)
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) > 0.01:
                return reason
        except (ValueError, psutil.Error):
            return reason
        # The process outlived its worker; nobody reads its output any more.
        _signal_group(pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.cancel_grace_s)
        except psutil.TimeoutExpired:
            _signal_group(pid, signal.SIGKILL)
            with contextlib.suppress(psutil.Error):
                proc.wait(timeout=5)
        return reason + "; its leftover sleap-nn process was ended"
