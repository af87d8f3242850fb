"""A real browser for tests: Debian's headless Chromium, driven by Playwright.

Nothing is downloaded: Playwright drives the system's ``chromium``. Without it
the tests skip, or fail when ``SLEAP_RTC_REQUIRE_BROWSER=1`` (as in CI).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REQUIRE_ENV = "SLEAP_RTC_REQUIRE_BROWSER"

#: Flags for a closed network: without them Chromium keeps reaching for Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def need_chromium() -> str:
    """Chromium's path; skips without it (fails instead if SLEAP_RTC_REQUIRE_BROWSER=1)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    reason = ""
    if path is None:
        reason = "chromium is not installed (apt-get install chromium)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (pip install playwright)"
    if reason:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    assert path is not None
    return path


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium (a Playwright ``Browser``) with its own empty profile folder."""
    from playwright.sync_api import sync_playwright

    path = need_chromium()
    profile.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=path, args=CHROMIUM_ARGS, env={**os.environ, "HOME": str(profile)}
        )
        try:
            yield browser
        finally:
            browser.close()
