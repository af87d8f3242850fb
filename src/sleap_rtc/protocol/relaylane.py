"""Relay lanes: bulk frames through the server when the worker can't be reached directly.

Both ends open a WebSocket to ``/v1/lane`` and say who they are in one text
message. The worker comes first, with its key, the id it registered under, the
SHA-256 of a fresh token and the account it is for (the peer of the control
session that asked); the server answers ``waiting``. The client comes next, with
its access token and the token itself. The server pairs the two when the digest
matches and the client is that account, answers ``paired`` to both, and from then
on passes binary messages, each one lane frame (:mod:`sleap_rtc.protocol.transfer`),
from one to the other, within a per-user rate and a server-wide cap.

The token travels over the control channel only, so only the client of that
session can pair; the server can read the frames, as it can read a relayed channel.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from sleap_rtc.protocol.codec import ProtocolError
from sleap_rtc.protocol.transfer import FRAME, FRAME_BYTES

#: The largest binary message on a relay lane: one frame with the longest id.
MAX_LANE_MESSAGE: Final = FRAME.size + 64 + FRAME_BYTES
#: How long a worker's half waits for its client before the server closes it.
PAIR_TIMEOUT_S: Final = 15.0

T = TypeVar("T")
_HEX64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
_ID = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]


class _Hello(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkerLaneHello(_Hello):
    """The worker's half: which registered worker, whose lane, and the token's digest."""

    role: Literal["worker"] = "worker"
    worker_id: _ID
    user_id: _ID
    digest: _HEX64


class ClientLaneHello(_Hello):
    """The client's half: the token the worker gave it over the control channel."""

    role: Literal["client"] = "client"
    token: _HEX64


class LaneStatus(_Hello):
    """The server's word to an end: ``waiting`` (worker), ``paired`` (both), or why not."""

    op: Literal["waiting", "paired", "refused"]
    message: Annotated[str, Field(max_length=512)] = ""


LaneHello = Annotated[WorkerLaneHello | ClientLaneHello, Field(discriminator="role")]
_HELLO: TypeAdapter[WorkerLaneHello | ClientLaneHello] = TypeAdapter(LaneHello)
_STATUS: TypeAdapter[LaneStatus] = TypeAdapter(LaneStatus)


def decode_hello(text: str) -> WorkerLaneHello | ClientLaneHello:
    """The first message of a lane socket; ProtocolError ``INVALID_MESSAGE`` otherwise."""
    return _decode(_HELLO, text, "lane hello")


def decode_status(text: str | bytes) -> LaneStatus:
    """The server's answer on a lane socket; ProtocolError when it is none."""
    return _decode(_STATUS, text, "lane status")


def _decode(adapter: TypeAdapter[T], text: str | bytes, what: str) -> T:
    if isinstance(text, bytes) or len(text) > 1024:
        raise ProtocolError("INVALID_MESSAGE", f"a {what} is a short JSON text message")
    try:
        return adapter.validate_json(text)
    except ValidationError as exc:
        raise ProtocolError("INVALID_MESSAGE", f"not a {what}: {exc.errors()[0]['msg']}") from None
