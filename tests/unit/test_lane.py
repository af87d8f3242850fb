"""The direct lane's handshake against hostile peers, over real TLS on loopback."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from sleap_rtc.protocol.transfer import FRAME, LANE_HELLO, LANE_MAGIC
from sleap_rtc.transport.lane import Lane, LaneClosed, LaneServer, connect_lane


async def _server() -> tuple[LaneServer, list[Lane], str]:
    server = await LaneServer("127.0.0.1:0").start()
    lanes: list[Lane] = []
    return server, lanes, server.issue(lanes.append)


async def test_a_lane_carries_frames_both_ways() -> None:
    server, lanes, token = await _server()
    try:
        client = await connect_lane(server.addresses, server.fingerprint, token)
        await client.send("t1", 5, b"hello")
        assert lanes and await lanes[0].recv() == ("t1", 5, b"hello")
        await lanes[0].send("t1", 0, b"back")
        assert await client.recv() == ("t1", 0, b"back")
        await client.close()
    finally:
        await server.close()


async def test_a_wrong_fingerprint_never_hears_the_token() -> None:
    server, lanes, token = await _server()
    try:
        with pytest.raises(LaneClosed, match="not the worker's"):
            await connect_lane(server.addresses, "0" * 64, token)
        await asyncio.sleep(0.1)
        assert lanes == []
    finally:
        await server.close()


async def test_a_wrong_or_revoked_token_is_closed_and_the_server_serves_on() -> None:
    server, lanes, token = await _server()
    try:
        with pytest.raises(LaneClosed):
            await connect_lane(server.addresses, server.fingerprint, "ab" * 32)
        server.revoke(token)
        with pytest.raises(LaneClosed):
            await connect_lane(server.addresses, server.fingerprint, token)
        fresh = server.issue(lanes.append)
        lane = await connect_lane(server.addresses, server.fingerprint, fresh)
        assert len(lanes) == 1
        await lane.close()
    finally:
        await server.close()


async def test_an_oversize_or_nameless_frame_closes_the_lane() -> None:
    server, lanes, token = await _server()
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        host, port = server.addresses[0].rsplit(":", 1)
        for header in (FRAME.pack(2, 0, 1 << 30) + b"t1", FRAME.pack(0, 0, 1)):
            reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
            writer.write(LANE_HELLO.pack(LANE_MAGIC, bytes.fromhex(token)))
            assert await reader.readexactly(1) == b"\x01"
            writer.write(header)
            await writer.drain()
            with pytest.raises(LaneClosed, match="broke the lane"):
                await asyncio.wait_for(lanes[-1].recv(), 5)
            writer.close()
    finally:
        await server.close()
