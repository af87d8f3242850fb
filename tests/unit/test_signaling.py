"""The signaling protocol: typed messages in and out, and every way a message is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sleap_rtc.protocol.signaling import (
    MAX_MESSAGE_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_DEPTH,
    PROTOCOL_VERSION,
    Capabilities,
    Delivery,
    ErrorMessage,
    Gpu,
    Heartbeat,
    Ping,
    Pong,
    ProtocolError,
    Reauth,
    Register,
    Registered,
    Relay,
    Sender,
    Welcome,
    decode_peer,
    decode_server,
    encode,
)

PEER_TYPES = (Register, Heartbeat, Relay, Reauth, Ping)
SERVER_TYPES = (Registered, Welcome, Delivery, Pong, ErrorMessage)


def _gpu(index: int = 0) -> Gpu:
    return Gpu(index=index, name="NVIDIA H100", memory_total_mb=81559, memory_free_mb=80000)


def _capabilities(**overrides: Any) -> Capabilities:
    fields: dict[str, Any] = {
        "name": "lab-gpu-1",
        "hostname": "gpu1.lab.example.org",
        "accelerator": "cuda",
        "gpus": [_gpu(0), _gpu(1)],
        "sleap_nn_version": "0.3.5",
        "sleap_rtc_version": "0.1.0",
        "backends": ["local", "slurm"],
        "mounts": ["data", "scratch"],
        "max_concurrent_jobs": 2,
    }
    fields.update(overrides)
    return Capabilities(**fields)


def _register_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "register",
        "v": 1,
        "worker_id": "w-1",
        "capabilities": {"name": "lab-gpu-1"},
    }
    data.update(overrides)
    return data


def _refused(message: str | bytes | dict[str, Any], code: str) -> ProtocolError:
    text = json.dumps(message) if isinstance(message, dict) else message
    with pytest.raises(ProtocolError) as caught:
        decode_peer(text)
    assert caught.value.code == code, caught.value.message
    assert str(caught.value) == caught.value.message
    return caught.value


PEER_MESSAGES: list[BaseModel] = [
    Register(worker_id="w-1", capabilities=_capabilities(), status="busy", running_jobs=1),
    Register(worker_id="a.b:c_d-9", capabilities=Capabilities(name="minimal")),
    Heartbeat(),
    Heartbeat(status="busy", running_jobs=3, gpus=[_gpu(0)]),
    Relay(to="session-1", room="my-room", payload={"sdp": "v=0\r\n", "n": [1, 2.5, None, True]}),
    Relay(to="w-1", payload={}),
    Reauth(token="eyJhbGciOiJFZERTQSJ9.e30.sig"),
    Ping(),
    Ping(nonce="abc123"),
]

SENDER = Sender(kind="worker", id="w-1", room="my-room", name="lab-gpu-1")

SERVER_MESSAGES: list[BaseModel] = [
    Registered(worker_id="w-1", room="my-room", heartbeat_interval=15.0),
    Welcome(session_id="s-123", user="alice"),
    Delivery(sender=SENDER, payload={"candidate": "a=1", "nested": {"x": [1, 2]}}),
    Delivery(sender=Sender(kind="client", id="s-1", room="r", name="alice"), payload={}),
    Pong(),
    Pong(nonce="abc123"),
    ErrorMessage(code="PEER_NOT_FOUND", message="no client session 's-9' in room 'r'"),
]


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("message", PEER_MESSAGES, ids=lambda m: type(m).__name__)
def test_peer_message_round_trips(message: BaseModel) -> None:
    text = encode(message)
    assert json.loads(text)["v"] == PROTOCOL_VERSION
    decoded = decode_peer(text)
    assert type(decoded) is type(message)
    assert decoded == message
    assert decode_peer(text.encode("utf-8")) == message
    assert encode(decoded) == text


@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=lambda m: type(m).__name__)
def test_server_message_round_trips(message: BaseModel) -> None:
    text = encode(message)
    decoded = decode_server(text)
    assert type(decoded) is type(message)
    assert decoded == message
    assert decode_server(text.encode("utf-8")) == message
    assert encode(decoded) == text


def test_every_message_type_is_covered() -> None:
    assert {type(m) for m in PEER_MESSAGES} == set(PEER_TYPES)
    assert {type(m) for m in SERVER_MESSAGES} == set(SERVER_TYPES)


def test_version_may_be_left_out() -> None:
    assert decode_peer('{"type": "ping"}') == Ping(nonce="")
    assert decode_server('{"type": "pong", "nonce": "x"}') == Pong(nonce="x")


def test_defaults_are_filled_in() -> None:
    message = decode_peer(json.dumps(_register_dict()))
    assert isinstance(message, Register)
    assert message.status == "idle"
    assert message.running_jobs == 0
    assert message.capabilities == Capabilities(name="lab-gpu-1")
    assert message.capabilities.accelerator == "cpu"
    assert message.capabilities.gpus == []
    assert message.capabilities.max_concurrent_jobs == 1


def test_relay_without_room_is_allowed_for_workers() -> None:
    message = decode_peer('{"type": "relay", "to": "s-1", "payload": {"a": 1}}')
    assert message == Relay(to="s-1", room=None, payload={"a": 1})


# ---------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    "text",
    ["", "not json", "{", '{"type": "ping"', b"\xff\xfe\xfd{}", "{'type': 'ping'}"],
)
def test_not_json_is_malformed(text: str | bytes) -> None:
    error = _refused(text, "MALFORMED")
    assert error.message.startswith("message is not valid JSON")


@pytest.mark.parametrize("text", ["[]", '[{"type": "ping"}]', '"ping"', "1", "null", "true"])
def test_json_that_is_not_an_object_is_malformed(text: str) -> None:
    error = _refused(text, "MALFORMED")
    assert error.message == "message must be a JSON object"


@pytest.mark.parametrize("kind", ["launch_missiles", "welcome", "registered", "pong", "error"])
def test_unknown_type(kind: str) -> None:
    error = _refused({"type": kind, "v": 1}, "UNKNOWN_TYPE")
    assert error.message == f"unknown message type {kind!r}"


def test_server_decoder_refuses_peer_only_types() -> None:
    for kind in ("register", "heartbeat", "reauth", "ping"):
        with pytest.raises(ProtocolError) as caught:
            decode_server(json.dumps({"type": kind}))
        assert caught.value.code == "UNKNOWN_TYPE"
        assert kind in caught.value.message


def test_missing_type() -> None:
    error = _refused({"v": 1, "nonce": "x"}, "UNKNOWN_TYPE")
    assert error.message == "unknown message type None"


@pytest.mark.parametrize("kind", [None, 1, [], ["ping"], {}])
def test_type_of_the_wrong_kind(kind: object) -> None:
    error = _refused({"type": kind}, "UNKNOWN_TYPE")
    assert error.message == f"unknown message type {kind!r}"


@pytest.mark.parametrize("version", [2, 0, "1", None, 1.5])
def test_unsupported_version(version: object) -> None:
    error = _refused({"type": "ping", "v": version}, "UNSUPPORTED_VERSION")
    assert f"protocol version {version!r} is not supported" in error.message
    assert "Upgrade sleap-rtc" in error.message


def test_server_decoder_refuses_unsupported_version() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_server('{"type": "pong", "v": 2}')
    assert caught.value.code == "UNSUPPORTED_VERSION"


# ---------------------------------------------------------------- sizes


def _padded_ping(total: int) -> str:
    body = '{"type":"ping"}'
    return body + " " * (total - len(body))


def test_message_at_the_size_limit_is_accepted() -> None:
    text = _padded_ping(MAX_MESSAGE_BYTES)
    assert len(text) == MAX_MESSAGE_BYTES
    assert decode_peer(text) == Ping()
    assert decode_peer(text.encode()) == Ping()


@pytest.mark.parametrize("as_bytes", [False, True])
def test_message_over_the_size_limit(as_bytes: bool) -> None:
    text = _padded_ping(MAX_MESSAGE_BYTES + 1)
    error = _refused(text.encode() if as_bytes else text, "MESSAGE_TOO_LARGE")
    assert error.message == (
        f"message is {MAX_MESSAGE_BYTES + 1} bytes; the limit is {MAX_MESSAGE_BYTES}"
    )
    with pytest.raises(ProtocolError) as caught:
        decode_server(text)
    assert caught.value.code == "MESSAGE_TOO_LARGE"


def _relay_with_payload_size(size: int) -> str:
    overhead = len(json.dumps({"x": ""}, separators=(",", ":")))
    payload = {"x": "a" * (size - overhead)}
    assert len(json.dumps(payload, separators=(",", ":"))) == size
    return json.dumps({"type": "relay", "to": "s-1", "room": "r", "payload": payload})


def test_relay_payload_at_the_limit_is_accepted() -> None:
    text = _relay_with_payload_size(MAX_PAYLOAD_BYTES)
    message = decode_peer(text)
    assert isinstance(message, Relay)
    assert len(message.payload["x"]) == MAX_PAYLOAD_BYTES - 8


def test_relay_payload_over_the_limit_in_a_message_under_the_limit() -> None:
    text = _relay_with_payload_size(MAX_PAYLOAD_BYTES + 1)
    assert len(text.encode()) < MAX_MESSAGE_BYTES
    error = _refused(text, "MESSAGE_TOO_LARGE")
    assert error.message == (
        f"relay payload is {MAX_PAYLOAD_BYTES + 1} bytes; the limit is {MAX_PAYLOAD_BYTES}"
    )


def test_largest_relay_still_fits_once_delivered() -> None:
    relay = decode_peer(_relay_with_payload_size(MAX_PAYLOAD_BYTES))
    assert isinstance(relay, Relay)
    longest = "x" * 64
    sender = Sender(kind="worker", id=longest, room=longest, name=longest)
    delivered = encode(Delivery(sender=sender, payload=relay.payload))
    assert len(delivered.encode()) <= MAX_MESSAGE_BYTES
    assert decode_server(delivered) == Delivery(sender=sender, payload=relay.payload)


def test_size_limit_counts_utf8_bytes_of_text() -> None:
    text = '{"type":"ping","nonce":"' + "é" * 40_000 + '"}'
    assert len(text) < MAX_MESSAGE_BYTES < len(text.encode("utf-8"))
    _refused(text, "MESSAGE_TOO_LARGE")


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5_000 + "]" * 5_000,
        '{"type":"relay","to":"s","payload":' + '{"a":' * 3_000 + "1" + "}" * 3_000 + "}",
    ],
    ids=["array", "payload"],
)
def test_deeply_nested_json_is_a_protocol_error(text: str) -> None:
    assert len(text) < MAX_MESSAGE_BYTES
    _refused(text, "MALFORMED")


def _nested_relay(depth: int) -> str:
    return '{"type":"relay","to":"s","payload":' + '{"a":' * depth + "1" + "}" * depth + "}"


def test_relay_payload_at_the_depth_limit_can_be_delivered() -> None:
    relay = decode_peer(_nested_relay(MAX_PAYLOAD_DEPTH))
    assert isinstance(relay, Relay)
    delivered = encode(Delivery(sender=SENDER, payload=relay.payload))
    assert decode_server(delivered).payload == relay.payload  # type: ignore[union-attr]


def test_relay_payload_past_the_depth_limit_is_refused() -> None:
    error = _refused(_nested_relay(MAX_PAYLOAD_DEPTH + 1), "INVALID_MESSAGE")
    assert "nested deeper than" in error.message


# ---------------------------------------------------------------- extra fields, forged sender


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"type": "ping", "nonce": "x", "admin": True}, "admin"),
        ({"type": "heartbeat", "room": "other"}, "room"),
        ({"type": "reauth", "token": "t", "user": "root"}, "user"),
        (_register_dict(room="someone-elses"), "room"),
        (_register_dict(capabilities={"name": "n", "is_admin": True}), "capabilities.is_admin"),
    ],
)
def test_extra_fields_are_refused(message: dict[str, Any], field: str) -> None:
    error = _refused(message, "INVALID_MESSAGE")
    assert error.message == f"{message['type']} message: {field}: Extra inputs are not permitted"


def test_relay_with_forged_sender_is_refused() -> None:
    forged = {
        "type": "relay",
        "to": "w-1",
        "room": "my-room",
        "sender": {"kind": "worker", "id": "w-admin", "room": "my-room", "name": "trusted"},
        "payload": {"sdp": "x"},
    }
    error = _refused(forged, "INVALID_MESSAGE")
    assert error.message == "relay message: sender: Extra inputs are not permitted"
    # A peer can't pass a server-shaped Delivery off as its own relay either.
    delivery = encode(Delivery(sender=SENDER, payload={"sdp": "x"}))
    error = _refused(delivery, "INVALID_MESSAGE")
    assert error.message == "relay message: to: Field required"
    assert not hasattr(Relay(to="w-1", payload={}), "sender")


def test_relay_with_from_field_is_refused() -> None:
    error = _refused(
        {"type": "relay", "to": "w-1", "from": "w-2", "payload": {}}, "INVALID_MESSAGE"
    )
    assert error.message == "relay message: from: Extra inputs are not permitted"


def test_sender_inside_the_payload_stays_opaque_payload() -> None:
    message = decode_peer('{"type":"relay","to":"w-1","payload":{"sender":"w-admin"}}')
    assert isinstance(message, Relay)
    assert message.payload == {"sender": "w-admin"}
    assert set(type(message).model_fields) == {"v", "type", "to", "room", "payload"}


def test_server_decoder_refuses_a_relay_without_sender() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_server(encode(Relay(to="w-1", payload={})))
    assert caught.value.code == "INVALID_MESSAGE"


# ---------------------------------------------------------------- identifiers and limits


@pytest.mark.parametrize(
    "worker_id",
    ["../x", "a/b", "a b", " w1", "w1\n", "", "x" * 65, "wörker", "a\\b", "a;b", "$(id)"],
)
def test_invalid_worker_ids_are_refused(worker_id: str) -> None:
    error = _refused(_register_dict(worker_id=worker_id), "INVALID_MESSAGE")
    assert error.message.startswith("register message: worker_id: ")


@pytest.mark.parametrize("worker_id", ["w", "w-1", "A.b_c:9", "x" * 64])
def test_valid_worker_ids_are_accepted(worker_id: str) -> None:
    message = decode_peer(json.dumps(_register_dict(worker_id=worker_id)))
    assert isinstance(message, Register)
    assert message.worker_id == worker_id


@pytest.mark.parametrize("to", ["../x", "a b", "", "x" * 65])
def test_invalid_relay_target_is_refused(to: str) -> None:
    error = _refused({"type": "relay", "to": to, "payload": {}}, "INVALID_MESSAGE")
    assert error.message.startswith("relay message: to: ")


@pytest.mark.parametrize("payload", [None, [], "text", 1])
def test_relay_payload_must_be_an_object(payload: object) -> None:
    error = _refused({"type": "relay", "to": "s", "payload": payload}, "INVALID_MESSAGE")
    assert error.message.startswith("relay message: payload: ")


def test_relay_room_may_not_be_empty() -> None:
    error = _refused({"type": "relay", "to": "s", "room": "", "payload": {}}, "INVALID_MESSAGE")
    assert error.message.startswith("relay message: room: ")


def _gpus(count: int) -> list[dict[str, Any]]:
    return [{"index": i, "name": "GPU", "memory_total_mb": 1024} for i in range(count)]


def test_sixty_four_gpus_are_accepted() -> None:
    message = decode_peer(json.dumps(_register_dict(capabilities={"name": "n", "gpus": _gpus(64)})))
    assert isinstance(message, Register)
    assert len(message.capabilities.gpus) == 64


@pytest.mark.parametrize(
    ("capabilities", "where"),
    [
        ({"name": "n", "gpus": _gpus(65)}, "capabilities.gpus"),
        ({"name": ""}, "capabilities.name"),
        ({"name": "n" * 65}, "capabilities.name"),
        ({}, "capabilities.name"),
        ({"name": "n", "hostname": "h" * 257}, "capabilities.hostname"),
        ({"name": "n", "accelerator": "tpu"}, "capabilities.accelerator"),
        ({"name": "n", "backends": ["b"] * 17}, "capabilities.backends"),
        ({"name": "n", "backends": ["b" * 33]}, "capabilities.backends.0"),
        ({"name": "n", "mounts": ["m"] * 65}, "capabilities.mounts"),
        ({"name": "n", "max_concurrent_jobs": 0}, "capabilities.max_concurrent_jobs"),
        ({"name": "n", "max_concurrent_jobs": 65}, "capabilities.max_concurrent_jobs"),
        ({"name": "n", "sleap_nn_version": "9" * 65}, "capabilities.sleap_nn_version"),
        (
            {"name": "n", "gpus": [{"index": -1, "name": "g", "memory_total_mb": 1}]},
            "capabilities.gpus.0.index",
        ),
        (
            {"name": "n", "gpus": [{"index": 0, "name": "g", "memory_total_mb": -1}]},
            "capabilities.gpus.0.memory_total_mb",
        ),
        ({"name": "n", "gpus": [{"index": 0, "name": "g"}]}, "capabilities.gpus.0.memory_total_mb"),
    ],
)
def test_capability_limits(capabilities: dict[str, Any], where: str) -> None:
    error = _refused(_register_dict(capabilities=capabilities), "INVALID_MESSAGE")
    assert error.message.startswith(f"register message: {where}: "), error.message


@pytest.mark.parametrize(
    ("message", "where"),
    [
        (_register_dict(status="crashed"), "status"),
        (_register_dict(running_jobs=-1), "running_jobs"),
        (_register_dict(running_jobs=1025), "running_jobs"),
        ({"type": "register", "capabilities": {"name": "n"}}, "worker_id"),
        ({"type": "heartbeat", "gpus": _gpus(65)}, "gpus"),
        ({"type": "heartbeat", "status": "gone"}, "status"),
        ({"type": "reauth", "token": ""}, "token"),
        ({"type": "reauth", "token": "t" * 4097}, "token"),
        ({"type": "reauth"}, "token"),
        ({"type": "ping", "nonce": "n" * 65}, "nonce"),
    ],
)
def test_field_limits(message: dict[str, Any], where: str) -> None:
    error = _refused(message, "INVALID_MESSAGE")
    assert error.message.startswith(f"{message['type']} message: {where}: "), error.message


# ---------------------------------------------------------------- anything in, typed out


def _check_total(data: str | bytes) -> None:
    try:
        message = decode_peer(data)
    except ProtocolError as exc:
        assert exc.code in {
            "MALFORMED",
            "UNKNOWN_TYPE",
            "UNSUPPORTED_VERSION",
            "MESSAGE_TOO_LARGE",
            "INVALID_MESSAGE",
        }
        assert isinstance(exc.message, str)
        return
    assert isinstance(message, PEER_TYPES)
    assert decode_peer(encode(message)) == message


_FAST = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@_FAST
@given(st.text())
def test_any_text_is_a_message_or_a_protocol_error(text: str) -> None:
    _check_total(text)


@_FAST
@given(st.binary())
def test_any_bytes_are_a_message_or_a_protocol_error(data: bytes) -> None:
    _check_total(data)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_KEYS = st.sampled_from(
    [
        "to",
        "room",
        "payload",
        "worker_id",
        "capabilities",
        "status",
        "running_jobs",
        "gpus",
        "token",
        "nonce",
        "name",
        "sender",
        "v",
    ]
)


@_FAST
@given(
    kind=st.sampled_from(["register", "heartbeat", "relay", "reauth", "ping", "welcome", "x"]),
    fields=st.dictionaries(_KEYS, _JSON, max_size=5),
)
def test_any_json_object_is_a_message_or_a_protocol_error(
    kind: str, fields: dict[str, Any]
) -> None:
    _check_total(json.dumps({"type": kind, **fields}))


@_FAST
@given(
    to=st.text(max_size=70),
    room=st.none() | st.text(max_size=70),
    payload=st.dictionaries(st.text(max_size=8), _JSON, max_size=6),
)
def test_any_relay_is_a_message_or_a_protocol_error(
    to: str, room: str | None, payload: dict[str, Any]
) -> None:
    _check_total(json.dumps({"type": "relay", "to": to, "room": room, "payload": payload}))
