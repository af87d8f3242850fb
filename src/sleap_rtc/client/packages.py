"""Training packages: a zip of config YAML(s) and labels, uploaded and unpacked on a worker.

The package route uploads data on every run; naming files on storage the worker
mounts is the better way, which is why the CLI marks ``--pkg-path`` deprecated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from sleap_rtc.client.errors import ClientError
from sleap_rtc.client.jobs import WorkerSession
from sleap_rtc.jobs.specs import TrainSpec


def package_train_spec(
    package_name: str, files: Sequence[str], options: dict[str, Any], root: str | None = None
) -> TrainSpec:
    """The job for an unpacked package: its configs (unless ``config_paths`` names
    some) and its only labels file (unless ``labels_path`` is given).

    A relative ``--config`` or ``--labels`` names a member of the package: its path
    inside the package (``root`` is where it was unpacked) or its file name, if only
    one member has it.
    """
    configs = sorted(f for f in files if f.endswith((".yaml", ".yml")))
    labels = sorted(f for f in files if f.endswith(".slp"))
    if not configs:
        raise ClientError(f"{package_name} holds no config YAML (.yaml); nothing to train")
    fields = {k: v for k, v in options.items() if k in TrainSpec.model_fields}
    named = [_member(package_name, files, root, c) for c in options.get("config_paths") or ()]
    fields["config_paths"] = named or configs
    if fields.get("labels_path"):
        fields["labels_path"] = _member(package_name, files, root, fields["labels_path"])
    else:
        if len(labels) > 1:
            names = ", ".join(_inside(root, f) for f in labels)
            raise ClientError(
                f"{package_name} holds {len(labels)} .slp files ({names}); say which with "
                f"--labels, e.g. --labels {_inside(root, labels[0])}"
            )
        fields["labels_path"] = labels[0] if labels else None
    return TrainSpec(**fields)


def _inside(root: str | None, path: str) -> str:
    """``path`` relative to the package's folder on the worker (as the user named it)."""
    if root and path.startswith(root.rstrip("/") + "/"):
        return path[len(root.rstrip("/")) + 1 :]
    return PurePosixPath(path).name


def _member(package_name: str, files: Sequence[str], root: str | None, name: str) -> str:
    """The worker path of the member ``name`` names; an absolute path is taken as it is."""
    if PurePosixPath(name).is_absolute():
        return name
    wanted = PurePosixPath(name).as_posix().lstrip("./")
    by_path = [f for f in files if _inside(root, f) == wanted]
    by_name = [f for f in files if PurePosixPath(f).name == wanted]
    found = by_path or by_name
    if len(found) == 1:
        return found[0]
    if not found:
        raise ClientError(f"{package_name} holds no {name!r}; name a file inside it")
    choices = ", ".join(_inside(root, f) for f in found)
    raise ClientError(f"{package_name} holds several files named {name!r}; say which: {choices}")


async def upload_package(
    session: WorkerSession, package: Path, options: dict[str, Any]
) -> TrainSpec:
    """Upload and unpack ``package`` on the session's worker; the job that trains on it."""
    done = await session.upload(package, unpack=True)
    return package_train_spec(package.name, done.files, options, root=done.path)
