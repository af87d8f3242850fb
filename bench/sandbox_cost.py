"""What the job sandbox costs: the same tiny training job with ``sandbox = "landlock"`` and "off".

Both run through the whole worker path (validation, effective config, local backend,
job store), alternating in this process tree on the same generated data, and the
script prints each wall time, the medians and their ratio (sandboxed ÷ unconfined).
The sandbox adds one small launcher process per step that restricts itself and
``exec``\\ s sleap-nn, so the ratio should stay close to 1.

    .venv/bin/python bench/sandbox_cost.py --repeat 3 --epochs 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Literal

from sleap_rtc.demo.data import make_demo_data
from sleap_rtc.engine.backends.local.backend import LocalBackend
from sleap_rtc.jobs.specs import TrainSpec
from sleap_rtc.jobs.states import JobState
from sleap_rtc.worker.config import MountConfig, WorkerConfig
from sleap_rtc.worker.runner import JobRunner

Mode = Literal["landlock", "off"]


async def one_job(root: Path, config: Path, epochs: int, sandbox: Mode) -> float:
    worker = WorkerConfig(
        sandbox=sandbox,
        mounts=[MountConfig(path=str(root / "data"))],
        models_dir=root / "data" / "models",
        state_dir=root / f"state-{sandbox}",
        device="cpu",
    )
    runner = JobRunner(worker, LocalBackend())
    try:
        started = time.perf_counter()
        record = runner.submit(TrainSpec(config_paths=[str(config)], max_epochs=epochs))
        final = await runner.wait(record.id)
        elapsed = time.perf_counter() - started
    finally:
        await runner.close()
    if final.state is not JobState.COMPLETE:
        raise SystemExit(f"job ({sandbox}) failed: {final.reason}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--config", default="single_instance")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demo = make_demo_data(root / "data" / "demo")
        config = demo.configs[args.config]
        times: dict[str, list[float]] = {"landlock": [], "off": []}
        for index in range(args.repeat):
            # Alternate which goes first, so neither always runs on a warmer cache.
            order: list[Mode] = ["landlock", "off"] if index % 2 == 0 else ["off", "landlock"]
            for mode in order:
                elapsed = asyncio.run(one_job(root, config, args.epochs, mode))
                times[mode].append(elapsed)
                print(f"run {index + 1} sandbox={mode:8s} {elapsed:6.2f} s", flush=True)
        sandboxed = statistics.median(times["landlock"])
        unconfined = statistics.median(times["off"])
        print(
            f"median: sandboxed {sandboxed:.2f} s, unconfined {unconfined:.2f} s, "
            f"ratio {sandboxed / unconfined:.3f} ({args.repeat} pairs, {args.epochs} epochs)"
        )


if __name__ == "__main__":
    main()
