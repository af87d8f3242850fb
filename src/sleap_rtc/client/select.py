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


def choose_worker(
    workers: Sequence[WorkerView],
    room: str,
    *,
    worker_id: str | None = None,
    auto_select: bool = False,
    min_gpu_memory: int | None = None,
) -> WorkerView:
    """The worker to use, or :class:`NoWorker` / :class:`Ambiguous` saying why not."""
    if worker_id is not None:
        for worker in workers:
            if worker.id == worker_id or worker.name == worker_id:
                if worker.status == "offline":
                    raise NoWorker(
                        f"worker {worker.name} ({worker.id}) is offline in room {room}; "
                        f"see `sleap-rtc rooms workers --room {room}`"
                    )
                if min_gpu_memory is not None and worker.best_gpu_memory_mb < min_gpu_memory:
                    raise NoWorker(
                        f"worker {worker.name} has {_memory(worker)}, less than "
                        f"--min-gpu-memory {min_gpu_memory:,} MB"
                    )
                return worker
        raise NoWorker(
            f"no worker {worker_id!r} in room {room}; see `sleap-rtc rooms workers --room {room}`"
        )
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
