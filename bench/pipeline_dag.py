"""A 100-dataset x 3-stage pipeline (300 jobs) on a real SLURM, throttled, followed to the end.

Needs a running SLURM (``scripts/slurm-dev-cluster.sh start``). Each dataset runs three
command stages, ``a -> b -> c``, each a trivial ``true``; the job file's throttle caps
sbatch calls per second and the jobs queued at once. Three ways, one after the other:

- **chain**: ``submit(chain=True)`` (SLURM dependencies; it waits for room under
  ``max_queued``), then followed with one state query per second until all ended;
- **poll**: the ``--chain=poll`` driver, which submits each stage when its parent
  completed and backs off while nothing changes;
- **by hand** (baseline): the same scripts submitted with plain ``sbatch
  --dependency=afterok`` in the same order and throttled the same way, followed the
  same way.

Printed for each: wall time to the last job's end, sbatch calls (``--test-only``
included), state queries (sacct) in all and per minute, and the ratio of its wall time
to the baseline's.

    .venv/bin/python bench/pipeline_dag.py                   # 100 datasets
    .venv/bin/python bench/pipeline_dag.py --datasets 20     # quicker
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from sleap_rtc.engine.backends.slurm.tools import FINAL_STATES, JobInfo, SlurmClient
from sleap_rtc.pipeline.driver import Driver
from sleap_rtc.pipeline.run import submit
from sleap_rtc.pipeline.sbatch import Layout
from sleap_rtc.pipeline.scripts import generate
from sleap_rtc.pipeline.spec import load_job
from sleap_rtc.pipeline.throttle import Throttle

STAGES = ("a", "b", "c")


class Counting(SlurmClient):
    """This machine's SLURM tools, counting the calls."""

    def __init__(self) -> None:
        self.sbatch_calls = 0
        self.queries = 0

    def sbatch(self, script: Path, **kw: Any) -> str:
        self.sbatch_calls += 1
        return super().sbatch(script, **kw)

    def test_only(self, script: Path, *, cwd: Path | None = None) -> str | None:
        self.sbatch_calls += 1
        return super().test_only(script, cwd=cwd)

    def job_details(
        self, job_ids: Sequence[str], *, arrays: Collection[str] = ()
    ) -> dict[str, JobInfo]:
        self.queries += 1
        return super().job_details(job_ids, arrays=arrays)


def make_project(root: Path, datasets: int, throttle: dict[str, Any]) -> Path:
    root.mkdir(parents=True)
    registry = {}
    for index in range(datasets):
        (root / f"d{index:03d}.txt").write_text(str(index))
        registry[f"d{index:03d}"] = {"labels": f"d{index:03d}.txt"}
    (root / "datasets.json").write_text(json.dumps(registry))
    stages: dict[str, Any] = {"a": {"command": "true"}}
    stages["b"] = {"command": "true", "needs": ["a"]}
    stages["c"] = {"command": "true", "needs": ["b"]}
    job = {
        "name": "bench",
        "datasets": "all",
        "slurm": {"time": "00:05:00", "mem": "50M", "cpus": 1},
        "throttle": throttle,
        "stages": stages,
    }
    path = root / "job.json"
    path.write_text(json.dumps(job))
    return path


def follow(slurm: Counting, ids: list[str], out: Path, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = slurm.job_states(ids)
        if len(states) == len(ids) and all(s in FINAL_STATES for s in states.values()):
            bad = {j: s for j, s in states.items() if s != "COMPLETED"}
            for job in bad:
                for log in out.rglob(f"*-{job}.out"):
                    print(f"--- {log}\n{log.read_text()[-2000:]}")
            assert not bad, bad
            return
        time.sleep(1)
    raise TimeoutError(f"not done after {timeout} s")


def run_chain(job: Path, out: Path) -> tuple[float, Counting]:
    slurm = Counting()
    started = time.monotonic()
    runs = submit(load_job(job), Layout.under(out), chain=True, slurm=slurm, poll_interval=1)
    follow(slurm, [r.job_id for r in runs if r.job_id], out)
    return time.monotonic() - started, slurm


def run_poll(job: Path, out: Path) -> tuple[float, Counting]:
    slurm = Counting()
    started = time.monotonic()
    driver = Driver(load_job(job), Layout.under(out), interval=1, slurm=slurm)
    driver.run()
    assert driver.succeeded(), [r for r in driver.results() if r.state != "COMPLETED"]
    return time.monotonic() - started, slurm


def run_by_hand(job: Path, out: Path) -> tuple[float, Counting]:
    pipeline = load_job(job)
    written = generate(pipeline, Layout.under(out))  # the same scripts, written beforehand
    slurm = Counting()
    throttle = Throttle(pipeline.throttle)
    started = time.monotonic()
    ids: dict[str, str] = {}
    queued: list[str] = []
    for item in written:
        cap = pipeline.throttle.max_queued
        while cap is not None and len(queued) >= cap:
            time.sleep(1)
            states = slurm.job_states(queued)
            queued = [j for j in queued if states.get(j) not in FINAL_STATES]
        throttle.wait_turn()
        after = [ids[p] for p in item.stage.parents]
        ids[item.stage.key] = slurm.sbatch(item.script, after=after, cwd=out)
        queued.append(ids[item.stage.key])
    follow(slurm, list(ids.values()), out)
    return time.monotonic() - started, slurm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=int, default=100)
    parser.add_argument("--max-submit-per-s", type=float, default=20)
    parser.add_argument("--max-queued", type=int, default=120)
    args = parser.parse_args()
    if shutil.which("sbatch") is None:
        print("skipped: no sbatch (scripts/slurm-dev-cluster.sh start)")
        return 0
    throttle = {"max_submit_per_s": args.max_submit_per_s, "max_queued": args.max_queued}
    results = {}
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        job = make_project(Path(tmp) / "project", args.datasets, throttle)
        for name, how in (("by hand", run_by_hand), ("chain", run_chain), ("poll", run_poll)):
            results[name] = how(job, Path(tmp) / name.replace(" ", "-"))
            wall, slurm = results[name]
            print(f"{name}: {wall:.1f} s", flush=True)
    jobs = args.datasets * len(STAGES)
    base = results["by hand"][0]
    print(
        f"== {args.datasets} datasets x {len(STAGES)} stages = {jobs} jobs, throttle "
        f"{args.max_submit_per_s:g}/s, at most {args.max_queued} queued =="
    )
    for name, (wall, slurm) in results.items():
        per_minute = slurm.queries / (wall / 60)
        print(
            f"{name:<8} {wall:7.1f} s to the last end ({wall / base:.2f}x by hand); "
            f"{slurm.sbatch_calls} sbatch calls, {slurm.queries} state queries "
            f"({per_minute:.1f}/min)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
