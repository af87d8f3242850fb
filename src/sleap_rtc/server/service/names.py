"""Which names users may give to accounts, rooms and worker keys."""

from __future__ import annotations

import re

from sleap_rtc.protocol.api import NAME_PATTERN
from sleap_rtc.server.errors import invalid

_NAME = re.compile(NAME_PATTERN)


def check_name(kind: str, name: str) -> None:
    """Names of users and rooms: a strict set of characters, as they go into URLs and commands."""
    if not _NAME.fullmatch(name):
        raise invalid(
            f"{kind} name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def check_label(kind: str, name: str) -> None:
    """Free-form names (worker keys): any printable text, as they are shown in tables and logs."""
    if not name.strip() or len(name) > 64 or not name.isprintable():
        raise invalid(
            f"{kind} name {name!r} is not allowed: use 1-64 printable characters, "
            "without control characters or line breaks"
        )
