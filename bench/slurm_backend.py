"""The worker's SLURM backend against sbatch by hand (needs a running SLURM, e.g.
``scripts/slurm-dev-cluster.sh start``).

1. **turnaround**: a one-step job whose step is ``python -c pass``. A: submitted
   through :class:`~sleap_rtc.engine.backends.slurm.backend.SlurmBackend`, from ``submit`` until its
   ``Finished`` event (the compute side starts Python and sleap-rtc, runs the step
   with the local backend, and the worker reads the result from the spool folder).
   B: a batch script running the same ``python -c pass`` under the same Python,
   submitted with ``sbatch --parsable`` and followed with one sacct call every 0.2 s
   until COMPLETED. Alternating A/B ``--repeat`` times; medians and the ratio A/B.

2. **event latency**: a step prints ``--lines`` timestamped lines, one every 50 ms;
   the worker side stamps each line when its ``LogLine`` arrives. Same clock (one
   machine), so the difference is the spool path's delay: the node's batched
   writes (every 0.1 s, synced) plus the worker's reads (every ``events_interval_s``).

    .venv/bin/python bench/slurm_backend.py
    .venv/bin/python bench/slurm_backend.py --repeat 6 --lines 100
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sleap_rtc.engine.backend import EngineJob, Finished, LogLine, Step
from sleap_rtc.engine.backends.slurm.backend import SlurmBackend
from sleap_rtc.engine.backends.slurm.settings import SlurmSettings
from sleap_rtc.engine.backends.slurm.tools import SlurmClient
from sleap_rtc.jobs.states import JobState


def _job(job_id: str, code: str, cwd: Path) -> EngineJob:
    step = Step(name="bench", kind="track", argv=[sys.executable, "-c", code], index=1, total=1)
    return EngineJob(job_id=job_id, kind="track", steps=[step], cwd=cwd)


async def through_backend(backend: SlurmBackend, job: EngineJob) -> tuple[float, list[float]]:
    """Seconds from submit to Finished, and each timestamped line's delay."""
    start = time.perf_counter()
    handle = await backend.submit(job)
    delays: list[float] = []
    async for event in handle.events():
        if isinstance(event, LogLine) and event.text.startswith("t="):
            delays.append(time.time() - float(event.text[2:]))
        if isinstance(event, Finished):
            assert event.state is JobState.COMPLETE, event
    return time.perf_counter() - start, delays


def by_hand(folder: Path) -> float:
    script = folder / "hand.sbatch"
    script.write_text(f"#!/bin/bash\nset -euo pipefail\nexec {sys.executable} -c pass\n")
    start = time.perf_counter()
    slurm = SlurmClient()
    job_id = slurm.sbatch(script, cwd=folder, options=[f"--output={folder}/hand-%j.out"])
    while slurm.job_states([job_id]).get(job_id) != "COMPLETED":
        time.sleep(0.2)
    return time.perf_counter() - start


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=4, help="A/B pairs [4]")
    parser.add_argument("--lines", type=int, default=60, help="timestamped lines [60]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="slurm-backend-bench-") as tmp:
        root = Path(tmp)
        backend = SlurmBackend(SlurmSettings(poll_interval_s=0.2, cpus=1), spool_dir=root / "spool")
        a: list[float] = []
        b: list[float] = []
        for index in range(args.repeat):
            order = ("A", "B") if index % 2 == 0 else ("B", "A")
            for which in order:
                if which == "A":
                    seconds, _ = await through_backend(backend, _job(f"turn{index}", "pass", root))
                    a.append(seconds)
                else:
                    b.append(await asyncio.to_thread(by_hand, root))
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"turnaround, {args.repeat} A/B pairs (python -c pass as one SLURM job):")
        print(
            f"  A sleap-rtc SLURM backend  median {ma:.2f} s  ({', '.join(f'{x:.2f}' for x in a)})"
        )
        print(
            f"  B sbatch + sacct by hand   median {mb:.2f} s  ({', '.join(f'{x:.2f}' for x in b)})"
        )
        print(f"  ratio A/B {ma / mb:.2f}")

        code = (
            "import time\n"
            f"for _ in range({args.lines}):\n"
            "    print(f't={time.time()!r}', flush=True); time.sleep(0.05)\n"
        )
        _, delays = await through_backend(backend, _job("latency", code, root))
        delays.sort()
        p50 = delays[len(delays) // 2]
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
        print(f"event latency, {len(delays)} log lines printed on the node → worker:")
        print(f"  p50 {p50 * 1000:.0f} ms  p99 {p99 * 1000:.0f} ms  max {delays[-1] * 1000:.0f} ms")
        print(
            f"  (node flushes every 0.1 s; worker reads every "
            f"{backend.settings.events_interval_s:.1f} s)"
        )


if __name__ == "__main__":
    asyncio.run(main())
