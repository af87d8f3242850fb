"""Where sleap-rtc keeps its config, credentials and state.

``SLEAP_RTC_HOME`` puts everything under one folder (tests and containers use it
so nothing lands in the real home directory). Without it the platform's usual
places are used (``platformdirs``): config in the user config dir, job state and
models in the user data dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "sleap-rtc"
HOME_ENV = "SLEAP_RTC_HOME"


def _home() -> Path | None:
    value = os.environ.get(HOME_ENV, "").strip()
    return Path(value).expanduser().absolute() if value else None


def config_dir() -> Path:
    """Folder holding ``config.toml`` and ``worker.toml``."""
    home = _home()
    return home / "config" if home else Path(platformdirs.user_config_dir(APP_NAME))


def data_dir() -> Path:
    """Folder for durable state: the worker's job store, logs and default model output."""
    home = _home()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP_NAME))


def cache_dir() -> Path:
    """Folder for things that may be deleted at any time (demo data, scratch)."""
    home = _home()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP_NAME))
