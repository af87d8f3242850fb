"""The dashboard's API against a real server process: live events that resume without
gaps, Stop/Cancel carried to the worker, and the session cookie's rules.

The worker here is simulated (it speaks the worker protocol over a real WebSocket),
so each test controls exactly what the server is told and when.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.servers import (
    PASSWORD,
    ServerFactory,
    ServerProcess,
    client_for,
    recv,
    register_raw,
)

# SQLite only: what these tests check lives above the database (the index's storage
# is tested on PostgreSQL too, in tests/unit/test_job_index.py).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

JOB = "job0123456789abc"


def report(job_id: str, state: str, updated: float, **extra: Any) -> str:
    job = {
        "job_id": job_id,
        "kind": "train",
        "owner": "alice",
        "state": state,
        "created_at": 1_700_000_000.0,
        "updated_at": updated,
        "args": ["--config", "/data/lab/a b.yaml", "--max-epochs", "50"],
    }
    body = {"type": "job_report", "v": 1, "job": job, **extra}
    return json.dumps(body)


def points(first: int, last: int) -> list[dict[str, Any]]:
    return [
        {"model": 1, "epoch": e, "loss": 1.0 / e, "val_loss": 1.2 / e, "at": 1_700_000_000.0 + e}
        for e in range(first, last + 1)
    ]


async def ping(ws: ClientConnection) -> None:
    """Wait until the server has handled everything sent before (its pong comes after)."""
    await ws.send(json.dumps({"type": "ping", "v": 1, "nonce": "sync"}))
    while (await recv(ws))["type"] != "pong":
        pass


async def web_login(http: httpx.AsyncClient, user: str) -> str:
    answer = await http.post("/v1/auth/web/login", json={"username": user, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["csrf_token"])


class Events:
    """One SSE stream, read in the background: (id, event, data) as they come."""

    def __init__(self, http: httpx.AsyncClient, path: str, headers: dict[str, str]) -> None:
        self.got: list[tuple[str, str, Any]] = []
        self.status = 0
        self._task = asyncio.create_task(self._read(http, path, headers))
        self.opened = asyncio.Event()

    async def _read(self, http: httpx.AsyncClient, path: str, headers: dict[str, str]) -> None:
        async with http.stream("GET", path, headers=headers, timeout=None) as answer:
            self.status = answer.status_code
            self.opened.set()
            event_id, name, data = "", "message", ""
            async for line in answer.aiter_lines():
                if line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif line == "":
                    if data:
                        self.got.append((event_id, name, json.loads(data)))
                    event_id, name, data = "", "message", ""

    async def until(self, check: Any, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not check(self.got):
            if self._task.done():
                raise AssertionError(f"the stream ended; got {self.got}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; got {self.got}")
            await asyncio.sleep(0.05)

    def epochs(self) -> list[int]:
        return [
            p["epoch"] for _, name, data in self.got if name == "points" for p in data["points"]
        ]

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await self._task

    @property
    def ended(self) -> bool:
        return self._task.done()


@pytest.fixture
async def lab(
    server_factory: ServerFactory, tmp_path: Path
) -> AsyncIterator[tuple[ServerProcess, ClientConnection, str]]:
    """A server, room ``lab`` (alice owns it, bob is a member, carol is not), and a
    simulated worker registered in it: (server, worker socket, worker id)."""
    server = server_factory()
    alice = await client_for(server, tmp_path, "alice")
    bob = await client_for(server, tmp_path, "bob")
    await client_for(server, tmp_path, "carol")
    await alice.create_room("lab")
    await bob.join((await alice.invite("lab")).code)
    key = (await alice.create_key("lab", "sim")).secret
    ws, registered = await register_raw(server, key, "w-sim", "sim-gpu")
    assert registered["type"] == "registered"
    try:
        yield server, ws, "w-sim"
    finally:
        await ws.close()


async def test_a_job_stream_resumes_from_last_event_id_without_gaps(
    lab: tuple[ServerProcess, ClientConnection, str],
) -> None:
    server, worker, _ = lab
    async with httpx.AsyncClient(base_url=server.url) as http:
        await web_login(http, "alice")
        await worker.send(report(JOB, "RUNNING", 10.0, points=points(1, 3)))
        await ping(worker)

        snapshot = await http.get(f"/v1/rooms/lab/jobs/{JOB[:6]}")
        assert snapshot.status_code == 200
        assert [p["epoch"] for p in snapshot.json()["points"]] == [1, 2, 3]
        assert snapshot.json()["command"] == (
            "sleap-rtc train --room lab --worker-id sim-gpu "
            "--config '/data/lab/a b.yaml' --max-epochs 50"
        )
        assert snapshot.json()["can_control"] is True
        after = snapshot.headers["x-event-id"]

        stream = Events(http, f"/v1/rooms/lab/jobs/{JOB}/events?after={after}", {})
        await stream.opened.wait()
        log = [{"n": 1, "text": "epoch 4 done"}]
        await worker.send(report(JOB, "RUNNING", 11.0, points=points(4, 5), log=log))
        await stream.until(lambda got: any(name == "log" for _, name, _ in got))
        assert stream.epochs() == [4, 5]
        job_events = [data for _, name, data in stream.got if name == "job"]
        assert job_events[-1]["state"] == "RUNNING" and job_events[-1]["can_control"] is True
        seen = stream.got[-1][0]
        await stream.close()

        # While no one listens, two more reports; the reconnect gets exactly those.
        await worker.send(report(JOB, "RUNNING", 12.0, points=points(6, 7)))
        await worker.send(report(JOB, "COMPLETE", 13.0, points=points(8, 8)))
        await ping(worker)
        again = Events(http, f"/v1/rooms/lab/jobs/{JOB}/events", {"Last-Event-ID": seen})
        await again.until(lambda got: any(d.get("state") == "COMPLETE" for _, n, d in got))
        assert again.epochs() == [6, 7, 8]
        last_job = [data for _, name, data in again.got if name == "job"][-1]
        assert last_job["can_control"] is False  # it ended
        await again.close()

        # An id from another server start (or long gone) can't be resumed: reset.
        gone = Events(http, f"/v1/rooms/lab/jobs/{JOB}/events", {"Last-Event-ID": "0000-1"})
        await gone.until(lambda got: bool(got))
        assert gone.got[0][1] == "reset"
        await gone.close()


async def test_the_room_stream_tells_workers_coming_and_going_and_jobs(
    lab: tuple[ServerProcess, ClientConnection, str], tmp_path: Path
) -> None:
    server, worker, worker_id = lab
    async with httpx.AsyncClient(base_url=server.url) as http:
        await web_login(http, "bob")
        listed = await http.get("/v1/rooms/lab/workers")
        assert [w["status"] for w in listed.json()] == ["online"]
        stream = Events(http, f"/v1/rooms/lab/events?after={listed.headers['x-event-id']}", {})
        await stream.opened.wait()
        beat = {"type": "heartbeat", "v": 1, "status": "busy", "running_jobs": 1}
        beat["gpus"] = [
            {
                "index": 0,
                "name": "A40",
                "memory_total_mb": 46068,
                "memory_free_mb": 30000,
                "utilization_pct": 37,
            }
        ]
        await worker.send(json.dumps(beat))
        await worker.send(report(JOB, "RUNNING", 10.0))
        await stream.until(lambda got: any(name == "job" for _, name, _ in got))
        workers = [d for _, name, d in stream.got if name == "worker"]
        assert workers[-1]["id"] == worker_id and workers[-1]["status"] == "busy"
        assert workers[-1]["gpus"][0]["utilization_pct"] == 37
        job = [d for _, name, d in stream.got if name == "job"][-1]
        assert job["job_id"] == JOB and job["can_control"] is False  # bob is not the owner
        assert not any(name in ("points", "log") for _, name, _ in stream.got)

        await worker.close()
        await stream.until(
            lambda got: any(n == "worker" and d["status"] == "offline" for _, n, d in got)
        )
        await stream.close()


async def test_stop_and_cancel_go_to_the_worker_and_only_for_the_owner(
    lab: tuple[ServerProcess, ClientConnection, str],
) -> None:
    server, worker, _ = lab
    await worker.send(report(JOB, "RUNNING", 10.0))
    await ping(worker)
    async with (
        httpx.AsyncClient(base_url=server.url) as alice,
        httpx.AsyncClient(base_url=server.url) as bob,
    ):
        alice_csrf = await web_login(alice, "alice")
        bob_csrf = await web_login(bob, "bob")

        # Not the owner: refused by the server, the worker hears nothing.
        refused = await bob.post(
            f"/v1/rooms/lab/jobs/{JOB}/cancel", headers={"X-CSRF-Token": bob_csrf}, json={}
        )
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "NOT_OWNER"

        # The owner: the worker is asked, and its answer is the API's.
        async def answer_as_worker(ok: bool, code: str, message: str) -> dict[str, Any]:
            while (asked := await recv(worker))["type"] != "job_control":
                pass
            reply = {
                "type": "job_control_result",
                "v": 1,
                "request_id": asked["request_id"],
                "ok": ok,
                "code": code,
                "message": message,
            }
            await worker.send(json.dumps(reply))
            return asked

        headers = {"X-CSRF-Token": alice_csrf}
        stop = asyncio.create_task(alice.post(f"/v1/rooms/lab/jobs/{JOB}/stop", headers=headers))
        asked = await answer_as_worker(True, "", "job will stop after this epoch")
        answered = await stop
        assert asked["action"] == "stop" and asked["job_id"] == JOB and asked["user"] == "alice"
        assert answered.status_code == 202, answered.text
        assert answered.json() == {
            "job_id": JOB,
            "action": "stop",
            "message": "job will stop after this epoch",
        }

        # The worker's own record says otherwise: its refusal reaches the user.
        cancel = asyncio.create_task(
            alice.post(f"/v1/rooms/lab/jobs/{JOB}/cancel", headers=headers)
        )
        await answer_as_worker(False, "FORBIDDEN", "job belongs to someone else")
        refused = await cancel
        assert refused.status_code == 403
        assert refused.json()["error"] == {
            "code": "FORBIDDEN",
            "message": "job belongs to someone else",
        }

        # A finished job can't be stopped; an offline worker's can't either.
        await worker.send(report("job-done", "COMPLETE", 11.0))
        await ping(worker)
        done = await alice.post("/v1/rooms/lab/jobs/job-done/cancel", headers=headers)
        assert done.status_code == 409 and done.json()["error"]["code"] == "JOB_FINISHED"
        # The worker goes away before it answers: the request ends at once, saying so.
        pending = asyncio.create_task(
            alice.post(f"/v1/rooms/lab/jobs/{JOB}/cancel", headers=headers)
        )
        while (await recv(worker))["type"] != "job_control":
            pass
        await worker.close()
        gone = await asyncio.wait_for(pending, 10)
        assert gone.status_code == 409, gone.text
        assert "disconnected before it answered" in gone.json()["error"]["message"]
        await asyncio.sleep(0.5)
        offline = await alice.post(f"/v1/rooms/lab/jobs/{JOB}/cancel", headers=headers)
        assert offline.status_code == 409
        assert offline.json()["error"]["code"] == "WORKER_OFFLINE"


async def test_logging_out_ends_the_cookie_and_its_streams_at_once(
    lab: tuple[ServerProcess, ClientConnection, str],
) -> None:
    server, _, _ = lab
    async with httpx.AsyncClient(base_url=server.url) as http:
        csrf = await web_login(http, "alice")
        stream = Events(http, "/v1/rooms/lab/events", {})
        await stream.opened.wait()
        assert stream.status == 200

        without = await http.post("/v1/auth/web/logout")
        assert without.status_code == 403  # logging out is a change too
        assert (
            await http.post("/v1/auth/web/logout", headers={"X-CSRF-Token": csrf})
        ).status_code == 204

        deadline = time.monotonic() + 5
        while not stream.ended and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert stream.ended
        assert (await http.get("/v1/auth/web/session")).status_code == 401


async def test_cookie_requests_from_another_site_and_strangers_are_refused(
    lab: tuple[ServerProcess, ClientConnection, str],
) -> None:
    server, worker, _ = lab
    await worker.send(report(JOB, "RUNNING", 10.0))
    await ping(worker)
    async with httpx.AsyncClient(base_url=server.url) as http:
        csrf = await web_login(http, "alice")
        evil = {"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
        answer = await http.post(f"/v1/rooms/lab/jobs/{JOB}/stop", headers=evil)
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "CSRF_FAILED"
        looked = await http.get("/v1/rooms", headers={"Origin": "https://evil.example"})
        assert looked.status_code == 403

    async with httpx.AsyncClient(base_url=server.url) as http:
        await web_login(http, "carol")
        for path in (
            f"/v1/rooms/lab/jobs/{JOB}",
            "/v1/rooms/lab/events",
            f"/v1/rooms/lab/jobs/{JOB}/events",
        ):
            answer = await http.get(path)
            assert answer.status_code == 404, path
        bad = await http.post(
            "/v1/auth/web/login", json={"username": "carol", "password": "wrong-password"}
        )
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "BAD_CREDENTIALS"
