"""``--set KEY=VALUE``: any sleap-nn config key of a train job, checked before it runs.

An override is checked on its own first (a dotted key of sleap-nn's schema, a value
of the right type parsed as YAML, no ``${...}``), then merged into each config of the
job, so the merged config goes through every check a config file does: the schema,
and a path key is checked inside the mounts like one written in the file. Keys the
worker decides (output folders, ports, logging) and the label keys (which have their
own options) can't be set this way::

    >>> parse_override("trainer_config.train_steps_per_epoch=50")
    ('trainer_config.train_steps_per_epoch', 50)
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from sleap_rtc.jobs import config_keys
from sleap_rtc.jobs.config_schema import check_override
from sleap_rtc.jobs.configs import load_yaml
from sleap_rtc.jobs.problems import Problem, ProblemCode

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
#: What to use instead of an override of a label key.
_LABEL_OPTIONS = {
    "data_config.train_labels_path": "--labels",
    "data_config.val_labels_path": "--val-labels",
}


class OverrideError(ValueError):
    """Not ``KEY=VALUE`` with a dotted key and a YAML value."""


def parse_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` as the key and the value parsed as (safe) YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not _KEY.match(key):
        raise OverrideError(
            f"{text[:200]!r} is not KEY=VALUE with a dotted sleap-nn key "
            "(e.g. trainer_config.train_steps_per_epoch=50)"
        )
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise OverrideError(f"the value of {key} is not valid YAML: {raw[:200]!r}") from None
    return key, value


def check_overrides(overrides: list[str]) -> list[Problem]:
    """Every problem with ``overrides`` on its own (field ``overrides[i]``)."""
    problems: list[Problem] = []

    def problem(index: int, value: str, code: ProblemCode, message: str) -> None:
        problems.append(
            Problem(field=f"overrides[{index}]", value=value[:200], code=code, message=message)
        )

    for index, text in enumerate(overrides):
        try:
            key, value = parse_override(text)
        except OverrideError as exc:
            problem(index, text, ProblemCode.INVALID_VALUE, str(exc))
            continue
        if config_keys.has_interpolation(value):
            problem(
                index,
                text,
                ProblemCode.CONFIG_INVALID,
                f"--set {key} uses an interpolation (${{...}}), which a worker does not "
                "resolve; write the value out",
            )
            continue
        rule = config_keys.rule_for(key)
        if rule == "labels":
            problem(
                index,
                text,
                ProblemCode.CONFLICT,
                f"{key} is set with {_LABEL_OPTIONS[key]} PATH, not --set",
            )
            continue
        if rule == "worker":
            problem(
                index,
                text,
                ProblemCode.CONFLICT,
                f"{key} is decided by the worker (output folders, ports, logging); "
                "leave it out (--run-name names the run, --wandb turns W&B on)",
            )
            continue
        raw = text.partition("=")[2]
        for issue in check_override(key, raw):
            problem(index, text, ProblemCode.CONFIG_INVALID, f"--set {issue.message}")
    return problems


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> None:
    """Merge the well-formed ``overrides`` into the config ``data`` (in order)."""
    for text in overrides:
        try:
            key, value = parse_override(text)
        except OverrideError:
            continue
        config_keys.set_key(data, key, value)
