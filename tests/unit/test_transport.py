"""Channels (ordering, closing, back-pressure) and the envelopes relayed payloads carry."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sleap_rtc.transport as transport
from sleap_rtc.transport.base import INBOX_LIMIT, Channel, ChannelClosed
from sleap_rtc.transport.envelope import Answer, Close, Data, Open, parse_envelope
from sleap_rtc.transport.relay import new_channel_id

OVERFLOW_REASON = "peer sent faster than this side could read"


class MemoryChannel(Channel):
    """A channel whose far end is a list: what was sent, and why it was shut down."""

    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []
        self.shutdowns: list[str] = []

    async def _transmit(self, text: str) -> None:
        self.sent.append(text)

    async def _shutdown(self, reason: str) -> None:
        self.shutdowns.append(reason)


async def _closed_error(channel: Channel) -> ChannelClosed:
    with pytest.raises(ChannelClosed) as caught:
        await asyncio.wait_for(channel.recv(), 1)
    return caught.value


async def _yield(times: int = 5) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


# ---------------------------------------------------------------- the basics


def test_package_exports_the_channel_types() -> None:
    assert transport.Channel is Channel
    assert transport.ChannelClosed is ChannelClosed
    assert sorted(transport.__all__) == ["Channel", "ChannelClosed"]


def test_channel_closed_carries_its_reason() -> None:
    error = ChannelClosed("peer went away")
    assert error.reason == "peer went away"
    assert str(error) == "peer went away"
    assert ChannelClosed().reason == "channel closed"
    assert isinstance(error, Exception)


async def test_a_new_channel_is_open() -> None:
    channel = MemoryChannel()
    assert channel.kind == "memory"
    assert Channel.kind == "channel"
    assert channel.closed is False
    assert channel.close_reason is None


async def test_send_transmits_in_order() -> None:
    channel = MemoryChannel()
    for i in range(50):
        await channel.send(f"m{i}")
    await channel.send("")
    assert channel.sent == [f"m{i}" for i in range(50)] + [""]


async def test_delivered_messages_are_received_in_order() -> None:
    channel = MemoryChannel()
    messages = [f"m{i}" for i in range(100)] + ["", "é😀", '{"type": "PING"}']
    for message in messages:
        channel._deliver(message)
    assert [await channel.recv() for _ in messages] == messages
    assert channel.sent == []


async def test_recv_waits_for_the_next_delivery() -> None:
    channel = MemoryChannel()
    pending = asyncio.create_task(channel.recv())
    await _yield()
    assert not pending.done()
    channel._deliver("late")
    assert await asyncio.wait_for(pending, 1) == "late"


async def test_base_channel_needs_a_transport_to_send() -> None:
    channel = Channel()
    with pytest.raises(NotImplementedError):
        await channel.send("x")
    await channel.close("done")  # the default shutdown does nothing
    assert channel.close_reason == "done"


# ---------------------------------------------------------------- closing


async def test_recv_after_close_raises_with_the_reason_every_time() -> None:
    channel = MemoryChannel()
    await channel.close("job finished")
    assert channel.closed is True
    assert channel.close_reason == "job finished"
    for _ in range(3):
        error = await _closed_error(channel)
        assert error.reason == "job finished"
        assert str(error) == "job finished"


async def test_messages_delivered_before_close_are_received_first() -> None:
    channel = MemoryChannel()
    for message in ("a", "b", "c"):
        channel._deliver(message)
    await channel.close("bye")
    assert [await channel.recv() for _ in range(3)] == ["a", "b", "c"]
    for _ in range(3):
        assert (await _closed_error(channel)).reason == "bye"


async def test_close_wakes_a_waiting_reader() -> None:
    channel = MemoryChannel()
    readers = [asyncio.create_task(channel.recv()) for _ in range(3)]
    await _yield()
    await channel.close("shutting down")
    results = await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), 1)
    assert [type(r) for r in results] == [ChannelClosed] * 3
    assert [cast(ChannelClosed, r).reason for r in results] == ["shutting down"] * 3


async def test_close_without_a_reason() -> None:
    channel = MemoryChannel()
    await channel.close()
    assert channel.close_reason == "closed by this side"
    assert channel.shutdowns == ["closed by this side"]
    assert (await _closed_error(channel)).reason == "closed by this side"


async def test_send_after_close_raises_and_transmits_nothing() -> None:
    channel = MemoryChannel()
    await channel.send("before")
    await channel.close("gone")
    for _ in range(2):
        with pytest.raises(ChannelClosed) as caught:
            await channel.send("after")
        assert caught.value.reason == "gone"
    assert channel.sent == ["before"]


async def test_close_is_idempotent_and_shuts_down_once() -> None:
    channel = MemoryChannel()
    await channel.close("first")
    await channel.close("second")
    await channel.close()
    assert channel.shutdowns == ["first"]
    assert channel.close_reason == "first"
    assert (await _closed_error(channel)).reason == "first"


async def test_concurrent_closes_shut_down_once() -> None:
    channel = MemoryChannel()
    await asyncio.gather(*(channel.close(f"r{i}") for i in range(5)))
    assert channel.shutdowns == ["r0"]
    assert channel.close_reason == "r0"


async def test_transport_reported_close_keeps_the_first_reason() -> None:
    channel = MemoryChannel()
    channel._deliver("last words")
    channel._mark_closed("peer closed the channel")
    channel._mark_closed("peer connection failed")
    await channel.close("closed by this side")
    assert channel.close_reason == "peer closed the channel"
    assert await channel.recv() == "last words"
    for _ in range(2):
        assert (await _closed_error(channel)).reason == "peer closed the channel"
    with pytest.raises(ChannelClosed) as caught:
        await channel.send("x")
    assert caught.value.reason == "peer closed the channel"
    assert channel.sent == []


async def test_deliver_after_close_is_ignored() -> None:
    channel = MemoryChannel()
    channel._deliver("kept")
    await channel.close("done")
    for i in range(INBOX_LIMIT + 10):
        channel._deliver(f"late {i}")
    assert channel.close_reason == "done"
    assert await channel.recv() == "kept"
    assert (await _closed_error(channel)).reason == "done"
    assert (await _closed_error(channel)).reason == "done"


# ---------------------------------------------------------------- a reader that falls behind


async def test_inbox_holds_exactly_inbox_limit_messages() -> None:
    channel = MemoryChannel()
    for i in range(INBOX_LIMIT):
        channel._deliver(f"m{i}")
    assert channel.closed is False
    assert [await channel.recv() for _ in range(INBOX_LIMIT)] == [
        f"m{i}" for i in range(INBOX_LIMIT)
    ]
    assert channel.closed is False


async def test_a_reader_that_falls_behind_gets_the_channel_closed() -> None:
    channel = MemoryChannel()
    for i in range(INBOX_LIMIT + 1):
        channel._deliver(f"m{i}")
    assert channel.closed is True
    assert channel.close_reason == OVERFLOW_REASON
    # What was buffered is still read, in order; the message that overflowed is dropped.
    received = [await channel.recv() for _ in range(INBOX_LIMIT)]
    assert received == [f"m{i}" for i in range(INBOX_LIMIT)]
    for _ in range(2):
        assert (await _closed_error(channel)).reason == OVERFLOW_REASON
    with pytest.raises(ChannelClosed) as caught:
        await channel.send("reply")
    assert caught.value.reason == OVERFLOW_REASON
    assert channel.sent == []


async def test_messages_after_an_overflow_are_dropped() -> None:
    channel = MemoryChannel()
    for i in range(INBOX_LIMIT + 50):
        channel._deliver(f"m{i}")
    received = [await channel.recv() for _ in range(INBOX_LIMIT)]
    assert received[-1] == f"m{INBOX_LIMIT - 1}"
    assert (await _closed_error(channel)).reason == OVERFLOW_REASON


async def test_a_reader_that_keeps_up_never_overflows() -> None:
    channel = MemoryChannel()
    for i in range(INBOX_LIMIT):
        channel._deliver(f"m{i}")
    for i in range(INBOX_LIMIT, 4 * INBOX_LIMIT):
        assert await channel.recv() == f"m{i - INBOX_LIMIT}"
        channel._deliver(f"m{i}")  # the inbox is back at the limit, never over it
    assert channel.closed is False


async def test_a_waiting_reader_sees_the_overflow_after_the_backlog() -> None:
    channel = MemoryChannel()
    for i in range(INBOX_LIMIT + 1):
        channel._deliver(f"m{i}")
    seen: list[str] = []
    with pytest.raises(ChannelClosed) as caught:
        while True:
            seen.append(await asyncio.wait_for(channel.recv(), 1))
    assert caught.value.reason == OVERFLOW_REASON
    assert len(seen) == INBOX_LIMIT


async def test_an_overflow_still_shuts_the_transport_down_once() -> None:
    channel = MemoryChannel()
    for i in range(INBOX_LIMIT + 1):
        channel._deliver(f"m{i}")
    await _yield()
    await channel.close("closed by this side")
    await _yield()
    assert channel.shutdowns == [OVERFLOW_REASON]


# ---------------------------------------------------------------- envelopes

SDP = "v=0\r\no=- 46117317 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {"ch": "abc123", "op": "open", "transport": "relay"},
            Open(ch="abc123", transport="relay"),
        ),
        (
            {"ch": "c-1", "op": "open", "transport": "webrtc", "sdp": SDP},
            Open(ch="c-1", transport="webrtc", sdp=SDP),
        ),
        (
            {"ch": "c_1", "op": "open", "transport": "relay", "sdp": None},
            Open(ch="c_1", transport="relay", sdp=None),
        ),
        ({"ch": "C", "op": "answer", "sdp": SDP}, Answer(ch="C", sdp=SDP)),
        ({"ch": "c", "op": "answer", "sdp": ""}, Answer(ch="c", sdp="")),
        (
            {"ch": "c", "op": "data", "msg": {"type": "PING", "n": [1, 2.5, None, {"a": True}]}},
            Data(ch="c", msg={"type": "PING", "n": [1, 2.5, None, {"a": True}]}),
        ),
        ({"ch": "c", "op": "data", "msg": {}}, Data(ch="c", msg={})),
        ({"ch": "c", "op": "close"}, Close(ch="c", reason="")),
        ({"ch": "c", "op": "close", "reason": "bye é"}, Close(ch="c", reason="bye é")),
    ],
)
def test_valid_envelopes_parse(
    payload: dict[str, Any], expected: Open | Answer | Data | Close
) -> None:
    envelope = parse_envelope(payload)
    assert type(envelope) is type(expected)
    assert envelope == expected
    assert parse_envelope(expected.model_dump()) == expected


def test_envelope_defaults() -> None:
    opened = parse_envelope({"ch": "c", "op": "open", "transport": "relay"})
    assert isinstance(opened, Open)
    assert opened.sdp is None
    closed = parse_envelope({"ch": "c", "op": "close"})
    assert isinstance(closed, Close)
    assert closed.reason == ""


def test_generated_channel_ids_are_valid() -> None:
    ids = {new_channel_id() for _ in range(20)}
    assert len(ids) == 20
    for ch in ids:
        assert parse_envelope({"ch": ch, "op": "close"}) == Close(ch=ch)


@pytest.mark.parametrize("ch", ["a", "A-z_09", "x" * 64, "-", "_"])
def test_valid_channel_ids(ch: str) -> None:
    assert parse_envelope({"ch": ch, "op": "close"}) == Close(ch=ch)


@pytest.mark.parametrize(
    "ch",
    ["a b", "../x", "..", "a/b", "a.b", "x" * 65, "", "ch\n", " ch", "é", "a:b", "$(id)", "a\\b"],
)
def test_bad_channel_ids_are_refused(ch: str) -> None:
    assert parse_envelope({"ch": ch, "op": "close"}) is None
    assert parse_envelope({"ch": ch, "op": "data", "msg": {}}) is None
    assert parse_envelope({"ch": ch, "op": "open", "transport": "relay"}) is None


@pytest.mark.parametrize("op", ["OPEN", "ping", "offer", "", None, 1, [], ["open"], {}, True])
def test_unknown_ops_are_refused(op: object) -> None:
    assert parse_envelope({"ch": "c", "op": op, "transport": "relay"}) is None
    assert parse_envelope({"ch": "c", "op": op}) is None


def test_missing_op_or_channel_is_refused() -> None:
    assert parse_envelope({"ch": "c", "transport": "relay"}) is None
    assert parse_envelope({"op": "close"}) is None
    assert parse_envelope({}) is None


@pytest.mark.parametrize(
    "payload",
    [
        {"ch": "c", "op": "open", "transport": "relay", "v": 1},
        {"ch": "c", "op": "answer", "sdp": SDP, "candidate": "a=1"},
        {"ch": "c", "op": "data", "msg": {}, "from": "w-admin"},
        {"ch": "c", "op": "data", "msg": {}, "sender": {"kind": "worker"}},
        {"ch": "c", "op": "close", "reason": "", "code": 1000},
    ],
)
def test_extra_fields_are_refused(payload: dict[str, Any]) -> None:
    assert parse_envelope(payload) is None


@pytest.mark.parametrize("op", ["open", "answer"])
def test_sdp_size_limit(op: str) -> None:
    extra = {"transport": "webrtc"} if op == "open" else {}
    limit = 48 * 1024
    at_limit = parse_envelope({"ch": "c", "op": op, "sdp": "s" * limit, **extra})
    assert at_limit is not None
    assert at_limit.sdp == "s" * limit  # type: ignore[union-attr]
    assert parse_envelope({"ch": "c", "op": op, "sdp": "s" * (limit + 1), **extra}) is None


def test_close_reason_size_limit() -> None:
    assert parse_envelope({"ch": "c", "op": "close", "reason": "r" * 512}) == Close(
        ch="c", reason="r" * 512
    )
    assert parse_envelope({"ch": "c", "op": "close", "reason": "r" * 513}) is None


@pytest.mark.parametrize(
    "payload",
    [
        {"ch": 123, "op": "close"},
        {"ch": None, "op": "close"},
        {"ch": ["c"], "op": "close"},
        {"ch": "c", "op": "open"},
        {"ch": "c", "op": "open", "transport": "tcp"},
        {"ch": "c", "op": "open", "transport": None},
        {"ch": "c", "op": "open", "transport": "WEBRTC", "sdp": SDP},
        {"ch": "c", "op": "open", "transport": "webrtc", "sdp": 1},
        {"ch": "c", "op": "answer"},
        {"ch": "c", "op": "answer", "sdp": None},
        {"ch": "c", "op": "answer", "sdp": ["v=0"]},
        {"ch": "c", "op": "data"},
        {"ch": "c", "op": "data", "msg": None},
        {"ch": "c", "op": "data", "msg": []},
        {"ch": "c", "op": "data", "msg": '{"type": "PING"}'},
        {"ch": "c", "op": "data", "msg": {1: "non-string key"}},
        {"ch": "c", "op": "close", "reason": None},
        {"ch": "c", "op": "close", "reason": 5},
    ],
)
def test_wrong_types_are_refused(payload: dict[str, Any]) -> None:
    assert parse_envelope(payload) is None


@pytest.mark.parametrize("payload", [None, [], ["close"], "close", 1, b"{}"])
def test_a_payload_that_is_not_an_object_is_refused(payload: object) -> None:
    assert parse_envelope(cast(dict[str, Any], payload)) is None


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["open", "answer", "data", "close", "relay", "webrtc", "c-1", SDP]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.dictionaries(
        st.sampled_from(["ch", "op", "transport", "sdp", "msg", "reason", "v", "x"]),
        _JSON,
        max_size=5,
    )
)
def test_any_payload_is_an_envelope_or_none(payload: dict[str, Any]) -> None:
    envelope = parse_envelope(payload)
    if envelope is None:
        return
    assert isinstance(envelope, Open | Answer | Data | Close)
    assert envelope.op == payload["op"]
    assert envelope.ch == payload["ch"]
    assert parse_envelope(envelope.model_dump()) == envelope
