"""The room listing's directory: cached entries, filters, order, and staying current.

Pure logic on a real :class:`Hub` and :class:`RoomDirectory`; the same listing through
a running server is in ``tests/e2e/test_server_hardening.py``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast

from starlette.websockets import WebSocket

from sleap_rtc.protocol.signaling import Capabilities, Gpu
from sleap_rtc.server.directory import RoomDirectory, listed_live
from sleap_rtc.server.hub import Connection, Hub, WorkerConn

ROOM = "room-1"
SEEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def live(hub: Hub, worker_id: str, name: str, *, gpu_mb: int | None = None) -> WorkerConn:
    gpus = [Gpu(index=0, name="A100", memory_total_mb=gpu_mb)] if gpu_mb is not None else []
    worker = WorkerConn(
        Connection(cast(WebSocket, None), queue_limit=16),
        ROOM,
        "lab",
        worker_id,
        "key_1",
        Capabilities(name=name, gpus=gpus),
    )
    worker.set_gpus(gpus)
    assert hub.add_worker(worker, 4000)
    return worker


def stored(worker_id: str, name: str) -> Any:
    return (worker_id, name, "host", {"name": name, "hostname": "host"}, SEEN)


def listing(directory: RoomDirectory, hub: Hub, **filters: Any) -> tuple[list[dict[str, Any]], int]:
    body, total = directory.listing(ROOM, hub, **filters)
    return json.loads(body), total


def test_connected_workers_come_first_and_stored_ones_fill_in() -> None:
    hub, directory = Hub(), RoomDirectory()
    directory.loading(ROOM)
    directory.load(ROOM, "lab", [stored("w-old", "alpha"), stored("w-b", "beta")])
    live(hub, "w-b", "beta")  # connected again: shown live, once
    busy = live(hub, "w-c", "gamma")
    busy.report("busy", 1, None)
    entries, total = listing(directory, hub)
    assert [(e["id"], e["status"]) for e in entries] == [
        ("w-b", "online"),
        ("w-c", "busy"),
        ("w-old", "offline"),
    ]
    assert total == 3 and entries[2]["last_seen"] == "2026-01-02T03:04:05Z"


def test_filters_and_limit_apply_before_the_answer_is_built() -> None:
    hub, directory = Hub(), RoomDirectory()
    directory.load(ROOM, "lab", [stored("w-off", "zeta")])
    live(hub, "w-small", "small", gpu_mb=8000)
    live(hub, "w-big", "big", gpu_mb=80000)
    entries, total = listing(directory, hub, min_gpu_memory=20000)
    assert [e["id"] for e in entries] == ["w-big"] and total == 1
    entries, total = listing(directory, hub, statuses={"offline"})
    assert [e["id"] for e in entries] == ["w-off"] and total == 1
    entries, total = listing(directory, hub, limit=1)
    assert [e["id"] for e in entries] == ["w-big"] and total == 3


def test_an_unchanged_worker_is_not_encoded_again_and_a_heartbeat_refreshes_it() -> None:
    hub = Hub()
    worker = live(hub, "w1", "one")
    first = listed_live(worker)
    assert listed_live(worker) is first  # cached: no new encoding
    worker.heard()  # a heartbeat: O(1), drops the cache
    again = listed_live(worker)
    assert again is not first and json.loads(again.encoded)["last_seen"] != ""
    assert worker.report("busy", 2, None) is True
    assert json.loads(listed_live(worker).encoded)["status"] == "busy"
    assert worker.report("busy", 2, None) is False  # nothing the room sees changed


def test_a_worker_that_leaves_is_listed_offline_as_it_last_was() -> None:
    hub, directory = Hub(), RoomDirectory()
    directory.load(ROOM, "lab", [])
    worker = live(hub, "w1", "one", gpu_mb=24000)
    assert hub.remove_worker(worker)
    directory.went_offline(worker)
    entries, _ = listing(directory, hub)
    assert [(e["id"], e["status"], e["gpus"][0]["memory_total_mb"]) for e in entries] == [
        ("w1", "offline", 24000)
    ]
    assert hub.by_room == {}  # nothing left of the room in the hub's index


def test_a_disconnect_while_the_room_is_read_is_not_lost() -> None:
    hub, directory = Hub(), RoomDirectory()
    directory.loading(ROOM)  # the rows are being read...
    worker = live(hub, "w-new", "new")
    hub.remove_worker(worker)
    directory.went_offline(worker)  # ...when a worker the read missed leaves
    directory.load(ROOM, "lab", [stored("w-old", "old")])
    entries, _ = listing(directory, hub)
    assert sorted(e["id"] for e in entries) == ["w-new", "w-old"]
    directory.forget([ROOM])
    assert not directory.loaded(ROOM)
