"""Messages on the server's WebSocket: registration, presence, signaling relay.

Sans-I/O: this module turns text into typed messages and back, and knows nothing
of sockets. Every message is one JSON object with a ``type`` and a protocol
version ``v``; anything else is refused with a :class:`ProtocolError` whose
``code`` goes back to the peer in an :class:`ErrorMessage`.

Workers send ``register`` first, then ``heartbeat`` and ``job_report`` (their
jobs, for the server's job index); both kinds of peer send ``relay`` (an opaque
payload for another member of the same room). The server answers ``registered``
/ ``welcome`` and delivers ``relay`` with a ``sender`` it filled in from the
authenticated connection — a ``from`` in the body is ignored.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

from sleap_rtc.protocol.codec import ProtocolError, load_object, validate
from sleap_rtc.protocol.index import (
    MAX_LOG_LINES_PER_REPORT,
    MAX_POINTS_PER_REPORT,
    IndexedJob,
    LogLine,
    LossPoint,
)

PROTOCOL_VERSION: Final = 1
#: Largest message either side accepts, in bytes of encoded JSON.
MAX_MESSAGE_BYTES = 64 * 1024
#: Largest relay payload, so a relayed message always fits in MAX_MESSAGE_BYTES.
MAX_PAYLOAD_BYTES = 60 * 1024
#: Deepest nesting of objects and lists accepted in a relay payload.
MAX_PAYLOAD_DEPTH = 32


def _printable(value: str) -> str:
    """Refuse text that would break a terminal table or a log line (newlines, escapes)."""
    if not value.isprintable():
        raise ValueError("must be printable text, without control characters or line breaks")
    return value


def loggable(value: object) -> str:
    """``value`` as text safe for one log line: control characters and line breaks escaped.

    Names, codes and reasons come from peers; written raw, a newline in one
    would start a forged log line.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    known = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if ch in known:
        return known[ch]
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


_ID = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
_NAME = Annotated[str, Field(min_length=1, max_length=64)]
_SHORT = Annotated[str, Field(max_length=256)]
#: Text a worker reports about itself: shown in tables and logs, so printable only.
_LABEL = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_printable)]
_TEXT = Annotated[str, Field(max_length=256), AfterValidator(_printable)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1


class Gpu(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0, le=1024)
    name: _TEXT
    memory_total_mb: int = Field(ge=0)
    memory_free_mb: int | None = Field(default=None, ge=0)
    #: How busy the GPU's cores are, in percent (None when the worker can't tell).
    utilization_pct: int | None = Field(default=None, ge=0, le=100)


WorkerStatus = Literal["idle", "busy"]


class Capabilities(BaseModel):
    """What a worker offers; sent at registration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: _LABEL
    hostname: _TEXT = ""
    accelerator: Literal["cuda", "mps", "cpu"] = "cpu"
    gpus: list[Gpu] = Field(default_factory=list, max_length=64)
    sleap_nn_version: Annotated[str, Field(max_length=64), AfterValidator(_printable)] | None = None
    sleap_rtc_version: Annotated[str, Field(max_length=64), AfterValidator(_printable)] = ""
    backends: list[Annotated[str, Field(max_length=32), AfterValidator(_printable)]] = Field(
        default_factory=list, max_length=16
    )
    mounts: list[Annotated[str, Field(max_length=64), AfterValidator(_printable)]] = Field(
        default_factory=list, max_length=64
    )
    max_concurrent_jobs: int = Field(default=1, ge=1, le=64)
    #: How the worker confines jobs: "landlock" or "off" (jobs run unconfined).
    sandbox: Annotated[str, Field(max_length=32)] = "off"


class Register(_Message):
    type: Literal["register"] = "register"
    worker_id: _ID
    capabilities: Capabilities
    status: WorkerStatus = "idle"
    running_jobs: int = Field(default=0, ge=0, le=1024)


class Heartbeat(_Message):
    """Sent every ``heartbeat_interval`` seconds; may carry fresh GPU free memory."""

    type: Literal["heartbeat"] = "heartbeat"
    status: WorkerStatus = "idle"
    running_jobs: int = Field(default=0, ge=0, le=1024)
    gpus: list[Gpu] | None = Field(default=None, max_length=64)


class Relay(_Message):
    """Ask the server to pass ``payload`` to peer ``to`` in ``room``.

    A worker may leave ``room`` out (it belongs to exactly one); a client must name it.
    """

    type: Literal["relay"] = "relay"
    to: _ID
    room: _NAME | None = None
    payload: dict[str, Any]


class Reauth(_Message):
    """A client replaces its access token on a long-lived connection."""

    type: Literal["reauth"] = "reauth"
    token: Annotated[str, Field(min_length=1, max_length=4096)]


class Ping(_Message):
    type: Literal["ping"] = "ping"
    nonce: Annotated[str, Field(max_length=64)] = ""


class JobReport(_Message):
    """A worker's job as it is now, for the server's job index (workers only).

    ``points`` are loss points the server hasn't had yet; a long series comes in
    several reports. ``log`` are the job's newest log lines since the last report
    (numbered, so a reader sees where lines were skipped).
    """

    type: Literal["job_report"] = "job_report"
    job: IndexedJob
    points: list[LossPoint] = Field(default_factory=list, max_length=MAX_POINTS_PER_REPORT)
    log: list[LogLine] = Field(default_factory=list, max_length=MAX_LOG_LINES_PER_REPORT)


ControlAction = Literal["stop", "cancel"]


class JobControlResult(_Message):
    """A worker's answer to :class:`JobControl`: done (``ok``) or why not."""

    type: Literal["job_control_result"] = "job_control_result"
    request_id: _ID
    ok: bool
    code: Annotated[str, Field(max_length=64)] = ""
    message: _TEXT = ""


PeerMessage = Annotated[
    Register | Heartbeat | Relay | Reauth | Ping | JobReport | JobControlResult,
    Field(discriminator="type"),
]


class Registered(_Message):
    type: Literal["registered"] = "registered"
    worker_id: _ID
    room: _NAME
    heartbeat_interval: float
    #: The room's id: tickets name it, so a ticket for a deleted room of the same name fails.
    room_id: _ID | None = None
    #: The server's public key (PEM) and issuer name: the worker checks peer tickets with it.
    ticket_public_key: Annotated[str, Field(max_length=4096)] | None = None
    issuer: Annotated[str, Field(max_length=256)] | None = None
    #: The latest ``updated_at`` (the worker's clock) of this worker's jobs in the
    #: server's index: the worker reports every job that changed since. None: the
    #: index has none of its jobs.
    index_since: float | None = None


class Welcome(_Message):
    """First message to a client connection: its session id for relay replies."""

    type: Literal["welcome"] = "welcome"
    session_id: _ID
    user: _NAME


class Sender(BaseModel):
    """Who sent a relayed message, as the server authenticated it.

    For a client, ``id`` is its session, ``user_id`` and ``name`` the account the
    session logged in as: a worker compares them with the subject of the ticket
    the channel presents, so a ticket is no use to anyone it wasn't issued to.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["client", "worker"]
    id: _ID
    room: _NAME
    name: _NAME
    user_id: _ID | None = None


class Delivery(_Message):
    type: Literal["relay"] = "relay"
    sender: Sender
    payload: dict[str, Any]


class Pong(_Message):
    type: Literal["pong"] = "pong"
    nonce: Annotated[str, Field(max_length=64)] = ""


class ErrorMessage(_Message):
    type: Literal["error"] = "error"
    code: Annotated[str, Field(max_length=64)]
    message: Annotated[str, Field(max_length=2048)]
    #: The peer a refused relay was for, so only the channels to that peer react.
    peer: _ID | None = None


class JobControl(_Message):
    """The server asks a worker to stop a job early or cancel it, for ``user``.

    Sent when a member presses Stop early / Cancel on the dashboard (or calls the
    API). The server checked that ``user`` owns the job in its index; the worker
    checks it again against its own record, which is the one that counts.
    """

    type: Literal["job_control"] = "job_control"
    request_id: _ID
    job_id: _ID
    action: ControlAction
    user: _NAME


ServerMessage = Annotated[
    Registered | Welcome | Delivery | Pong | ErrorMessage | JobControl,
    Field(discriminator="type"),
]

_PEER = TypeAdapter(PeerMessage)
_SERVER = TypeAdapter(ServerMessage)

#: WebSocket close codes the server uses (4000-4999 are for applications).
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_REPLACED = 4409
CLOSE_HEARTBEAT_TIMEOUT = 4408
CLOSE_PROTOCOL = 4400
CLOSE_GOING_AWAY = 1001
#: A message over MAX_MESSAGE_BYTES (the WebSocket code for "message too big").
CLOSE_TOO_BIG = 1009


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of lists and dicts, without recursion; stops counting past ``limit``."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def _load(text: str | bytes) -> dict[str, Any]:
    return load_object(text, max_bytes=MAX_MESSAGE_BYTES, version=PROTOCOL_VERSION, name="protocol")


def decode_peer(
    text: str | bytes,
) -> Register | Heartbeat | Relay | Reauth | Ping | JobReport | JobControlResult:
    """Parse a message a worker or client sent; raises :class:`ProtocolError`."""
    message = validate(_PEER, _load(text))
    if isinstance(message, Relay):
        if _depth(message.payload, MAX_PAYLOAD_DEPTH) > MAX_PAYLOAD_DEPTH:
            raise ProtocolError(
                "INVALID_MESSAGE",
                f"relay payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels",
            )
        size = len(json.dumps(message.payload, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_PAYLOAD_BYTES:
            raise ProtocolError(
                "MESSAGE_TOO_LARGE",
                f"relay payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES}",
            )
    return message


ServerMessageType = Registered | Welcome | Delivery | Pong | ErrorMessage | JobControl


def decode_server(text: str | bytes) -> ServerMessageType:
    """Parse a message the server sent; raises :class:`ProtocolError`."""
    result: ServerMessageType = validate(_SERVER, _load(text))
    return result


def encode(message: BaseModel) -> str:
    return message.model_dump_json()
