"""Replies are matched by request id over a real channel: an error never answers the wrong call.

An attach of a job the worker doesn't have must fail at once with ``NO_SUCH_JOB``,
and the status asked next (or at the same time) must get that job's own reply.
"""

from __future__ import annotations

import asyncio

import pytest

from sleap_rtc.client import JobRejectedError, WorkerError, WorkerSession
from sleap_rtc.jobs.specs import TrainSpec
from tests.security.conftest import Layout, RawPeer
from tests.servers import Room


async def test_attach_to_an_unknown_job_then_status_of_a_real_one(
    hostile_room: Room, layout: Layout
) -> None:
    async with (
        hostile_room.client("alice") as alice,
        await WorkerSession.open(alice, "lab", hostile_room.worker_id, transport="relay") as s,
    ):
        # A real job that costs nothing: rejected, but recorded under its id.
        with pytest.raises(JobRejectedError) as rejected:
            await s.submit(TrainSpec(config_paths=[str(layout.data / "missing.yaml")]))
        job_id = rejected.value.job_id
        assert job_id is not None

        async with asyncio.timeout(15):  # far below the idle timeout a lost reply would wait
            with pytest.raises(WorkerError) as missing:
                await s.attach("no-such-job")
            status = await s.status(job_id)
        assert missing.value.code == "NO_SUCH_JOB"
        assert status.job_id == job_id and status.state == "REJECTED"

        # At the same time, each call gets its own answer.
        async with asyncio.timeout(15):
            attached, again = await asyncio.gather(
                s.attach("also-missing"), s.status(job_id), return_exceptions=True
            )
        assert isinstance(attached, WorkerError) and attached.code == "NO_SUCH_JOB"
        assert not isinstance(again, BaseException) and again.job_id == job_id


async def test_the_worker_echoes_request_ids_on_the_wire(peer: RawPeer) -> None:
    attach = await peer.request(
        {"type": "JOB_ATTACH", "request_id": "a-1", "job_id": "no-such-job"},
        lambda m: m.get("request_id") == "a-1",
    )
    assert (attach["type"], attach["code"]) == ("ERROR", "NO_SUCH_JOB")
    for kind, reply in (("JOB_LIST", "JOB_LIST_REPLY"), ("PING", "PONG")):
        answer = await peer.request(
            {"type": kind, "request_id": f"{kind}-1"},
            lambda m, kind=kind: m.get("request_id") == f"{kind}-1",
        )
        assert answer["type"] == reply
    # A request the worker cannot read still gets its id back, when it has a valid one.
    bad = await peer.request(
        {"type": "JOB_STATUS", "request_id": "s-1", "job_id": "../etc"},
        lambda m: m.get("request_id") == "s-1",
    )
    assert (bad["type"], bad["code"]) == ("ERROR", "INVALID_MESSAGE")
