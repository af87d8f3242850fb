"""Training packages: a zip of config YAML(s) and labels, uploaded and unpacked on a worker.

The package route uploads data on every run; naming files on storage the worker
mounts is the better way, which is why the CLI marks ``--pkg-path`` deprecated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sleap_rtc.client.errors import ClientError
from sleap_rtc.client.jobs import WorkerSession
from sleap_rtc.jobs.specs import TrainSpec


def package_train_spec(
    package_name: str, files: Sequence[str], options: dict[str, Any]
) -> TrainSpec:
    """The job for an unpacked package: its configs (unless ``config_paths`` names
    some) and its only labels file (unless ``labels_path`` is given)."""
    configs = sorted(f for f in files if f.endswith((".yaml", ".yml")))
    labels = sorted(f for f in files if f.endswith(".slp"))
    if not configs:
        raise ClientError(f"{package_name} holds no config YAML (.yaml); nothing to train")
    fields = {k: v for k, v in options.items() if k in TrainSpec.model_fields}
    fields["config_paths"] = list(options.get("config_paths") or ()) or configs
    if not fields.get("labels_path"):
        if len(labels) > 1:
            raise ClientError(
                f"{package_name} holds {len(labels)} .slp files; say which with --labels"
            )
        fields["labels_path"] = labels[0] if labels else None
    return TrainSpec(**fields)


async def upload_package(
    session: WorkerSession, package: Path, options: dict[str, Any]
) -> TrainSpec:
    """Upload and unpack ``package`` on the session's worker; the job that trains on it."""
    done = await session.upload(package, unpack=True)
    return package_train_spec(package.name, done.files, options)
