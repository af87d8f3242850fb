"""Which keys of a sleap-nn config name files, and who decides their values.

A config is written by a peer, and sleap-nn opens, writes or deletes whatever its
keys name. So every key that can make sleap-nn touch a path has one rule here:

- ``labels``: label files read for training (checked inside the mounts).
- ``read``: other files read (``test_file_path``), checked inside the mounts.
- ``checkpoint``: weights loaded with ``torch.load`` (which can run code): inside the
  mounts, and from the upload folder only on a sandboxed worker.
- ``worker``: set by the worker whatever the config says (output folders, caches,
  ports, logging), so a config can't aim sleap-nn's writes anywhere.

A key that is not in the table but whose name looks like it takes a path (``*_path``,
``*_dir``, ``*_file``, ``*weights``, ...) is refused: sleap-rtc can't vouch for it.
The table is for sleap-nn 0.3.5, the version the worker extra pins.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Literal

Rule = Literal["labels", "read", "checkpoint", "worker"]

PATH_KEYS: dict[str, Rule] = {
    "data_config.train_labels_path": "labels",
    "data_config.val_labels_path": "labels",
    "data_config.test_file_path": "read",
    "data_config.cache_img_path": "worker",
    "model_config.pretrained_backbone_weights": "checkpoint",
    "model_config.pretrained_head_weights": "checkpoint",
    "trainer_config.resume_ckpt_path": "checkpoint",
    "trainer_config.ckpt_dir": "worker",
    "trainer_config.run_name": "worker",
    "trainer_config.save_ckpt": "worker",
    "trainer_config.use_wandb": "worker",
    "trainer_config.enable_progress_bar": "worker",
    "trainer_config.zmq.publish_port": "worker",
    "trainer_config.zmq.controller_port": "worker",
    "filename": "worker",
}

#: Keys whose names look like paths but hold other things (counts, flags, choices).
NOT_PATHS = frozenset(
    {
        "data_config.delete_cache_imgs_after_training",
        "data_config.cache_workers",
        "data_config.use_existing_imgs",
        "data_config.negative_loss_weight",
        "model_config.init_weights",
        "trainer_config.model_ckpt.save_top_k",
        "trainer_config.model_ckpt.save_last",
        "trainer_config.model_ckpt.monitor",
        "trainer_config.model_ckpt.mode",
        "trainer_config.wandb.save_viz_imgs_wandb",
        "trainer_config.wandb.delete_local_logs",
        "trainer_config.wandb.log_viz_table",
    }
)
#: Backbone and head settings live under names chosen by the user's model type.
_NOT_PATH_LEAVES = frozenset({"pre_trained_weights", "loss_weight", "output_stride"})

_PATH_LIKE = re.compile(
    r"(path|dir|file|ckpt|checkpoint|weights?|cache|root|folder|url|uri)s?$", re.IGNORECASE
)


def leaves(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``(dotted key, value)`` of a nested mapping; lists of mappings get ``[i]``."""
    if isinstance(data, dict):
        for key, value in data.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) or (
                isinstance(value, list) and any(isinstance(v, dict) for v in value)
            ):
                yield from leaves(value, name)
            else:
                yield name, value
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from leaves(value, f"{prefix}[{index}]")


def rule_for(key: str) -> Rule | None:
    return PATH_KEYS.get(key)


def looks_like_path_key(key: str) -> bool:
    """True for a key sleap-rtc doesn't know whose name says it takes a path."""
    if key in PATH_KEYS or key in NOT_PATHS:
        return False
    leaf = re.sub(r"\[\d+\]$", "", key.rsplit(".", 1)[-1])
    if leaf in _NOT_PATH_LEAVES:
        return False
    return bool(_PATH_LIKE.search(leaf))


def has_interpolation(value: Any) -> bool:
    """True if a config value would be rewritten by OmegaConf (``${...}``)."""
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, list):
        return any(has_interpolation(v) for v in value)
    return False


def set_key(data: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key in a nested mapping, making the sections it needs."""
    *sections, last = key.split(".")
    node = data
    for section in sections:
        child = node.get(section)
        if not isinstance(child, dict):
            child = {}
            node[section] = child
        node = child
    node[last] = value
