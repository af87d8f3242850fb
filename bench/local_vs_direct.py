"""Overhead of the local backend: the same tiny training run, direct vs through sleap-rtc.

Runs ``sleap-nn train`` directly and then as a job (validation → engine → local
backend → job store, progress over ZMQ), alternating, in this process tree, and
prints the wall times and their ratio. The backend runs once with stop-early
control (sleap-nn's controller polls up to 10 ms per batch) and once without.
All runs train the same demo config on the same generated data for the same
number of epochs.

    .venv/bin/python bench/local_vs_direct.py --repeat 2 --epochs 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from direct_sleap_nn import train_argv

from sleap_rtc.demo.data import make_demo_data
from sleap_rtc.engine.backends.local.backend import LocalBackend
from sleap_rtc.jobs.specs import TrainSpec
from sleap_rtc.jobs.states import JobState
from sleap_rtc.worker.config import MountConfig, WorkerConfig
from sleap_rtc.worker.runner import JobRunner


def direct(config: Path, labels: Path, models: Path, name: str, epochs: int) -> float:
    argv = train_argv(config, labels, models, name, epochs)
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


async def through_backend(root: Path, config: Path, epochs: int, stop_early: bool) -> float:
    worker = WorkerConfig(
        stop_early=stop_early,
        mounts=[MountConfig(path=str(root / "data"))],
        models_dir=root / "models",
        state_dir=root / "state",
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
        raise SystemExit(f"job failed: {final.reason}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--config", default="single_instance")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_demo_data(root / "data")
        config = data.configs[args.config]
        times: dict[str, list[float]] = {"direct": [], "backend": [], "backend-no-stop": []}
        for i in range(args.repeat):
            times["direct"].append(
                direct(config, data.labels_path, root / "direct", f"d{i}", args.epochs)
            )
            times["backend"].append(asyncio.run(through_backend(root, config, args.epochs, True)))
            times["backend-no-stop"].append(
                asyncio.run(through_backend(root, config, args.epochs, False))
            )
            print(
                f"run {i + 1}: " + "   ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                flush=True,
            )
    d = statistics.median(times["direct"])
    b = statistics.median(times["backend"])
    n = statistics.median(times["backend-no-stop"])
    print(
        f"median: direct {d:.2f} s, local backend {b:.2f} s (ratio {b / d:.3f}), "
        f"local backend without stop-early control {n:.2f} s (ratio {n / d:.3f}) "
        f"({args.config}, {args.epochs} epochs, {args.repeat} runs each, CPU)"
    )


if __name__ == "__main__":
    main()
