"""Bounded everything: alias bombs, oversized replies, offer floods, tickets used twice."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import yaml

from tests.security.conftest import Layout, RawPeer
from tests.servers import Room

pytestmark = pytest.mark.slow

ALIAS_BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
data_config: {train_labels_path: *h}
model_config: {backbone_config: {unet: {}}, head_configs: {single_instance: {}}}
trainer_config: {}
"""


async def test_alias_bomb_is_refused_at_once_and_the_worker_keeps_answering(
    peer: RawPeer, layout: Layout
) -> None:
    bomb = layout.data / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    started = time.monotonic()
    await peer.send(
        {
            "type": "JOB_SUBMIT",
            "request_id": "bomb",
            "spec": {"kind": "train", "config_paths": [str(bomb)]},
        }
    )
    # The worker answers a ping while (or right after) it looks at the bomb.
    await peer.send({"type": "PING", "nonce": "p"})
    seen: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(10):
        while len(seen) < 2:
            message = await peer.recv()
            if message["type"] in ("PONG", "JOB_REJECTED", "JOB_ACCEPTED", "ERROR"):
                seen[message["type"]] = message
    reply = seen.get("JOB_REJECTED") or seen
    assert time.monotonic() - started < 5
    assert reply["type"] == "JOB_REJECTED"
    [problem] = reply["errors"]
    assert problem["code"] == "CONFIG_INVALID" and "aliases" in problem["message"]
    assert len(json.dumps(reply)) < 2000


async def test_a_rejection_too_long_for_one_message_says_how_many_more(
    peer: RawPeer, layout: Layout
) -> None:
    long_dir = layout.data / ("d" * 200)
    long_dir.mkdir(exist_ok=True)
    config: dict[str, Any] = {
        "data_config": {
            "train_labels_path": [str(long_dir / f"{i:03d}-{'x' * 150}.slp") for i in range(150)]
        },
        "model_config": {},
        "trainer_config": {},
    }
    many = layout.data / "many.yaml"
    many.write_text(yaml.safe_dump(config))
    reply = await peer.request(
        {
            "type": "JOB_SUBMIT",
            "request_id": "many",
            "spec": {"kind": "train", "config_paths": [str(many)]},
        },
        lambda m: m.get("request_id") == "many",
    )
    assert reply["type"] == "JOB_REJECTED"
    shown = [e for e in reply["errors"] if e["code"] == "PATH_NOT_FOUND"]
    [more] = [e for e in reply["errors"] if e["code"] == "MORE_PROBLEMS"]
    left = int(more["message"].split()[1])
    assert 0 < len(shown) < 150 and len(shown) + left == 150
    # 25 more such rejections later, the job list still pages through all of them.
    for index in range(25):
        spec = {"kind": "train", "config_paths": [str(many)]}
        await peer.request(
            {"type": "JOB_SUBMIT", "request_id": f"m{index}", "spec": spec},
            lambda m, i=index: m.get("request_id") == f"m{i}",
        )
    jobs: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = await peer.request(
            {"type": "JOB_LIST", "limit": 200, "offset": offset},
            lambda m: m["type"] in ("JOB_LIST_REPLY", "ERROR"),
        )
        assert page["type"] == "JOB_LIST_REPLY", page
        jobs += page["jobs"]
        offset = page["next_offset"]
    assert sum(1 for j in jobs if j["state"] == "REJECTED") >= 26


async def test_webrtc_offers_are_capped_per_session(hostile_room: Room) -> None:
    from sleap_rtc.transport.envelope import Open
    from sleap_rtc.transport.relay import ServerSocket
    from sleap_rtc.transport.webrtc import make_offer

    replies: dict[str, dict[str, Any]] = {}
    pcs = []
    async with hostile_room.client("bob") as server:
        socket = ServerSocket(server.websocket_url("/v1/client"), await server.access_token())
        await socket.connect()
        try:
            for index in range(4):
                ch = f"offer{index}"

                def got(_sender: Any, payload: dict[str, Any], ch: str = ch) -> None:
                    replies[ch] = payload

                socket.subscribe(ch, got, lambda _c, _m: None)
                pc, _dc, sdp = await make_offer([])
                pcs.append(pc)
                await socket.relay(
                    "lab",
                    hostile_room.worker_id,
                    Open(ch=ch, transport="webrtc", sdp=sdp).model_dump(),
                )
            async with asyncio.timeout(30):
                while len(replies) < 4:
                    await asyncio.sleep(0.05)
        finally:
            for pc in pcs:
                await pc.close()
            await socket.close()
    ops = [replies[f"offer{i}"]["op"] for i in range(4)]
    assert ops == ["answer", "answer", "close", "close"], replies
    assert "too many WebRTC offers" in replies["offer3"]["reason"]
