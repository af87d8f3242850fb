"""Client settings: ``config.toml`` in the config folder, then environment, then flags.

Example ``config.toml``::

    server = "https://sleap-rtc.lab.example.org"
    room = "my-room"          # default for --room

    [notify]                  # pushed to the server by `sleap-rtc notify sync`
    webhook = "https://hooks.slack.com/services/T000/B000/XXXX"
    on_start = false          # also when a job starts running
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sleap_rtc import locations

SERVER_ENV = "SLEAP_RTC_SERVER"
ROOM_ENV = "SLEAP_RTC_ROOM"


class ConfigError(ValueError):
    pass


def config_path() -> Path:
    return locations.config_dir() / "config.toml"


def load_config() -> dict[str, Any]:
    path = config_path()
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: it is not UTF-8 text ({exc})") from None
    return data


def normalize_server_url(url: str) -> str:
    """``host:8000`` → ``http://host:8000``; no trailing slash; only http(s)."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"server URL {url!r} is not usable; expected http(s)://host[:port], "
            "e.g. http://127.0.0.1:8000"
        )
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def resolve_server(flag: str | None, fallback: str | None = None) -> str | None:
    """The server URL from the flag, ``SLEAP_RTC_SERVER``, config.toml, then ``fallback``."""
    value = flag or os.environ.get(SERVER_ENV) or load_config().get("server") or fallback
    return normalize_server_url(str(value)) if value else None


def resolve_room(flag: str | None) -> str | None:
    value = flag or os.environ.get(ROOM_ENV) or load_config().get("room")
    return str(value) if value else None


@dataclass(frozen=True)
class NotifySettings:
    """The ``[notify]`` table: your webhook (None if not given) and whether it hears starts."""

    webhook: str | None = None
    on_start: bool = False


def notify_settings() -> NotifySettings:
    """``[notify]`` of config.toml; ConfigError naming the key when a value is of the wrong type."""
    table = load_config().get("notify", {})
    where = config_path()
    if not isinstance(table, dict):
        raise ConfigError(f'notify in {where} must be a table ([notify] with webhook = "...")')
    webhook = table.get("webhook")
    if webhook is not None and not isinstance(webhook, str):
        raise ConfigError(f"notify.webhook in {where} must be a string (the webhook URL)")
    on_start = table.get("on_start", False)
    if not isinstance(on_start, bool):
        raise ConfigError(f"notify.on_start in {where} must be true or false, not {on_start!r}")
    unknown = sorted(set(table) - {"webhook", "on_start"})
    if unknown:
        raise ConfigError(
            f"notify in {where} has unknown keys {', '.join(unknown)}; "
            "it takes webhook and on_start"
        )
    return NotifySettings((webhook or "").strip() or None, on_start)
