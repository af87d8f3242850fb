"""A setup check's outcome (``sleap-rtc doctor``), the same shape on every side.

The client's checks (server, login, room, workers) and a worker machine's (sleap-nn,
GPU, sandbox, disk, mounts) both return these, and ``--json`` prints them as they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    """One line of a diagnosis: ``fix`` says what to do when ``ok`` is false."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
