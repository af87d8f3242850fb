"""What a SLURM-backed job runs on its compute node.

``python -m sleap_rtc.engine.backends.slurm.node SPOOL`` reads the job from ``SPOOL/job.json``
and runs its sleap-nn steps exactly as a local worker would (the local backend:
process groups, ZMQ progress on this node's loopback, stop-early). Every event is
appended to ``SPOOL/events.jsonl``, which the worker on the login node follows. A
``SPOOL/stop`` file asks training to stop early; SIGTERM (``scancel``, the time
limit) cancels the steps and still writes the final event.

The exit code is 0 when the job completed and 1 otherwise, so ``sacct`` tells
the same story as sleap-rtc.

With ``--warm-engine`` and several steps that run this environment's sleap-nn, the
steps start from one warm engine (:mod:`sleap_rtc.engine.warm`) that imports
sleap-nn once for all of them; its files live in the spool folder, the one place
this runner may write.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path

from sleap_rtc.engine.backend import Finished, LogLine, ProgressUpdate, StepStarted
from sleap_rtc.engine.backends.local.backend import LocalBackend, LocalJob
from sleap_rtc.engine.backends.slurm.spool import (
    EVENTS_FILE,
    STOP_FILE,
    SpoolFinished,
    SpoolLine,
    SpoolProgress,
    SpoolStep,
    encode,
    read_job,
)
from sleap_rtc.engine.warm_client import sleap_nn_script
from sleap_rtc.jobs.events import NOTE_PREFIX
from sleap_rtc.jobs.states import JobState

#: How often buffered events are written out (and synced, for network filesystems).
FLUSH_INTERVAL_S = 0.1
STOP_POLL_S = 0.25


class EventWriter:
    """Appends encoded events, batching writes and syncing each batch to disk.

    A network filesystem shows other hosts what was written only after a sync,
    so each batch is synced; batching keeps a chatty log from syncing per line.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._pending: list[bytes] = []

    def add(self, data: bytes) -> None:
        self._pending.append(data)

    def flush(self) -> None:
        if not self._pending:
            return
        data, self._pending = b"".join(self._pending), []
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        with contextlib.suppress(OSError):
            os.fsync(self._fd)

    def close(self) -> None:
        self.flush()
        os.close(self._fd)


async def _flush_often(writer: EventWriter) -> None:
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_S)
        writer.flush()


async def _watch_stop(folder: Path, job: LocalJob) -> None:
    while not (folder / STOP_FILE).exists():
        await asyncio.sleep(STOP_POLL_S)
    await job.stop_early()


def _pid(native_id: str) -> int:
    head = native_id.split("@", 1)[0]
    return int(head) if head.isdigit() else 0


async def run(folder: Path, *, cancel_grace_s: float = 5.0, warm_engine: bool = False) -> int:
    job = read_job(folder)
    writer = EventWriter(folder / EVENTS_FILE)
    script = sleap_nn_script()
    warm_steps = sum(1 for step in job.steps if step.argv[:1] == [script])
    warm_engine = warm_engine and warm_steps > 1
    if warm_engine:
        where = socket.gethostname()
        note = f"{NOTE_PREFIX}{warm_steps} steps start from one warm engine on {where}"
        writer.add(encode(SpoolLine(text=note)))
    backend = LocalBackend(
        cancel_grace_s=cancel_grace_s, warm_engine=warm_engine, warm_folder=folder
    )
    await backend.start()
    local = await backend.submit(job)
    loop = asyncio.get_running_loop()
    cancelling: list[asyncio.Task[None]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: cancelling.append(loop.create_task(local.cancel())))
    helpers = [
        asyncio.create_task(_flush_often(writer)),
        asyncio.create_task(_watch_stop(folder, local)),
    ]
    state = JobState.FAILED
    try:
        async for event in local.events():
            if isinstance(event, LogLine):
                writer.add(encode(SpoolLine(text=event.text)))
            elif isinstance(event, ProgressUpdate):
                writer.add(encode(SpoolProgress(progress=event.progress)))
            elif isinstance(event, StepStarted):
                writer.add(encode(SpoolStep(index=event.step.index, pid=_pid(event.native_id))))
            elif isinstance(event, Finished):
                state = event.state
                writer.add(
                    encode(
                        SpoolFinished(
                            state=event.state.value,  # type: ignore[arg-type]
                            exit_code=event.exit_code,
                            reason=event.reason[:8000] if event.reason else None,
                            outputs=event.outputs,
                            stopped_early=event.stopped_early,
                        )
                    )
                )
    finally:
        for task in helpers:
            task.cancel()
        for task in [*helpers, *cancelling]:
            with contextlib.suppress(BaseException):
                await task
        writer.close()
        await backend.close()
    return 0 if state is JobState.COMPLETE else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sleap_rtc.engine.backends.slurm.node",
        description="Run a sleap-rtc job's steps on this node (started by a SLURM batch script).",
    )
    parser.add_argument("spool", type=Path, help="the job's spool folder")
    parser.add_argument("--cancel-grace-s", type=float, default=5.0)
    parser.add_argument(
        "--warm-engine", action="store_true", help="start the steps from one warm engine"
    )
    args = parser.parse_args(argv)
    if not (args.spool / "job.json").is_file():
        print(f"error: {args.spool / 'job.json'} does not exist", file=sys.stderr)
        return 2
    return asyncio.run(
        run(args.spool, cancel_grace_s=args.cancel_grace_s, warm_engine=args.warm_engine)
    )


if __name__ == "__main__":
    sys.exit(main())
