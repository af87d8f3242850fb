"""Durations on the command line: ``90s``, ``15m``, ``12h``, ``30d``, ``2w`` or ``never``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import click

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_duration(text: str, *, allow_never: bool = False) -> timedelta | None:
    """``"30d"`` → 30 days; ``"never"`` → None when allowed. Raises ValueError."""
    if allow_never and text.strip().lower() in ("never", "none", "0"):
        return None
    match = _PATTERN.match(text)
    if not match:
        units = "s, m, h, d or w"
        extra = " or 'never'" if allow_never else ""
        raise ValueError(f"{text!r} is not a duration; use a number and a unit ({units}){extra}")
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return timedelta(seconds=seconds)


class Duration(click.ParamType):
    name = "duration"

    def __init__(self, allow_never: bool = False) -> None:
        self.allow_never = allow_never

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta | None:
        if value is None or isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value), allow_never=self.allow_never)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
