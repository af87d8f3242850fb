"""The relay lanes' pairing rules and budgets (pure logic; the socket is tested end to end
in tests/e2e/test_relay_lanes.py)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any, cast

import pytest
from starlette.websockets import WebSocket

from sleap_rtc.protocol.codec import ProtocolError
from sleap_rtc.protocol.relaylane import MAX_LANE_MESSAGE, decode_hello, decode_status
from sleap_rtc.server.service.lanes import (
    MAX_PAIRS_PER_USER,
    MAX_WAITING_PER_WORKER,
    LaneBoard,
    LaneRefused,
    Waiting,
)
from sleap_rtc.server.service.relay import RelayBudget

_WS = cast(WebSocket, object())


def _token(n: int) -> tuple[str, str]:
    token = bytes([n]) * 32
    return token.hex(), hashlib.sha256(token).hexdigest()


async def test_a_token_pairs_its_account_once_and_a_stranger_spends_it() -> None:
    board = LaneBoard(10, 100)
    token, digest = _token(1)
    waiting = Waiting(("room", "w1"), "7", _WS)
    board.wait(digest, waiting)
    assert board.take(token, "7") is waiting and board.pairs == 1
    with pytest.raises(LaneRefused, match="no relay lane waits"):
        board.take(token, "7")
    board.done("7")
    assert board.pairs == 0

    token, digest = _token(2)
    other = Waiting(("room", "w1"), "7", _WS)
    board.wait(digest, other)
    with pytest.raises(LaneRefused, match="another account"):
        board.take(token, "8")
    assert other.paired.done() and other.paired.result() is None  # its worker hears
    with pytest.raises(LaneRefused, match="no relay lane waits"):
        board.take(token, "7")


async def test_waiting_halves_and_pairs_are_bounded() -> None:
    board = LaneBoard(10, 100)
    for n in range(MAX_WAITING_PER_WORKER):
        board.wait(_token(n)[1], Waiting(("room", "w1"), "7", _WS))
    with pytest.raises(LaneRefused, match="wait per worker"):
        board.wait(_token(99)[1], Waiting(("room", "w1"), "7", _WS))
    board.wait(_token(99)[1], Waiting(("room", "w2"), "7", _WS))  # another worker may
    with pytest.raises(LaneRefused, match="waiting already"):
        board.wait(_token(99)[1], Waiting(("room", "w2"), "7", _WS))

    for n in range(MAX_PAIRS_PER_USER):
        board.take(_token(n)[0], "7")
    with pytest.raises(LaneRefused, match="too many relay lanes"):
        board.take(_token(99)[0], "7")


def test_zero_for_either_rate_turns_relay_lanes_off() -> None:
    assert LaneBoard(10, 100).enabled
    assert not LaneBoard(0, 100).enabled and not LaneBoard(10, 0).enabled


async def test_a_message_dearer_than_the_budget_still_passes_at_the_rate() -> None:
    budget = RelayBudget(1024, scope="test")  # 1 MiB/s
    started = time.monotonic()
    for _ in range(3):
        await asyncio.wait_for(budget.spend("u", MAX_LANE_MESSAGE), 5)
    assert time.monotonic() - started >= 1.0  # three frames took their seconds


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        '{"role": "worker", "worker_id": "w", "user_id": "1", "digest": "xyz"}',
        '{"role": "client", "token": "' + "ab" * 32 + '", "extra": 1}',
        "x" * 2000,
    ],
)
def test_a_hello_that_is_none_is_refused(text: str) -> None:
    with pytest.raises(ProtocolError):
        decode_hello(text)


def test_hellos_and_statuses_read_back() -> None:
    hello: Any = decode_hello('{"role": "client", "token": "' + "ab" * 32 + '"}')
    assert hello.role == "client"
    assert decode_status('{"op": "paired"}').op == "paired"
    with pytest.raises(ProtocolError):
        decode_status(b"\x00binary")
