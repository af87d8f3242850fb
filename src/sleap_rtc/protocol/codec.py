"""The one JSON codec both protocols use: size limit, strict JSON, version, typed message."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import TypeAdapter, ValidationError


class ProtocolError(ValueError):
    """A message that can't be accepted; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: A UTF-16 surrogate, escaped (``\ud800``) or raw: JSON allows one alone, UTF-8 doesn't.
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}|[\ud800-\udfff]")


def _has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def load_object(data: str | bytes, *, max_bytes: int, version: int, name: str) -> dict[str, Any]:
    """Parse one JSON object of at most ``max_bytes`` (UTF-8) speaking ``version``.

    NaN and Infinity are refused, and nesting too deep for the parser is a
    protocol error, not a crash. ``name`` names the protocol in messages.
    """
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    if size > max_bytes:
        raise ProtocolError(
            "MESSAGE_TOO_LARGE", f"message is {size} bytes; the limit is {max_bytes}"
        )
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("MALFORMED", f"message is not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("MALFORMED", "message is nested too deeply") from None
    if not isinstance(value, dict):
        raise ProtocolError("MALFORMED", "message must be a JSON object")
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    if _SURROGATE.search(text) and _has_lone_surrogate(value):
        # Text that can't be UTF-8 would fail later, wherever it is written or sent.
        raise ProtocolError("MALFORMED", "message holds a lone UTF-16 surrogate (not UTF-8 text)")
    sent = value.get("v", version)
    if sent != version:
        raise ProtocolError(
            "UNSUPPORTED_VERSION",
            f"{name} version {sent!r} is not supported; this side speaks "
            f"{version}. Upgrade sleap-rtc on the older side.",
        )
    return value


def validate(adapter: TypeAdapter[Any], value: dict[str, Any]) -> Any:
    """The typed message for ``value``; unknown types and bad fields are ProtocolErrors."""
    kind = value.get("type")
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            raise ProtocolError("UNKNOWN_TYPE", f"unknown message type {kind!r}") from None
        where = ".".join(str(p) for p in first["loc"][1:]) or "message"
        raise ProtocolError("INVALID_MESSAGE", f"{kind} message: {where}: {first['msg']}") from None
    except RecursionError:
        raise ProtocolError("MALFORMED", "message is nested too deeply") from None
