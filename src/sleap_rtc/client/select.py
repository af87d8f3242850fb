"""Which worker runs a job: by id, by GPU memory, or the one that fits.

Pure logic over a discovery listing, so the rules are tested without a server.
"""

from __future__ import annotations

from collections.abc import Sequence

from sleap_rtc.client.errors import ClientError
from sleap_rtc.protocol.api import WorkerView


class NoWorker(ClientError):
    """No worker fits; the message says what was found and what to do."""


class Ambiguous(ClientError):
    """Several workers fit and nothing says which; ``candidates`` lists them."""

    def __init__(self, message: str, candidates: list[WorkerView]) -> None:
        super().__init__(message)
        self.candidates = candidates


def _memory(worker: WorkerView) -> str:
    best = worker.best_gpu_memory_mb
    return f"{best:,} MB free" if worker.gpus else "no GPU"


def rank(workers: Sequence[WorkerView]) -> list[WorkerView]:
    """Most free GPU memory first; then fewer running jobs; then by name."""
    return sorted(workers, key=lambda w: (-w.best_gpu_memory_mb, w.running_jobs, w.name, w.id))


class SharedName(Ambiguous):
    """A name several online workers go by; only an id says which (``candidates``)."""


def _named(workers: Sequence[WorkerView], room: str, worker_id: str) -> WorkerView:
    """The online worker ``worker_id`` names: its id exactly, else a name only one uses."""
    workers_help = f"see `sleap-rtc rooms workers --room {room}`"
    by_id = [w for w in workers if w.id == worker_id]
    named = by_id or [w for w in workers if w.name == worker_id]
    if not named:
        raise NoWorker(f"no worker {worker_id!r} in room {room}; {workers_help}")
    online = [w for w in named if w.status != "offline"]
    if len(online) == 1:
        return online[0]
    if len(named) == 1:
        raise NoWorker(
            f"worker {named[0].name} ({named[0].id}) is offline in room {room}; {workers_help}"
        )
    if not online:
        ids = ", ".join(w.id for w in named)
        raise NoWorker(
            f"every worker named {worker_id!r} is offline in room {room} ({ids}); {workers_help}"
        )
    listed = "; ".join(f"{w.id} on {w.hostname} ({w.status})" for w in rank(online))
    raise SharedName(
        f"--worker-id {worker_id!r}: {len(online)} online workers in room {room} are named "
        f"{worker_id!r}: {listed}. Pass the one you mean by id: -w <id>",
        rank(online),
    )


def choose_worker(
    workers: Sequence[WorkerView],
    room: str,
    *,
    worker_id: str | None = None,
    auto_select: bool = False,
    min_gpu_memory: int | None = None,
) -> WorkerView:
    """The worker to use, or :class:`NoWorker` / :class:`Ambiguous` saying why not.

    ``worker_id`` is a worker's id (exact) or a name; a name several online workers
    share is :class:`SharedName`, listing their ids.
    """
    if worker_id is not None:
        worker = _named(workers, room, worker_id)
        if min_gpu_memory is not None and worker.best_gpu_memory_mb < min_gpu_memory:
            raise NoWorker(
                f"worker {worker.name} has {_memory(worker)}, less than "
                f"--min-gpu-memory {min_gpu_memory:,} MB"
            )
        return worker
    online = [w for w in workers if w.status != "offline"]
    if not online:
        raise NoWorker(
            f"no worker is online in room {room}. Start one with `sleap-rtc worker --room {room}`"
        )
    fits = [w for w in online if min_gpu_memory is None or w.best_gpu_memory_mb >= min_gpu_memory]
    if not fits:
        best = rank(online)[0]
        raise NoWorker(
            f"no online worker in room {room} has {min_gpu_memory:,} MB of free GPU memory "
            f"(the most is {_memory(best)} on {best.name}); lower --min-gpu-memory"
        )
    idle = [w for w in fits if w.status == "online"]
    if auto_select:
        if not idle:
            names = ", ".join(w.name for w in fits)
            raise NoWorker(
                f"every worker that fits is busy ({names}); wait, or pick one with "
                "--worker-id to queue the job there"
            )
        return rank(idle)[0]
    if len(fits) == 1:
        return fits[0]
    raise Ambiguous(
        f"{len(fits)} workers fit in room {room}; pass --worker-id or --auto-select",
        rank(fits),
    )


def job_candidates(
    workers: Sequence[WorkerView], room: str, *, worker_id: str | None = None
) -> list[WorkerView]:
    """The workers that may hold a job: the one named, else every online worker."""
    if worker_id is not None:
        return [choose_worker(workers, room, worker_id=worker_id)]
    online = [w for w in workers if w.status != "offline"]
    if not online:
        raise NoWorker(f"no worker is online in room {room}")
    return online
