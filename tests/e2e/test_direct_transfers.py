"""Bulk bytes over the direct lane, against a real server and worker on loopback.

Downloads and uploads take the worker's TLS lane (binary frames, beside the
channel); a lane dropped mid-way is reopened and the transfer resumes from the
bytes already received, still checked against its SHA-256; a session told not to
use the lane, or a worker that offers none, moves the same bytes over the channel.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sleap_rtc.client import ServerClient
from sleap_rtc.client.jobs import WorkerSession
from sleap_rtc.jobs.digest import sha256_of
from tests.servers import LaneDropper, Room, open_room

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("loopback_candidates")]

SIZE = 24 * 1024 * 1024 + 12345


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    data = tmp_path_factory.mktemp("lane-data")
    (data / "big.bin").write_bytes(os.urandom(SIZE))
    run = data / "run"
    (run / "logs").mkdir(parents=True)
    (run / "empty.txt").write_bytes(b"")
    (run / "best.ckpt").write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    (run / "logs" / "train.log").write_bytes(b"epoch 1\n" * 1000)
    with open_room(tmp_path_factory.mktemp("lanes"), data) as opened:
        yield opened


async def test_download_and_upload_take_the_direct_lane(
    room: Room, alice: ServerClient, tmp_path: Path
) -> None:
    async with await WorkerSession.open(alice, "lab", room.worker_id) as session:
        seen: list[int] = []
        local = await session.download(
            str(room.data / "big.bin"), tmp_path, on_progress=lambda d, t: seen.append(d)
        )
        assert session.lanes.live() is not None and session.lanes.problem is None
        assert session.lanes.opened == 1
        assert sha256_of(local) == sha256_of(room.data / "big.bin")
        assert seen[-1] == SIZE and seen == sorted(seen)

        folder = await session.download(str(room.data / "run"), tmp_path / "out")
        for name in ("empty.txt", "best.ckpt", "logs/train.log"):
            assert sha256_of(folder / name) == sha256_of(room.data / "run" / name)

        done = await session.upload(local)
        assert sha256_of(Path(done.path)) == sha256_of(local)
        assert session.lanes.opened == 1  # one lane served all three


async def test_a_lane_dropped_mid_transfer_is_reopened_and_resumes(
    room: Room, alice: ServerClient, tmp_path: Path
) -> None:
    async with await WorkerSession.open(alice, "lab", room.worker_id) as session:
        drop_once = LaneDropper(session)
        local = await session.download(str(room.data / "big.bin"), tmp_path, on_progress=drop_once)
        assert drop_once.dropped and session.lanes.opened == 2
        assert sha256_of(local) == sha256_of(room.data / "big.bin")
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left

        done = await session.upload(local, on_progress=drop_once.again())
        assert drop_once.dropped and session.lanes.opened == 3
        assert sha256_of(Path(done.path)) == sha256_of(local)


async def test_without_the_lane_the_same_bytes_go_over_the_channel(
    room: Room, alice: ServerClient, tmp_path: Path
) -> None:
    async with await WorkerSession.open(
        alice, "lab", room.worker_id, transport="relay", lane_kinds=()
    ) as session:
        folder = await session.download(str(room.data / "run"), tmp_path)
        assert session.lanes.live() is None and session.lanes.opened == 0
        assert sha256_of(folder / "best.ckpt") == sha256_of(room.data / "run" / "best.ckpt")
        done = await session.upload(folder / "best.ckpt")
        assert sha256_of(Path(done.path)) == sha256_of(folder / "best.ckpt")


def test_fs_put_and_get_on_the_command_line(room: Room, tmp_path: Path) -> None:
    (room.data / "incoming").mkdir(exist_ok=True)
    local = tmp_path / "labels.v003.slp"
    local.write_bytes(os.urandom(2 * 1024 * 1024 + 3))
    put = room.users.run("alice", "fs", "put", "--room", "lab", str(local), "data/incoming")
    assert put.returncode == 0, put.stderr
    assert "direct lane" in put.stdout
    landed = room.data / "incoming" / local.name
    assert sha256_of(landed) == sha256_of(local)

    again = room.users.run("alice", "fs", "put", "--room", "lab", str(local), "data/incoming")
    assert again.returncode != 0 and "exists already" in again.stderr
    assert sha256_of(landed) == sha256_of(local)

    back = tmp_path / "back"
    got = room.users.run(
        "alice", "fs", "get", "--room", "lab", f"data/incoming/{local.name}", str(back), "--json"
    )
    assert got.returncode == 0, got.stderr
    info = json.loads(got.stdout)
    assert info["via"] == "direct lane" and info["bytes"] == local.stat().st_size
    assert sha256_of(Path(info["local"])) == sha256_of(local)
    twice = room.users.run(
        "alice", "fs", "get", "--room", "lab", f"data/incoming/{local.name}", str(back)
    )
    assert twice.returncode != 0 and "exists already" in twice.stderr
    assert sha256_of(Path(info["local"])) == sha256_of(local)


async def test_a_webrtc_bulk_channel_carries_frames_and_resumes_after_a_drop(
    room: Room, alice: ServerClient, tmp_path: Path
) -> None:
    async with await WorkerSession.open(
        alice, "lab", room.worker_id, transport="webrtc", lane_kinds=("webrtc",)
    ) as session:
        folder = await session.download(str(room.data / "run"), tmp_path)
        lane = session.lanes.live()
        assert lane is not None and lane.via == "webrtc" and session.lanes.opened == 1
        assert sha256_of(folder / "best.ckpt") == sha256_of(room.data / "run" / "best.ckpt")

        drop_once = LaneDropper(session)
        done = await session.upload(folder / "best.ckpt", on_progress=drop_once)
        assert drop_once.dropped and session.lanes.opened == 2
        assert sha256_of(Path(done.path)) == sha256_of(folder / "best.ckpt")
        await session.ping()  # the control channel lived through it
