"""The warm engine: direct ``sleap-nn`` vs the same jobs through a running worker.

A worker's job runner (validation → engine → local backend with the warm engine →
job store, progress over ZMQ) is started once and left running, as a worker is; its
warm engine is ready before the clock starts. Then, alternating in ABAB order in
this process tree:

- **train**: ``sleap-nn train`` run directly on the demo ``single_instance`` config
  (the same overrides the job uses) vs a ``TrainSpec`` job, submit → COMPLETE;
- **track**: ``sleap-nn predict`` run directly on the demo labels with a model
  trained here beforehand vs a ``TrackSpec`` job, submit → COMPLETE.

With ``--cold`` the same jobs also run through a runner whose warm engine is off,
for the figure the warm engine improves on. With ``--remote`` they also run through a
room's worker: a real ``sleap-rtc server`` and ``sleap-rtc worker`` on loopback (as
``bench/remote_jobs.py`` starts them), submitted over WebRTC by
:class:`~sleap_rtc.client.jobs.WorkerSession` and waited for. ``OMP_NUM_THREADS=1``
everywhere.

    .venv/bin/python bench/warm_engine.py --pairs 3
    .venv/bin/python bench/warm_engine.py --pairs 3 --epochs 2 --cold --remote
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
from sleap_rtc.engine.commands import default_sleap_nn_command
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.jobs.states import JobState
from sleap_rtc.worker.config import MountConfig, WorkerConfig
from sleap_rtc.worker.runner import JobRunner


def run_direct(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def direct_train(config: Path, labels: Path, models: Path, name: str, epochs: int) -> float:
    return run_direct(train_argv(config, labels, models, name, epochs))


def direct_track(labels: Path, model: Path, output: Path) -> float:
    return run_direct(
        [
            *default_sleap_nn_command(),
            "predict",
            "--data_path",
            str(labels),
            "--model_paths",
            str(model),
            "--output_path",
            str(output),
            "--device",
            "cpu",
            "--gui",
        ]
    )


async def timed_job(runner: JobRunner, spec: TrainSpec | TrackSpec) -> tuple[float, list[str]]:
    started = time.perf_counter()
    record = runner.submit(spec)
    final = await runner.wait(record.id)
    elapsed = time.perf_counter() - started
    if final.state is not JobState.COMPLETE:
        raise SystemExit(f"{spec.kind} job failed: {final.reason}")
    return elapsed, final.outputs


async def make_runner(root: Path, name: str, warm: bool) -> JobRunner:
    worker = WorkerConfig(
        mounts=[MountConfig(path=str(root / "data"))],
        models_dir=root / "models",
        state_dir=root / f"state-{name}",
        device="cpu",
    )
    backend = LocalBackend(warm_engine=warm)
    runner = JobRunner(worker, backend)
    await runner.start()
    if backend.warm is not None:
        started = time.perf_counter()
        await backend.warm.ready()
        print(f"warm engine ready in {time.perf_counter() - started:.1f} s (not measured)")
    return runner


class RemoteWorker:
    """A room's worker in its own process, reached over WebRTC; runs jobs like a runner."""

    async def start(self, root: Path) -> RemoteWorker:
        import remote_jobs as rj  # beside this script

        from sleap_rtc.client.credentials import CredentialStore
        from sleap_rtc.client.jobs import WorkerSession
        from sleap_rtc.client.session import ServerClient
        from sleap_rtc.transport.webrtc import pin_host_addresses

        pin_host_addresses(["127.0.0.1"])
        os.environ["SLEAP_RTC_HOME"] = str(root / "home")
        self.procs = []
        server, url = rj.start_server(root)
        self.procs.append(server)
        self.client = ServerClient(url, store=CredentialStore(root / "home" / "credentials.json"))
        await self.client.login("bench", rj.PASSWORD)
        await self.client.create_room("warm")
        key = (await self.client.create_key("warm")).secret
        worker, worker_id = rj.start_worker(root, url, "warm", key, root / "data")
        self.procs.append(worker)
        started = time.perf_counter()
        while "warm engine ready" not in worker.log.read_text(errors="replace"):
            if time.perf_counter() - started > 300 or not worker.alive():
                raise SystemExit(f"the worker's warm engine did not start:\n{worker.log_tail()}")
            await asyncio.sleep(0.1)
        self.session = await WorkerSession.open(self.client, "warm", worker_id, transport="webrtc")
        return self

    async def run(self, spec: TrainSpec | TrackSpec) -> float:
        started = time.perf_counter()
        handle = await self.session.submit(spec)
        result = await handle.wait()
        elapsed = time.perf_counter() - started
        if result.type != "JOB_COMPLETE":
            raise SystemExit(f"remote {spec.kind} job failed: {result!r}")
        return elapsed

    async def close(self) -> None:
        await self.session.close()
        await self.client.aclose()
        for proc in reversed(self.procs):
            proc.stop()


async def bench(args: argparse.Namespace, root: Path) -> None:
    data = make_demo_data(root / "data")
    config = data.configs["single_instance"]
    runners = {"warm": await make_runner(root, "warm", True)}
    if args.cold:
        runners["cold"] = await make_runner(root, "cold", False)
    remote = await RemoteWorker().start(root) if args.remote else None
    names = [*runners, *(["remote"] if remote else [])]
    try:
        _, outputs = await timed_job(
            runners["warm"], TrainSpec(config_paths=[str(config)], max_epochs=1, run_name="m")
        )
        model = Path(outputs[0])
        times: dict[str, list[float]] = {}
        for kind in ("train", "track"):
            for name in ("direct", *names):
                times[f"{kind} {name}"] = []
        for i in range(args.pairs):
            times["train direct"].append(
                direct_train(config, data.labels_path, root / "direct", f"d{i}", args.epochs)
            )
            for name, runner in runners.items():
                spec = TrainSpec(config_paths=[str(config)], max_epochs=args.epochs)
                times[f"train {name}"].append((await timed_job(runner, spec))[0])
            if remote is not None:
                spec = TrainSpec(config_paths=[str(config)], max_epochs=args.epochs)
                times["train remote"].append(await remote.run(spec))
            times["track direct"].append(
                direct_track(data.labels_path, model, root / f"direct-{i}.slp")
            )
            for name, runner in runners.items():
                track = TrackSpec(
                    data_path=str(data.labels_path),
                    model_paths=[str(model)],
                    output_path=str(root / "data" / f"{name}-{i}.slp"),
                )
                times[f"track {name}"].append((await timed_job(runner, track))[0])
            if remote is not None:
                track = TrackSpec(
                    data_path=str(data.labels_path),
                    model_paths=[str(model)],
                    output_path=str(root / "data" / f"remote-{i}.slp"),
                )
                times["track remote"].append(await remote.run(track))
            print(
                f"pair {i + 1}: " + "   ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                flush=True,
            )
    finally:
        for runner in runners.values():
            await runner.close()
        if remote is not None:
            await remote.close()
    median = {k: statistics.median(v) for k, v in times.items()}
    for kind in ("train", "track"):
        base = median[f"{kind} direct"]
        parts = [f"{kind}: direct {base:.2f} s"]
        for name in names:
            value = median[f"{kind} {name}"]
            parts.append(f"{name} worker {value:.2f} s (ratio {value / base:.2f})")
        print("median " + ", ".join(parts))
    print(
        f"({args.pairs} pairs, single_instance for {args.epochs} epochs, "
        f"{len(data_frames(data.labels_path))} frames tracked, CPU, OMP_NUM_THREADS=1)"
    )


def data_frames(labels: Path) -> list[int]:
    import sleap_io as sio

    return [lf.frame_idx for lf in sio.load_slp(str(labels)).labeled_frames]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="also time a cold-start worker")
    parser.add_argument("--remote", action="store_true", help="also time a room's worker")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench(args, Path(tmp)))


if __name__ == "__main__":
    main()
