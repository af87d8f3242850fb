"""A real terminal for tests: one tmux server per test on its own socket.

Commands run in an 80×24 pane; tests type into it (``send-keys``) and read what
the screen shows (``capture-pane``), as a user would.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REQUIRE_ENV = "SLEAP_RTC_REQUIRE_TMUX"


def need_tmux() -> str:
    """tmux's path; skips the test without it (fails instead if SLEAP_RTC_REQUIRE_TMUX=1)."""
    tmux = shutil.which("tmux")
    if tmux is None:
        reason = "tmux is not installed (apt-get install tmux)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return tmux


class Terminal:
    """A tmux pane running one command; the pane stays as it was after the command ends."""

    def __init__(self, folder: Path, *, width: int = 80, height: int = 24) -> None:
        self.tmux = need_tmux()
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        # A short path: a unix socket's name is limited to about 100 bytes.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="sleap-rtc-tmux-"))
        self.socket = self._socket_dir / "s"
        self.width, self.height = width, height
        self.exit_file = folder / "exit-code"

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            [self.tmux, "-u", "-S", str(self.socket), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout

    def start(self, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Terminal:
        """Run ``argv`` in a fresh pane with exactly ``env`` (plus a UTF-8 locale)."""
        script = self.folder / "run.sh"
        lines = ["#!/bin/sh"]
        env = {**env, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TERM": "tmux-256color"}
        lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
        if cwd is not None:
            lines.append(f"cd {shlex.quote(str(cwd))}")
        # Ctrl-C is for the command: the shell around it carries on (a handler, not an
        # ignore, so the command still gets the default SIGINT behaviour).
        lines.append("trap : INT")
        lines.append(shlex.join(argv))
        lines.append(f"echo $? > {shlex.quote(str(self.exit_file))}")
        # Keep the pane (and what it shows) after the command ends; close() ends it.
        lines.append("exec sleep 3600")
        script.write_text("\n".join(lines) + "\n")
        script.chmod(0o700)
        # No status line: the command gets the whole width × height.
        config = self.folder / "tmux.conf"
        config.write_text("set -g status off\n")
        self._tmux(
            "-f",
            str(config),
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            str(self.width),
            "-y",
            str(self.height),
            f"sh {shlex.quote(str(script))}",
        )
        return self

    def screen(self) -> str:
        """What the pane shows now, line by line (trailing blanks removed)."""
        text = self._tmux("capture-pane", "-p", "-J", "-t", "t")
        return "\n".join(line.rstrip() for line in text.splitlines()).rstrip()

    def send(self, *keys: str) -> None:
        """Press keys: tmux key names (``Down``, ``Enter``, ``Escape``, ``BSpace``…)."""
        self._tmux("send-keys", "-t", "t", *keys)

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "t", "-l", text)

    def wait_for(self, pattern: str, timeout: float = 30) -> str:
        """The screen, once ``pattern`` (a regex) appears on it; fails showing the screen."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if re.search(pattern, screen, re.MULTILINE):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not on the screen after {timeout} s:\n{screen}")

    def exit_code(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exit_file.is_file() and self.exit_file.read_text().strip():
                return int(self.exit_file.read_text())
            time.sleep(0.1)
        raise AssertionError(f"the command did not end within {timeout} s:\n{self.screen()}")

    def close(self) -> None:
        if self.socket.exists():
            subprocess.run(
                [self.tmux, "-S", str(self.socket), "kill-server"],
                capture_output=True,
                timeout=10,
            )
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
