"""Mounts: the only parts of a worker's filesystem a job may name.

Every path a peer sends is resolved (``..`` collapsed, symlinks followed) *before*
it is compared with the mounts, so neither ``..``, nor an absolute path, nor a
symlink inside a mount that points elsewhere can reach outside. The mount roots
are resolved too, so a mount configured through a symlinked parent still
compares equal to the real location.

The mount check comes before any existence check: a peer learns nothing about
what exists outside the mounts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sleap_rtc.jobs.problems import Problem, ProblemCode

#: Longest path string accepted from a peer (Linux PATH_MAX) and longest component.
MAX_PATH_CHARS = 4096
MAX_NAME_CHARS = 255

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Mount:
    """A folder the worker shares with jobs, under a short human label."""

    path: Path
    label: str
    read_only: bool = False
    #: Files here may be loaded as checkpoints (which can hold code). False for the
    #: upload folder of a worker without a sandbox.
    trusted: bool = True

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], label: str | None = None, *, read_only: bool = False
    ) -> Mount:
        """Make a mount, resolving its path; raise ValueError naming what is wrong."""
        raw = os.fspath(path)
        if not raw or not os.path.isabs(os.path.expanduser(raw)):
            raise ValueError(f"mount path {raw!r} must be an absolute path")
        real = Path(os.path.realpath(os.path.expanduser(raw)))
        if not real.is_dir():
            raise ValueError(f"mount path {raw!r} is not an existing folder")
        name = label or real.name or "root"
        if not _LABEL.match(name):
            raise ValueError(f"mount label {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
        return cls(path=real, label=name, read_only=read_only)

    @classmethod
    def parse(cls, text: str) -> Mount:
        """Parse the command-line form ``PATH[:LABEL][:ro]``."""
        parts = text.split(":")
        read_only = False
        if len(parts) > 1 and parts[-1] in ("ro", "rw"):
            read_only = parts.pop() == "ro"
        label = parts.pop() if len(parts) > 1 else None
        return cls.create(":".join(parts), label, read_only=read_only)


class Mounts:
    """The set of mounts of one worker, and the rule that checks a peer's path."""

    def __init__(self, mounts: list[Mount]) -> None:
        labels = [m.label for m in mounts]
        dupes = sorted({label for label in labels if labels.count(label) > 1})
        if dupes:
            raise ValueError(f"mount labels must be unique; repeated: {', '.join(dupes)}")
        self._mounts = list(mounts)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._mounts)

    def __len__(self) -> int:
        return len(self._mounts)

    def by_label(self, raw: str) -> str | None:
        """``LABEL`` or ``LABEL/rest`` as the absolute path it names in that mount (None
        when ``raw`` is absolute or starts with no mount's label)."""
        if raw.startswith("/"):
            return None
        label, _, rest = raw.partition("/")
        for mount in self._mounts:
            if mount.label == label:
                return os.path.join(mount.path, rest) if rest else str(mount.path)
        return None

    def containing(self, real: Path) -> Mount | None:
        """The mount whose folder holds the already-resolved path ``real``, if any."""
        inside = [m for m in self._mounts if real.is_relative_to(m.path)]
        # Nested mounts: the deepest one decides (e.g. a read-only folder in a share).
        return max(inside, key=lambda m: len(m.path.parts), default=None)

    def resolve(
        self, field: str, raw: str, *, base: Path | None = None, for_writing: bool = False
    ) -> tuple[Path | None, Problem | None]:
        """Resolve a peer's path and check it lies inside a mount.

        ``base`` allows relative paths (resolved against it); without it only
        absolute paths are accepted. Existence is *not* checked here.
        Returns ``(real_path, None)`` or ``(None, problem)``.
        """
        problem = _syntax_problem(field, raw, relative_ok=base is not None)
        if problem:
            return None, problem
        joined = os.path.join(base, raw) if base is not None else raw
        try:
            real = Path(os.path.realpath(joined))
        except (OSError, ValueError) as exc:  # e.g. a symlink loop
            return None, Problem(
                field=field,
                value=raw,
                code=ProblemCode.INVALID_PATH,
                message=f"Path can't be resolved: {raw} ({exc})",
            )
        mount = self.containing(real)
        if mount is None:
            return None, Problem(
                field=field,
                value=raw,
                code=ProblemCode.ACCESS_DENIED,
                message=(
                    f"Access denied: {raw} is outside the worker's mounts "
                    f"({', '.join(m.label for m in self._mounts) or 'none'}); "
                    "use a path under one of them or ask the worker's "
                    "administrator to add a mount"
                ),
            )
        if for_writing and mount.read_only:
            return None, Problem(
                field=field,
                value=raw,
                code=ProblemCode.READ_ONLY,
                message=(
                    f"{raw} is in the read-only mount '{mount.label}'; "
                    "choose a location in a writable mount"
                ),
            )
        return real, None


def _syntax_problem(field: str, raw: str, *, relative_ok: bool) -> Problem | None:
    def bad(message: str, value: str | None = raw) -> Problem:
        return Problem(field=field, value=value, code=ProblemCode.INVALID_PATH, message=message)

    if not isinstance(raw, str) or not raw.strip():
        return bad("Path is empty; give the full path on the worker", value=None)
    if "\x00" in raw:
        return bad(
            "Path contains a NUL character; give a plain path on the worker",
            value=raw.replace("\x00", "\\0")[:200],
        )
    if len(raw) > MAX_PATH_CHARS:
        return bad(
            f"Path is {len(raw)} characters long; at most {MAX_PATH_CHARS} are allowed",
            value=raw[:200] + "…",
        )
    if any(len(part) > MAX_NAME_CHARS for part in raw.split("/")):
        return bad(f"Path has a name longer than {MAX_NAME_CHARS} characters", value=raw[:200])
    if raw.startswith("~"):
        return bad(
            f"Path {raw} starts with '~', which the worker does not expand; "
            "give the absolute path on the worker"
        )
    if not relative_ok and not raw.startswith("/"):
        return bad(f"Path {raw} is relative; give the absolute path on the worker")
    return None
