"""File transfers to and from a real worker, by each path, against a plain TCP copy.

A ``sleap-rtc server`` and a ``sleap-rtc worker`` run as subprocesses on loopback
(started as in ``remote_jobs.py``); this process is the client. For each path a
``--mib`` MiB file of random bytes is downloaded from the worker's mount and then
uploaded back, ``--repeat`` times:

* ``direct``: the worker's direct TLS lane (binary frames), control over WebRTC;
* ``relay-lane``: binary frames through the server's relay lane (``/v1/lane``), as
  for a client that can't reach the worker, control over WebRTC;
* ``webrtc-lane``: binary frames on a second WebRTC data channel (the last lane);
* ``webrtc``: base64 chunks on the WebRTC data channel (no lane);
* ``relay``: base64 chunks through the server's relayed channel (no lane).

During every transfer a PING goes over the same session every 100 ms (one at a
time); its round trips give the control latency while bytes move (p50 / max).
Baseline, in this same run: the same file copied over a plain TCP connection on
loopback (``socket.sendfile`` in a thread, received and written to disk here), no
encryption, no hashing. Each path's MiB/s is printed with its ratio to it.

    .venv/bin/python bench/transfers.py                 # 200 MiB, each path once
    .venv/bin/python bench/transfers.py --mib 50 --repeat 3 --paths direct,relay
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from remote_jobs import bench_room

from sleap_rtc.client.jobs import WorkerSession
from sleap_rtc.client.lanes import LaneKind
from sleap_rtc.client.session import ServerClient
from sleap_rtc.transport.webrtc import pin_host_addresses

PATHS = ("direct", "relay-lane", "webrtc-lane", "webrtc", "relay")
#: The lane each path takes (none: bytes go in the channel).
LANES: dict[str, tuple[LaneKind, ...]] = {
    "direct": ("direct",),
    "relay-lane": ("relay",),
    "webrtc-lane": ("webrtc",),
}
PING_EVERY_S = 0.1


@dataclass
class Run:
    path: str
    direction: str
    mib_s: float
    pings_ms: list[float] = field(default_factory=list)


def make_file(path: Path, mib: int) -> None:
    with path.open("wb") as out:
        for _ in range(mib):
            out.write(os.urandom(1 << 20))


def tcp_copy(source: Path, dest: Path) -> float:
    """MiB/s of ``source`` sent over loopback TCP by a thread and written to ``dest``."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, source.open("rb") as handle:
            conn.sendfile(handle)

    sender = threading.Thread(target=serve)
    sender.start()
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as conn, dest.open("wb") as out:
        while count := conn.recv_into(buffer):
            out.write(view[:count])
    elapsed = time.perf_counter() - started
    sender.join()
    listener.close()
    return source.stat().st_size / elapsed / (1 << 20)


async def pinging(session: WorkerSession, into: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await session.ping()
        into.append((time.perf_counter() - started) * 1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PING_EVERY_S)


async def timed(session: WorkerSession, run: Run, transfer: object) -> None:
    stop = asyncio.Event()
    pinger = asyncio.create_task(pinging(session, run.pings_ms, stop))
    started = time.perf_counter()
    try:
        size = await transfer  # type: ignore[misc]
    finally:
        elapsed = time.perf_counter() - started
        stop.set()
        await pinger
    run.mib_s = size / elapsed / (1 << 20)


async def one_path(
    client: ServerClient, room: str, worker_id: str, path: str, source: Path, work: Path
) -> list[Run]:
    session = await WorkerSession.open(
        client,
        room,
        worker_id,
        transport="relay" if path == "relay" else "webrtc",
        lane_kinds=LANES.get(path, ()),
    )
    try:
        if path in LANES and await session.lanes.get() is None:
            raise SystemExit(f"no {path}: {session.lanes.problem}")
        down = Run(path, "download", 0.0)
        dest = work / uuid.uuid4().hex

        async def download() -> int:
            local = await session.download(str(source), dest)
            return local.stat().st_size

        await timed(session, down, download())
        local = dest / source.name
        if local.stat().st_size != source.stat().st_size:
            raise SystemExit("the download arrived short")
        up = Run(path, "upload", 0.0)

        async def upload() -> int:
            await session.upload(local)
            return local.stat().st_size

        await timed(session, up, upload())
        local.unlink()
        if path in LANES and session.lanes.opened != 1:
            raise SystemExit(f"the lane was opened {session.lanes.opened} times, expected once")
        return [down, up]
    finally:
        await session.close()


async def bench(args: argparse.Namespace, root: Path) -> None:
    pin_host_addresses(["127.0.0.1"])
    os.environ["SLEAP_RTC_HOME"] = str(root / "home")
    mount = root / "data"
    mount.mkdir()
    source = mount / "bulk.bin"
    make_file(source, args.mib)
    async with bench_room(root, mount) as opened:
        client, room, worker_id = opened.client, opened.room, opened.worker_id
        print(f"worker {worker_id} online; {args.mib} MiB each way", flush=True)
        tcp: list[float] = []
        runs: list[Run] = []
        work = root / "client"
        work.mkdir()
        for i in range(args.repeat):
            tcp.append(await asyncio.to_thread(tcp_copy, source, work / "tcp.bin"))
            (work / "tcp.bin").unlink()
            print(f"  round {i + 1}: plain TCP {tcp[-1]:.0f} MiB/s", flush=True)
            for path in args.paths:
                done = await one_path(client, room, worker_id, path, source, work)
                for run in done:
                    print(
                        f"  round {i + 1}: {path} {run.direction} {run.mib_s:.1f} MiB/s, "
                        f"ping p50 {statistics.median(run.pings_ms):.1f} ms "
                        f"max {max(run.pings_ms):.1f} ms ({len(run.pings_ms)} pings)",
                        flush=True,
                    )
                runs += done
        report(tcp, runs, args)
        for proc in opened.procs:
            if problems := proc.problems():
                print(f"{proc.name} logged problems:\n  " + "\n  ".join(problems[:10]))


def report(tcp: list[float], runs: list[Run], args: argparse.Namespace) -> None:
    baseline = statistics.median(tcp)
    print(f"\n{args.mib} MiB each way, {args.repeat} round(s); baseline plain TCP copy on")
    print(f"loopback: {baseline:.0f} MiB/s (median)\n")
    header = f"{'path':<11} {'direction':<9} {'MiB/s':>8} {'÷ TCP':>7} {'ping p50':>9} {'max':>8}"
    print(header)
    print("-" * len(header))
    for path in args.paths:
        for direction in ("download", "upload"):
            mine = [r for r in runs if r.path == path and r.direction == direction]
            speed = statistics.median(r.mib_s for r in mine)
            pings = [ms for r in mine for ms in r.pings_ms]
            print(
                f"{path:<11} {direction:<9} {speed:8.1f} {speed / baseline:7.3f} "
                f"{statistics.median(pings):7.1f}ms {max(pings):6.1f}ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=200, help="file size in MiB (default 200)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every path")
    parser.add_argument(
        "--paths",
        type=lambda s: [p for p in s.split(",") if p],
        default=list(PATHS),
        help=f"comma-separated, of {','.join(PATHS)} (default: all)",
    )
    args = parser.parse_args()
    unknown = [p for p in args.paths if p not in PATHS]
    if unknown:
        parser.error(f"unknown path(s) {unknown}; choose from {', '.join(PATHS)}")
    with tempfile.TemporaryDirectory(prefix="bench-transfers-") as root:
        asyncio.run(bench(args, Path(root)))


if __name__ == "__main__":
    main()
