"""The direct lane's handshake against hostile peers, over real TLS on loopback."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

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


async def test_a_lane_download_stays_open_until_the_client_holds_every_byte(
    tmp_path: Path,
) -> None:
    """Frames in flight when a lane drops are lost even though the worker sent them:
    the download must wait for the client's "all arrived" and take a resume until then."""
    from sleap_rtc.jobs.mounts import Mount, Mounts
    from sleap_rtc.protocol import jobs as p
    from sleap_rtc.worker.downloads import Downloads

    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "big.bin").write_bytes(data)
    sent: list[p._Msg] = []

    async def send(message: p._Msg) -> None:
        sent.append(message)

    server, lanes, token = await _server()
    client = await connect_lane(server.addresses, server.fingerprint, token)
    downloads = Downloads(
        Mounts([Mount.create(tmp_path, "data")]), send, lane=lambda: lanes[0], ack_timeout_s=10
    )
    try:
        await downloads.start(p.Download(request_id="r1", path=str(tmp_path / "big.bin")))
        while not sent:
            await asyncio.sleep(0.01)
        begin = sent[0]
        assert isinstance(begin, p.DownloadBegin)
        downloads.ack(p.DownloadAck(transfer_id=begin.transfer_id, received=0))  # ready
        got = 0
        while got < len(data):  # every frame arrives; pretend the last ones were lost
            _key, offset, block = await asyncio.wait_for(client.recv(), 10)
            got = offset + len(block)
        await asyncio.sleep(0.2)
        assert not any(isinstance(m, p.DownloadEnd) for m in sent)  # still open
        held = len(data) // 2
        assert downloads.resume(
            p.TransferResume(transfer_id=begin.transfer_id, offset=held, lane=True)
        )
        again = bytearray()
        while held + len(again) < len(data):
            _key, offset, block = await asyncio.wait_for(client.recv(), 10)
            assert offset == held + len(again)
            again += block
        assert bytes(again) == data[held:]
        downloads.ack(p.DownloadAck(transfer_id=begin.transfer_id, received=len(data)))
        for _ in range(100):
            if any(isinstance(m, p.DownloadEnd) for m in sent):
                break
            await asyncio.sleep(0.02)
        assert isinstance(sent[-1], p.DownloadEnd) and len(downloads) == 0
    finally:
        await downloads.close()
        await client.close()
        await server.close()
