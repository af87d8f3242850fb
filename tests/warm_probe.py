"""A small click command that warm-engine tests fork in place of sleap-nn.

It reports what the step sees (ids, working folder, environment, argv) as one JSON
line, tries the reads and writes it is asked to, and then sleeps, ignores signals
or exits as told, so a test can put a forked step in any state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import click


def _attempt(action: str, path: str) -> str:
    try:
        if action == "read":
            with open(path, "rb") as f:
                f.read(1)
        else:
            with open(path, "w") as f:
                f.write("x")
        return "allowed"
    except OSError as exc:
        return type(exc).__name__


def _capabilities() -> dict[str, int]:
    with open("/proc/self/status") as f:
        lines = [line.split() for line in f if line.startswith("Cap")]
    return {line[0].rstrip(":"): int(line[1], 16) for line in lines}


@click.command()
@click.option("--read", "reads", multiple=True)
@click.option("--write", "writes", multiple=True)
@click.option("--sleep", type=float, default=0.0)
@click.option("--exit-code", type=int, default=0)
@click.option("--ignore-signals", is_flag=True)
@click.option("--grandchild", is_flag=True, help="start a long sleep in the same group")
def probe(
    reads: tuple[str, ...],
    writes: tuple[str, ...],
    sleep: float,
    exit_code: int,
    ignore_signals: bool,
    grandchild: bool,
) -> None:
    if ignore_signals:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    report = {
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "sid": os.getsid(0),
        "ppid": os.getppid(),
        "cwd": os.getcwd(),
        "argv0": sys.argv[0],
        "env": dict(os.environ),
        "stdin": os.read(0, 10).decode(errors="replace"),
        "caps": _capabilities(),
        "reads": {path: _attempt("read", path) for path in reads},
        "writes": {path: _attempt("write", path) for path in writes},
    }
    if grandchild:
        report["grandchild"] = subprocess.Popen(["sleep", "600"]).pid
    print(json.dumps(report), flush=True)
    print("probe: to stderr", file=sys.stderr, flush=True)
    deadline = time.monotonic() + sleep
    while time.monotonic() < deadline:
        time.sleep(0.05)
    sys.exit(exit_code)
