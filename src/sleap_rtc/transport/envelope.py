"""What a relayed payload carries for a channel: open, answer, data, close.

Both the relay transport and WebRTC signaling use these; each side validates
them as typed messages before acting on them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

_CH = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
_SDP = Annotated[str, Field(max_length=48 * 1024)]


class _Env(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ch: _CH


class Open(_Env):
    """A client asks for a channel: over WebRTC (with its offer) or through the relay."""

    op: Literal["open"] = "open"
    transport: Literal["webrtc", "relay"]
    sdp: _SDP | None = None


class Answer(_Env):
    op: Literal["answer"] = "answer"
    sdp: _SDP


class Data(_Env):
    """One channel message, relayed through the server."""

    op: Literal["data"] = "data"
    msg: dict[str, Any]


class Close(_Env):
    op: Literal["close"] = "close"
    reason: Annotated[str, Field(max_length=512)] = ""


Envelope = Annotated[Open | Answer | Data | Close, Field(discriminator="op")]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Envelope)


def parse_envelope(payload: dict[str, Any]) -> Open | Answer | Data | Close | None:
    """The envelope in a relayed payload, or None when it isn't a valid one."""
    try:
        result: Open | Answer | Data | Close = _ADAPTER.validate_python(payload)
    except ValidationError:
        return None
    return result
