"""Pipelines: writing many stage scripts, and the cost of chaining through sleap-rtc.

1. **generate**: a job file over ``--datasets`` datasets (default 250) with four stages
   each (single_instance, centroid, centered_instance, track: 1,000 scripts), checked and
   written by ``load_job`` + ``generate``; median of ``--repeat`` runs into fresh
   folders. Baseline: writing the same number of files of the same size with
   ``Path.write_text`` in the same process.

2. **chain** (needs a running SLURM, e.g. ``scripts/slurm-dev-cluster.sh start``): a
   three-stage chain of trivial jobs (``true``) per run. A: ``sleap-rtc pipeline run
   --submit --chain`` on generated scripts whose bodies were edited to ``true``
   (edited scripts are submitted as they are), then polling ``pipeline status``-style
   (one sacct call) until all three completed. B: the same three scripts submitted by
   hand with ``sbatch --parsable --dependency=afterok:…`` and the same polling.
   Alternating A/B ``--chain-repeat`` times; medians and the ratio A/B.

    .venv/bin/python bench/pipeline_slurm.py              # both
    .venv/bin/python bench/pipeline_slurm.py --no-chain   # generation only
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sleap_rtc.engine.backends.slurm.tools import FINAL_STATES, SlurmClient
from sleap_rtc.pipeline.run import submit
from sleap_rtc.pipeline.sbatch import Layout
from sleap_rtc.pipeline.scripts import generate
from sleap_rtc.pipeline.spec import load_job

SLURM = SlurmClient()


def make_project(root: Path, datasets: int, stages: list[str]) -> Path:
    """A job file over ``datasets`` datasets: real demo labels and configs (every stage is
    checked as its node would check it), one labels file shared by all of them."""
    from sleap_rtc.demo.data import make_demo_data

    demo = make_demo_data(root / "demo")
    registry = {f"ds{i:04d}": {"labels": str(demo.labels_path)} for i in range(datasets)}
    root.mkdir(parents=True, exist_ok=True)
    (root / "datasets.json").write_text(json.dumps(registry))
    training = [s for s in stages if s != "track"]
    job = {
        "name": "bench",
        "datasets": "all",
        "training_types": stages,
        "configs": {s: str(demo.configs[s]) for s in training},
        "extra_args": {"max_epochs": 1},
        "slurm": {"time": "00:05:00", "cpus": 1, "mem": "100M"},
        "optimize_batch_size": False,
    }
    path = root / "job.json"
    path.write_text(json.dumps(job))
    return path


def bench_generate(datasets: int, repeat: int) -> None:
    stages = ["single_instance", "centroid", "centered_instance", "track"]
    with tempfile.TemporaryDirectory() as tmp:
        job = make_project(Path(tmp) / "project", datasets, stages)
        ours, base = [], []
        sizes: list[int] = []
        for run in range(repeat):
            started = time.perf_counter()
            written = generate(load_job(job), Layout.under(Path(tmp) / f"run{run}"))
            ours.append(time.perf_counter() - started)
            sizes = [w.script.stat().st_size + w.meta.stat().st_size for w in written]
            folder = Path(tmp) / f"plain{run}"
            folder.mkdir()
            started = time.perf_counter()
            for index, size in enumerate(sizes):
                (folder / f"{index}.txt").write_text("x" * size)
            base.append(time.perf_counter() - started)
    o, b = statistics.median(ours), statistics.median(base)
    n = len(sizes)
    print(f"== generate {n} stage scripts (+ {n} meta files), median of {repeat} ==")
    print(
        f"load_job + generate: {o:.2f} s ({o / n * 1000:.2f} ms per stage); writing the same "
        f"bytes plainly: {b:.3f} s; ratio {o / b:.1f}x"
    )


def wait_all(ids: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = SLURM.job_states(ids)
        if len(states) == len(ids) and all(s in FINAL_STATES for s in states.values()):
            assert set(states.values()) == {"COMPLETED"}, states
            return
        time.sleep(0.2)
    raise TimeoutError(f"chain not done after {timeout} s")


def bench_chain(repeat: int) -> None:
    if shutil.which("sbatch") is None:
        print("chain: skipped (no sbatch; scripts/slurm-dev-cluster.sh start)")
        return
    stages = ["centroid", "centered_instance", "track"]
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        job = make_project(Path(tmp) / "project", 1, stages)
        pipeline = load_job(job)
        ours, hand = [], []
        for run in range(repeat):
            for order in ("AB", "BA")[run % 2]:
                layout = Layout.under(Path(tmp) / f"{order}{run}")
                written = generate(pipeline, layout)
                for item in written:  # trivial bodies, same headers
                    header = item.script.read_text().split("set -euo pipefail")[0]
                    item.script.write_text(header + "set -euo pipefail\ntrue\n")
                started = time.perf_counter()
                if order == "A":
                    runs = submit(pipeline, layout, chain=True)
                    wait_all([r.job_id for r in runs if r.job_id])
                    ours.append(time.perf_counter() - started)
                else:
                    by_stage = {w.stage.name: w.script for w in written}
                    first = SLURM.sbatch(by_stage["centroid"])
                    second = SLURM.sbatch(by_stage["centered_instance"])
                    third = SLURM.sbatch(by_stage["track"], after=[first, second])
                    wait_all([first, second, third])
                    hand.append(time.perf_counter() - started)
    o, h = statistics.median(ours), statistics.median(hand)
    print(f"== chained 3-stage run of trivial jobs, median of {repeat} each (ABBA) ==")
    print(
        f"sleap-rtc submit --chain: {o:.2f} s; by hand with sbatch: {h:.2f} s; ratio {o / h:.2f}x"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=int, default=250)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chain-repeat", type=int, default=4)
    parser.add_argument("--no-chain", action="store_true")
    args = parser.parse_args()
    bench_generate(args.datasets, args.repeat)
    if not args.no_chain:
        bench_chain(args.chain_repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
