"""Bulk bytes through the server's relay lane, against a real server and worker.

The worker here listens for no direct lane (``--direct-listen off``), so its
clients pair a relay lane at ``/v1/lane``: downloads and uploads move as binary
frames through the server, within the per-user rate this server is started with;
a dropped relay lane is paired again and the transfer resumes. The socket itself
is tried as a hostile member would: a token used by another account, a token
nobody waits for, a worker key naming a worker it isn't, text on a paired lane.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from sleap_rtc.client import ServerClient
from sleap_rtc.client.errors import WorkerError
from sleap_rtc.client.jobs import WorkerSession
from sleap_rtc.client.lanes import relay_dialer
from sleap_rtc.jobs.digest import sha256_of
from sleap_rtc.protocol.relaylane import ClientLaneHello, WorkerLaneHello
from sleap_rtc.transport.lane import LaneClosed
from sleap_rtc.transport.relaylane import dial_relay_lane
from tests.servers import LaneDropper, Room, ok, open_room, register_raw, ws_url

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("loopback_candidates")]

SIZE = 6 * 1024 * 1024 + 4321
#: The per-user rate this module's server allows relay lanes, in MiB/s.
RATE = 2


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    data = tmp_path_factory.mktemp("relay-data")
    (data / "big.bin").write_bytes(os.urandom(SIZE))
    with open_room(
        tmp_path_factory.mktemp("relay"),
        data,
        worker_args=("--direct-listen", "off"),
        server_args=("--lane-rate-per-user", str(RATE)),
    ) as opened:
        yield opened


async def test_files_move_through_the_relay_lane_within_the_users_rate(
    room: Room, alice: ServerClient, tmp_path: Path
) -> None:
    async with await WorkerSession.open(alice, "lab", room.worker_id) as session:
        started = time.monotonic()
        local = await session.download(str(room.data / "big.bin"), tmp_path)
        took = time.monotonic() - started
        lane = session.lanes.live()
        assert lane is not None and lane.via == "relay" and session.lanes.opened == 1
        assert sha256_of(local) == sha256_of(room.data / "big.bin")
        # The first second's worth passes at once, the rest at the rate.
        assert took >= (SIZE / 2**20 - RATE) / RATE * 0.8

        done = await session.upload(local)
        assert sha256_of(Path(done.path)) == sha256_of(local)
        assert session.lanes.opened == 1  # the same relay lane carried both


async def test_a_dropped_relay_lane_is_paired_again_and_the_download_resumes(
    room: Room, alice: ServerClient, tmp_path: Path
) -> None:
    async with await WorkerSession.open(alice, "lab", room.worker_id) as session:
        drop_once = LaneDropper(session)
        local = await session.download(str(room.data / "big.bin"), tmp_path, on_progress=drop_once)
        assert drop_once.dropped and session.lanes.opened == 2
        assert sha256_of(local) == sha256_of(room.data / "big.bin")
        live = session.lanes.live()
        assert live is not None and live.via == "relay"


async def test_a_relay_token_pairs_only_its_own_account_once(
    room: Room, alice: ServerClient
) -> None:
    bob = room.client("bob")
    async with await WorkerSession.open(alice, "lab", room.worker_id) as session, bob:
        offer = await session._lane_offer("relay")
        with pytest.raises(LaneClosed, match="another account"):
            await relay_dialer(bob)(offer.token)
        # Refused to bob, the waiting half is gone: alice can't pair with it either.
        with pytest.raises(LaneClosed, match="no relay lane waits"):
            await relay_dialer(alice)(offer.token)
        with pytest.raises(LaneClosed, match="no relay lane waits"):
            await relay_dialer(alice)("ab" * 32)


async def test_one_channel_keeps_few_relay_halves_waiting(room: Room, alice: ServerClient) -> None:
    async with await WorkerSession.open(alice, "lab", room.worker_id) as session:
        await session._lane_offer("relay")
        await session._lane_offer("relay")
        with pytest.raises(WorkerError, match="at most 2 relay lanes wait"):
            await session._lane_offer("relay")


async def test_a_worker_key_waits_only_as_its_own_worker(room: Room, alice: ServerClient) -> None:
    other_key = room.users.json("alice", "keys", "create", "--room", "lab")["secret"]
    hello = WorkerLaneHello(worker_id=room.worker_id, user_id="1", digest="cd" * 32)
    with pytest.raises(LaneClosed, match="not online with this key"):
        await dial_relay_lane(ws_url(room.server, "/v1/lane"), other_key, hello)
    with pytest.raises(LaneClosed, match="the server refused the relay lane"):
        await dial_relay_lane(ws_url(room.server, "/v1/lane"), "not-a-key", hello)


async def test_text_on_a_paired_lane_ends_it_and_the_next_transfer_pairs_anew(
    room: Room, alice: ServerClient, tmp_path: Path
) -> None:
    async with await WorkerSession.open(alice, "lab", room.worker_id) as session:
        offer = await session._lane_offer("relay")
        lane = await dial_relay_lane(
            ws_url(room.server, "/v1/lane"),
            await alice.access_token(),
            ClientLaneHello(token=offer.token),
        )
        await lane._ws.send("not a frame")
        with pytest.raises(LaneClosed, match="binary frames only"):
            await asyncio.wait_for(lane.recv(), 10)
        # The session's own lane is unaffected: a transfer pairs one and verifies.
        local = await session.download(str(room.data / "big.bin"), tmp_path)
        assert sha256_of(local) == sha256_of(room.data / "big.bin")


async def test_a_pair_ends_when_its_worker_is_no_longer_online(
    room: Room, alice: ServerClient
) -> None:
    """A simulated worker (its own key) pairs a lane, then its key is revoked: the server
    ends the pair although the worker's half is still open."""
    created = room.users.json("alice", "keys", "create", "--room", "lab", "--name", "sim")
    registered_ws, registered = await register_raw(room.server, created["secret"], "sim-worker")
    assert registered["type"] == "registered"
    access = await alice.access_token()
    user_id = str(jwt.decode(access, options={"verify_signature": False})["sub"])
    token = os.urandom(32)
    hello = WorkerLaneHello(
        worker_id="sim-worker", user_id=user_id, digest=hashlib.sha256(token).hexdigest()
    )
    half = await dial_relay_lane(ws_url(room.server, "/v1/lane"), created["secret"], hello)
    lane = await relay_dialer(alice)(token.hex())
    await half.paired()
    await lane.send("t1", 0, b"while the worker is online")
    assert await asyncio.wait_for(half.recv(), 10) == ("t1", 0, b"while the worker is online")

    ok(room.users.run("alice", "keys", "revoke", "--room", "lab", created["id"]))
    await lane.send("t1", 26, b"after its key was revoked")
    with pytest.raises(LaneClosed, match="no longer online"):
        await asyncio.wait_for(lane.recv(), 10)
    await registered_ws.close()
