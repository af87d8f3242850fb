"""Fuzzing the decoders and the worker's session handler with mutated valid messages.

A mutation loop (seeded, so a failure reproduces) starts from one valid message of
every type and breaks it the ways a hostile peer would: wrong types, huge and
negative numbers, long and control-character text, lone surrogates, deep nesting,
missing and extra keys, truncated or flipped bytes. The decoders may only raise
their own ProtocolError; the session handler must answer every message (an
ERROR is an answer) and must never hit its catch-all (code INTERNAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol import signaling as s
from sleap_rtc.protocol.codec import ProtocolError
from sleap_rtc.transport.base import Channel, ChannelClosed
from sleap_rtc.transport.envelope import parse_envelope

SEED = 20261201
SHA = "0" * 64

CLIENT_SEEDS: list[dict[str, Any]] = [
    {"type": "HELLO", "ticket": "eyJ.abc.def"},
    {"type": "JOB_SUBMIT", "request_id": "r1", "spec": {"kind": "train", "config_paths": ["/x"]}},
    {
        "type": "JOB_SUBMIT",
        "request_id": "r2",
        "spec": {"kind": "track", "data_path": "/d.slp", "model_paths": ["/m"], "frames": "0-9"},
    },
    {"type": "JOB_CANCEL", "request_id": "c1", "job_id": "abc123"},
    {"type": "JOB_STOP", "request_id": "c2", "job_id": "abc123"},
    {"type": "JOB_STATUS", "request_id": "c3", "job_id": "abc123"},
    {"type": "JOB_LIST", "request_id": "c4", "limit": 5, "offset": 0},
    {"type": "JOB_ATTACH", "request_id": "c5", "job_id": "abc123", "log_lines": 10},
    {"type": "PING", "request_id": "c6", "nonce": "n"},
    {"type": "UPLOAD_BEGIN", "upload_id": "u1", "name": "a.slp", "size": 3, "sha256": SHA},
    {"type": "UPLOAD_CHUNK", "upload_id": "u1", "offset": 0, "data": "YWJj"},
    {"type": "UPLOAD_END", "upload_id": "u1"},
    {"type": "DOWNLOAD", "request_id": "d1", "path": "/data/x"},
    {"type": "DOWNLOAD_ACK", "transfer_id": "t1", "received": 10},
    {"type": "FS_MOUNTS", "request_id": "f1"},
    {"type": "FS_LIST", "request_id": "f2", "path": "/data", "offset": 0, "limit": 10},
    {"type": "FS_STAT", "request_id": "f3", "path": "/data/x"},
    {"type": "FS_FIND", "request_id": "f4", "query": "*.slp", "limit": 5},
]
WORKER_SEEDS: list[dict[str, Any]] = [
    {"type": "WELCOME", "worker_id": "w", "worker_name": "n", "user": "u"},
    {"type": "JOB_ACCEPTED", "request_id": "r", "job_id": "j", "state": "QUEUED"},
    {
        "type": "JOB_REJECTED",
        "request_id": "r",
        "errors": [{"field": "f", "path": "/p", "code": "ACCESS_DENIED", "message": "m"}],
    },
    {
        "type": "JOB_PROGRESS",
        "job_id": "j",
        "lines": ["a", "b"],
        "progress": {"kind": "train", "epoch": 1, "total_epochs": 3},
    },
    {"type": "JOB_COMPLETE", "job_id": "j", "outputs": ["/m/run"]},
    {"type": "JOB_FAILED", "job_id": "j", "reason": "x", "log_tail": ["l"]},
    {"type": "JOB_LIST_REPLY", "request_id": "r", "jobs": [], "offset": 0, "next_offset": None},
    {
        "type": "DOWNLOAD_BEGIN",
        "request_id": "r",
        "transfer_id": "t",
        "name": "a",
        "files": [{"path": "a", "size": 1, "sha256": SHA}],
    },
    {"type": "DOWNLOAD_CHUNK", "transfer_id": "t", "file_index": 0, "offset": 0, "data": "YQ=="},
    {"type": "ERROR", "code": "X", "message": "m", "request_id": "r"},
    {
        "type": "FS_LIST_REPLY",
        "request_id": "r",
        "path": "/",
        "entries": [{"name": "a", "kind": "file", "size": 1, "modified": 1.0}],
        "total": 1,
        "offset": 0,
    },
]
PEER_SEEDS: list[dict[str, Any]] = [
    {
        "type": "register",
        "worker_id": "w-1",
        "capabilities": {"name": "n", "gpus": [{"index": 0, "name": "g", "memory_total_mb": 10}]},
    },
    {"type": "heartbeat", "status": "busy", "running_jobs": 1},
    {
        "type": "relay",
        "to": "w-1",
        "room": "lab",
        "payload": {"op": "open", "ch": "c", "transport": "relay"},
    },
    {"type": "reauth", "token": "t"},
    {"type": "ping", "nonce": "x"},
]
SERVER_SEEDS: list[dict[str, Any]] = [
    {"type": "registered", "worker_id": "w", "room": "lab", "heartbeat_interval": 5.0},
    {"type": "welcome", "session_id": "s", "user": "u"},
    {
        "type": "relay",
        "sender": {"kind": "client", "id": "s", "room": "lab", "name": "u"},
        "payload": {"op": "data", "ch": "c", "msg": {}},
    },
    {"type": "error", "code": "X", "message": "m"},
]

_ODD_VALUES: list[Any] = [
    None,
    True,
    -1,
    0,
    2**63,
    -(2**63),
    2**80,
    1e308,
    -0.0,
    0.5,
    "",
    "\x00",
    "\ud800",
    "../../etc/passwd",
    "/" * 5000,
    "a" * 70_000,
    "\n[red]x[/]\x1b[31m",
    [],
    {},
    [[[[]]]],
    {"type": "PING"},
    "ＡＢＣ",
    "\u202e",
    3.14,
    "1e9999",
]


def _mutate_value(rng: random.Random, value: Any) -> Any:
    choice = rng.random()
    if choice < 0.35:
        return rng.choice(_ODD_VALUES)
    if isinstance(value, str) and choice < 0.6:
        return (value * rng.randint(2, 3000))[:80_000] if rng.random() < 0.5 else value[::-1]
    if isinstance(value, int) and not isinstance(value, bool) and choice < 0.6:
        return value + rng.choice([-1, 1, 2**31, -(2**31), 2**64])
    if isinstance(value, list) and choice < 0.7:
        return [*value, *(rng.choice(_ODD_VALUES) for _ in range(rng.randint(1, 300)))]
    if isinstance(value, dict) and choice < 0.8:
        return _mutate_object(rng, value)
    nested: Any = value
    for _ in range(rng.randint(1, 60)):
        nested = [nested] if rng.random() < 0.5 else {"k": nested}
    return nested


def _mutate_object(rng: random.Random, seed: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(seed))
    for _ in range(rng.randint(1, 3)):
        keys = list(out)
        action = rng.random()
        if keys and action < 0.6:
            key = rng.choice(keys)
            out[key] = _mutate_value(rng, out[key])
        elif keys and action < 0.75:
            del out[rng.choice(keys)]
        elif action < 0.9:
            out[rng.choice(["extra", "v", "type", "__proto__", "x" * 100])] = rng.choice(
                _ODD_VALUES
            )
        else:
            out["v"] = rng.choice([0, 2, "1", None, 1.0])
    return out


def mutations(seeds: list[dict[str, Any]], count: int, seed: int) -> Iterator[str | bytes]:
    """``count`` hostile variants of ``seeds``: structural ones and raw-byte ones."""
    rng = random.Random(seed)
    for index in range(count):
        base = seeds[index % len(seeds)]
        if rng.random() < 0.75:
            text = json.dumps(_mutate_object(rng, base), ensure_ascii=rng.random() < 0.5)
            yield text
            continue
        raw = bytearray(json.dumps(base).encode())
        for _ in range(rng.randint(1, 8)):
            kind = rng.random()
            at = rng.randrange(len(raw)) if raw else 0
            if kind < 0.4 and raw:
                raw[at] = rng.randrange(256)
            elif kind < 0.6:
                raw = raw[:at]
            elif kind < 0.8:
                raw[at:at] = rng.choice([b"{", b"[", b'"', b"\\u", b"\xff", b"\x00", b"NaN"])
            else:
                raw += bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        yield bytes(raw) if rng.random() < 0.5 else raw.decode("utf-8", "replace")


def _run_decoder(
    decode: Callable[[str | bytes], Any], seeds: list[dict[str, Any]], count: int, seed: int
) -> tuple[int, int]:
    accepted = refused = 0
    for text in mutations(seeds, count, seed):
        try:
            decode(text)
        except ProtocolError:
            refused += 1
        else:
            accepted += 1
    return accepted, refused


@pytest.mark.parametrize(
    ("decode", "seeds", "count"),
    [
        (p.decode_client, CLIENT_SEEDS, 40_000),
        (p.decode_worker, WORKER_SEEDS, 25_000),
        (s.decode_peer, PEER_SEEDS, 20_000),
        (s.decode_server, SERVER_SEEDS, 15_000),
    ],
    ids=["job-client", "job-worker", "signaling-peer", "signaling-server"],
)
def test_decoders_raise_only_protocol_errors(
    decode: Callable[[str | bytes], Any], seeds: list[dict[str, Any]], count: int
) -> None:
    """100,000 inputs in all; anything but a ProtocolError fails the test."""
    accepted, refused = _run_decoder(decode, seeds, count, SEED)
    assert accepted + refused == count
    # The mutations must reach both outcomes, or they test nothing.
    assert refused > count // 2 and accepted > 0


def test_every_seed_is_valid() -> None:
    """The loop starts from valid messages, so a refusal is the mutation's doing."""
    for seeds, decode in (
        (CLIENT_SEEDS, p.decode_client),
        (WORKER_SEEDS, p.decode_worker),
        (PEER_SEEDS, s.decode_peer),
        (SERVER_SEEDS, s.decode_server),
    ):
        for message in seeds:
            decode(json.dumps(message))


def test_envelopes_never_raise() -> None:
    rng = random.Random(SEED)
    seeds = [
        {"op": "open", "ch": "c1", "transport": "webrtc", "sdp": "v=0"},
        {"op": "data", "ch": "c1", "msg": {"type": "PING"}},
        {"op": "close", "ch": "c1", "reason": "x"},
        {"op": "answer", "ch": "c1", "sdp": "v=0"},
    ]
    for index in range(5_000):
        payload = _mutate_object(rng, seeds[index % len(seeds)])
        parse_envelope(payload)  # None or an envelope, never an exception


# ----------------------------------------------------------------- session handler


class _Pipe(Channel):
    """One end of an in-memory channel pair (the transport is not under test here)."""

    kind = "pipe"

    def __init__(self) -> None:
        super().__init__()
        self.other: _Pipe | None = None

    async def _transmit(self, text: str) -> None:
        assert self.other is not None
        self.other._inbox.put_nowait(text)

    async def _shutdown(self, reason: str) -> None:
        if self.other is not None:
            self.other._mark_closed(reason)


def _pipe() -> tuple[_Pipe, _Pipe]:
    a, b = _Pipe(), _Pipe()
    a.other, b.other = b, a
    return a, b


async def test_session_handler_survives_20000_hostile_messages(tmp_path: Path) -> None:
    from sleap_rtc.engine.backends.local.backend import LocalBackend
    from sleap_rtc.worker.config import MountConfig, WorkerConfig
    from sleap_rtc.worker.runner import JobRunner
    from sleap_rtc.worker.service import JobService, _Session
    from sleap_rtc.worker.tickets import Peer
    from sleap_rtc.worker.uploads import Uploads

    data = tmp_path / "data"
    data.mkdir()
    (data / "x").write_bytes(b"payload")
    config = WorkerConfig(
        name="fuzz",
        mounts=[MountConfig(path=str(data), label="data")],
        models_dir=tmp_path / "models",
        state_dir=tmp_path / "state",
        sleap_nn_command=[sys.executable, "-c", "raise SystemExit(3)"],
        device="cpu",
    )  # type: ignore[call-arg]
    runner = JobRunner(config, LocalBackend(cancel_grace_s=1))
    await runner.start()
    service = JobService(runner, worker_id="w-fuzz", worker_name="fuzz", verifier=None)
    worker_end, client_end = _pipe()
    session = _Session(service, worker_end)
    peer = Peer(user="mallory", user_id="7", room="lab")
    session.protocol.receive_data(p.encode(p.Hello(ticket="fuzz")))
    session.admit(peer)
    session.uploads = Uploads(config.resolved_upload_dir(), peer.user, 1 << 20)
    serving = asyncio.create_task(session.run(peer))
    seeds = [
        {**m, "path": str(data / "x")} if m["type"] in ("DOWNLOAD", "FS_STAT") else m
        for m in CLIENT_SEEDS
        if m["type"] != "HELLO"
    ]
    replies: list[dict[str, Any]] = []

    async def read() -> None:
        while True:
            replies.append(json.loads(await client_end.recv()))

    reader = asyncio.create_task(read())
    count = 0
    try:
        for text in mutations(seeds, 20_000, SEED + 1):
            await client_end.send(text if isinstance(text, str) else text.decode("latin-1"))
            count += 1
            if count % 200 == 0:
                await asyncio.sleep(0)  # let the handler drain
                assert not serving.done(), serving.exception()
        nonce = "still-there"
        await client_end.send(json.dumps({"type": "PING", "request_id": "last", "nonce": nonce}))
        async with asyncio.timeout(60):
            while not any(r.get("nonce") == nonce for r in replies):
                await asyncio.sleep(0.05)
    finally:
        reader.cancel()
        serving.cancel()
        with contextlib.suppress(BaseException):
            await serving
        await session.finish()
        await runner.close()
    assert count == 20_000
    internal = [r for r in replies if r.get("code") == "INTERNAL"]
    assert internal == [], internal[:3]
    kinds = {r.get("type") for r in replies}
    # Mutants reached the handlers, not only the decoder.
    assert {"ERROR", "PONG", "JOB_LIST_REPLY", "FS_MOUNTS_REPLY", "JOB_REJECTED"} <= kinds, kinds
    print(f"{len(replies)} replies: " + ", ".join(sorted(str(k) for k in kinds)))


def test_pipe_closes_both_ends() -> None:
    async def go() -> None:
        a, b = _pipe()
        await a.close("bye")
        with pytest.raises(ChannelClosed):
            await b.recv()

    asyncio.run(go())
