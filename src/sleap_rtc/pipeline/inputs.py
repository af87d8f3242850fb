"""A stage's inputs, and the key over them that says whether its outputs are current.

A stage's inputs are what its outputs are made from:

- ``job``: the job it runs (its spec: paths, options; a command stage's lines and
  outputs), as the script writes it;
- ``files``: the identity of every file it reads: the sleap-nn config, labels,
  validation labels, the data track runs on (a file's SHA-256; for files over
  :data:`HASH_LIMIT_BYTES`, such as videos, its size and modification time);
- ``pinned``: the SHA-256 of the manifest it takes pinned artifacts from;
- ``parents``: the key of every stage it needs.

The key is the SHA-256 of all of that. A script writes its stage's inputs into its
manifest when the stage succeeds; a later run reruns a stage whose recorded key
differs from the one it computes now, and because a parent's key is among its
dependents' inputs, every stage downstream of it reruns too. :func:`changes`
says in words what differs, for the plan.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sleap_rtc.jobs.digest import known_sha256

INPUTS_VERSION = 1
#: Files larger than this are known by size and modification time, not by hash.
HASH_LIMIT_BYTES = 256 * 1024 * 1024


def file_identity(path: Path) -> str:
    """``sha256:HEX`` of a file, ``stat:SIZE:MTIME_NS`` for a large one, ``missing`` when
    there is none; remembered while the file's size and time stay the same."""
    try:
        info = path.stat()
    except OSError:
        return "missing"
    if info.st_size > HASH_LIMIT_BYTES:
        return f"stat:{info.st_size}:{info.st_mtime_ns}"
    return f"sha256:{known_sha256(path)}"


def stage_inputs(
    job: Mapping[str, Any],
    files: Mapping[str, Path | None],
    pinned: Path | None,
    parents: Mapping[str, str],
) -> dict[str, Any]:
    """The inputs of one stage (see the module's description)."""
    return {
        "version": INPUTS_VERSION,
        "job": dict(job),
        "files": {
            role: {"path": str(path), "id": file_identity(path)}
            for role, path in files.items()
            if path is not None
        },
        "pinned": file_identity(pinned) if pinned is not None else None,
        "parents": dict(parents),
    }


def inputs_key(inputs: Mapping[str, Any]) -> str:
    """The SHA-256 of ``inputs`` in canonical JSON."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _short(value: object, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """What differs between a stage's recorded inputs and its inputs now, in words
    (e.g. ``config changed (centroid.yaml)``, ``max_epochs 3 → 5``); empty when nothing does."""
    if not old or old.get("version") != new.get("version"):
        return ["its outputs don't record their inputs (written by an older sleap-rtc)"]
    found = []
    old_job, new_job = old.get("job") or {}, new.get("job") or {}
    for field in sorted(set(old_job) | set(new_job)):
        if old_job.get(field) != new_job.get(field):
            before, after = old_job.get(field), new_job.get(field)
            found.append(f"{field} {_short(before)} → {_short(after)}")
    old_files, new_files = old.get("files") or {}, new.get("files") or {}
    found += _tracked_changes(old_files, new_files)
    for role in sorted((set(old_files) | set(new_files)) - _tracked_roles(old_files, new_files)):
        before, after = old_files.get(role), new_files.get(role)
        if before is None or after is None:
            found.append(f"{role} {'added' if before is None else 'removed'}")
        elif before.get("path") != after.get("path"):
            pass  # a new path shows in the job's fields already
        elif before.get("id") != after.get("id"):
            name = Path(str(after.get("path"))).name
            found.append(f"{role} changed ({name})")
    if old.get("pinned") != new.get("pinned"):
        found.append("the pinned manifest changed")
    old_parents, new_parents = old.get("parents") or {}, new.get("parents") or {}
    for parent in sorted(set(old_parents) | set(new_parents)):
        if old_parents.get(parent) != new_parents.get(parent):
            found.append(f"{parent} has new inputs")
    return found


def file_role(index: int) -> str:
    """The role of an array stage's ``index``-th file among its inputs."""
    return f"data[{index}]"


def file_inputs(inputs: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The inputs of one file of an array stage (track over several files): the
    stage's, with that file alone as its data, as a one-file track stage would have.
    Its key doesn't depend on where the file is in the list, so adding or reordering
    files leaves the others current. KeyError when the stage has no such file."""
    files = dict(inputs.get("files") or {})
    mine = files[file_role(index)]
    kept = {role: v for role, v in files.items() if not role.startswith("data[")}
    job = {**(inputs.get("job") or {}), "data_path": mine["path"]}
    found = {**inputs, "job": job, "files": {**kept, "data": mine}}
    # A stage that follows an array file by file: that file's key in each parent.
    by_file = found.pop("parent_files", None) or {}
    if by_file:
        found["parents"] = {
            **(inputs.get("parents") or {}),
            **{parent: keys[index] for parent, keys in by_file.items()},
        }
    return found


def _is_tracked(role: str) -> bool:
    return role == "data" or role.startswith("data[")


def _tracked_roles(*files: Mapping[str, Any]) -> set[str]:
    return {role for roles in files for role in roles if _is_tracked(role)}


def _tracked_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed among the files track runs on (one, or an array's), by path: files
    added, removed, or changed in place; in words."""
    before = {v.get("path"): v.get("id") for r, v in old.items() if _is_tracked(r)}
    after = {v.get("path"): v.get("id") for r, v in new.items() if _is_tracked(r)}
    if len(before) <= 1 and len(after) <= 1 and before.keys() != after.keys():
        return []  # one file for another: the job's data_path says so
    found = []
    added = [p for p in after if p not in before]
    removed = [p for p in before if p not in after]
    changed = [p for p in after if p in before and before[p] != after[p]]
    for paths, what in ((added, "added"), (removed, "removed")):
        if paths:
            names = ", ".join(Path(str(p)).name for p in paths[:3])
            more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
            found.append(f"{len(paths)} file(s) to track {what} ({names}{more})")
    for path in changed[:3]:
        found.append(f"data changed ({Path(str(path)).name})")
    if len(changed) > 3:
        found.append(f"{len(changed) - 3} more files to track changed")
    return found
