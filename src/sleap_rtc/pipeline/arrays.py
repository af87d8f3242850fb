"""How an array stage (track over several files) lays out its files: the folder each
file's outputs go to, and how the files spread over the tasks of its array job."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def file_folders(files: Sequence[Path]) -> list[str]:
    """The folder each file of an array stage gets: the file's name without its suffix
    (other characters than letters, digits, ``_-.`` as ``_``); files that share a name
    get their folder's name before it (``day1_cage1``, ``day2_cage1``), and ``-2``,
    ``-3``… if that is still taken."""

    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", text).lstrip(".") or "file"

    stems = [clean(file.stem) for file in files]
    shared = {stem for stem in stems if stems.count(stem) > 1}
    names: list[str] = []
    taken: set[str] = set()
    for file, stem in zip(files, stems, strict=True):
        base = f"{clean(file.parent.name)}_{stem}" if stem in shared else stem
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        names.append(name)
    return names


@dataclass(frozen=True)
class ArrayShape:
    """How an array stage's files are spread over the tasks of its array job: task N
    takes files ``N*per_task`` to ``N*per_task + per_task - 1``, so the task ids stay
    under the cluster's MaxArraySize (one file per task unless there are more)."""

    files: int
    per_task: int

    @classmethod
    def fit(cls, files: int, max_array_size: int) -> ArrayShape:
        return cls(files, max(1, -(-files // max(1, max_array_size))))

    @property
    def tasks(self) -> int:
        return -(-self.files // self.per_task)

    def task_of(self, index: int) -> int:
        return index // self.per_task

    def option(self, tasks: Sequence[int] | None = None, parallelism: int | None = None) -> str:
        """``--array=`` with ``tasks`` (every task by default) as ranges, at most
        ``parallelism`` running at once."""
        wanted = sorted(set(range(self.tasks) if tasks is None else tasks))
        ranges: list[str] = []
        start = previous = wanted[0]
        for task in [*wanted[1:], None]:
            if task is not None and task == previous + 1:
                previous = task
                continue
            ranges.append(str(start) if start == previous else f"{start}-{previous}")
            if task is not None:
                start = previous = task
        limit = f"%{parallelism}" if parallelism else ""
        return f"--array={','.join(ranges)}{limit}"
