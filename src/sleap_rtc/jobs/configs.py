"""The sleap-nn config files a train job names: read safely, and every path key checked.

:func:`load_config` parses a config the way the worker parses anything a peer wrote
(size-limited, safe YAML without aliases) and checks it against sleap-nn's own schema
(:mod:`sleap_rtc.jobs.config_schema`); :func:`config_labels` checks the label files it
names; :func:`config_paths` checks every other key that can make sleap-nn touch a path
(:mod:`sleap_rtc.jobs.config_keys`). Each appends to the job's list of problems, so a
rejection lists them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sleap_rtc.jobs import config_keys
from sleap_rtc.jobs.config_schema import check_config
from sleap_rtc.jobs.mounts import Mounts
from sleap_rtc.jobs.paths import DATA_SUFFIXES, checkpoint, existing
from sleap_rtc.jobs.problems import Problem, ProblemCode
from sleap_rtc.jobs.specs import TrainSpec

#: Largest config YAML the worker will parse.
MAX_CONFIG_BYTES = 1024 * 1024

CONFIG_SECTIONS = ("data_config", "model_config", "trainer_config")


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without aliases: a few hundred bytes of nested ``*refs`` can expand to
    gigabytes once walked or written out (the "billion laughs"), and configs never
    need them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a config", event.start_mark
            )
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """Parse YAML the way the worker parses everything a peer wrote: safe, no aliases."""
    return yaml.load(text, Loader=_NoAliasLoader)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def load_config(
    index: int, name: str, raw: str, real: Path, problems: list[Problem]
) -> dict[str, Any] | None:
    """Config ``index`` of the job (named ``raw`` in ``name``), parsed, or None if it is
    not a sleap-nn config at all (its keys are checked by :func:`schema_problems`)."""

    def invalid(message: str) -> None:
        problems.append(
            Problem(field=name, value=raw, code=ProblemCode.CONFIG_INVALID, message=message)
        )

    size = real.stat().st_size
    if size > MAX_CONFIG_BYTES:
        invalid(f"{raw} is {size} bytes; a sleap-nn config is expected to be under 1 MiB")
        return None
    try:
        data = load_yaml(real.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or "not valid YAML"
        if "aliases" not in str(what):
            what = "not valid YAML"
        invalid(f"{raw} is {what}{where}; fix the file or choose another config")
        return None
    except UnicodeDecodeError:
        invalid(f"{raw} is not a text file; choose a sleap-nn config YAML")
        return None
    if not isinstance(data, dict):
        invalid(
            f"{raw} does not hold a sleap-nn config (expected a mapping with "
            f"{', '.join(CONFIG_SECTIONS)})"
        )
        return None
    missing = [s for s in CONFIG_SECTIONS if not isinstance(data.get(s), dict)]
    if missing:
        invalid(f"{raw} is missing the section(s) {', '.join(missing)} of a sleap-nn config")
        return None
    return data


def schema_problems(
    index: int, name: str, raw: str, data: dict[str, Any], problems: list[Problem]
) -> None:
    """Keys of config ``index`` sleap-nn would refuse, as problems on the field
    ``config[index].<key>`` (the config's paths are still checked after them)."""
    for issue in check_config(data):
        problems.append(
            Problem(
                field=f"config[{index}].{issue.key}" if issue.key else name,
                value=issue.value,
                code=ProblemCode.CONFIG_INVALID,
                message=f"{issue.message} (in {raw})",
            )
        )


def config_labels(
    spec: TrainSpec,
    mounts: Mounts,
    config_raw: str,
    config_real: Path,
    data: dict[str, Any],
    key: str,
    override: str | None,
    field_name: str,
    option: str,
    problems: list[Problem],
) -> list[tuple[Path, str]]:
    """Check the label files a config names under ``data_config.<key>``: each found
    file with the path the config gave it."""
    if override is not None:
        return []
    entries = _as_list(data["data_config"].get(key))
    if not entries and key == "train_labels_path":
        problems.append(
            Problem(
                field=field_name,
                value=None,
                code=ProblemCode.MISSING_FIELD,
                message=(
                    f"{config_raw} names no data_config.{key} and no {option} was given; "
                    f"pass {option} PATH"
                ),
            )
        )
    found: list[tuple[Path, str]] = []
    for entry in entries:
        if not isinstance(entry, str):
            problems.append(
                Problem(
                    field=field_name,
                    value=str(entry),
                    code=ProblemCode.CONFIG_INVALID,
                    message=f"data_config.{key} in {config_raw} must hold paths, got {entry!r}",
                )
            )
            continue
        before = len(problems)
        real = existing(mounts, field_name, entry, problems, want="file", base=config_real.parent)
        if len(problems) > before:
            # Say where the path came from and how to override it.
            last = problems[-1]
            problems[-1] = last.model_copy(
                update={
                    "message": f"{last.message} (named in {config_raw} as data_config.{key}; "
                    f"pass {option} to override)"
                }
            )
        if real is not None:
            found.append((real, entry))
    return found


def config_paths(
    index: int,
    config_raw: str,
    config_real: Path,
    data: dict[str, Any],
    mounts: Mounts,
    problems: list[Problem],
) -> dict[str, Any]:
    """Check every key of a config that can make sleap-nn touch a path.

    Labels are checked by :func:`_config_labels` (they may be overridden); keys the
    worker sets are ignored here; the rest are resolved against the config's folder
    and checked inside the mounts. Returns the resolved values by dotted key.
    """
    base = config_real.parent
    resolved: dict[str, Any] = {}
    reported = {p.field for p in problems}

    def problem(key: str, value: Any, code: ProblemCode, message: str) -> None:
        problems.append(
            Problem(
                field=f"config[{index}].{key}",
                value=None if value is None else str(value)[:500],
                code=code,
                message=f"{message} (in {config_raw})",
            )
        )

    for key, value in config_keys.leaves(data):
        if config_keys.has_interpolation(value):
            problem(
                key,
                value,
                ProblemCode.CONFIG_INVALID,
                f"{key} uses an interpolation (${{...}}), which a worker does not resolve; "
                "write the value out",
            )
            continue
        rule = config_keys.rule_for(key)
        if rule in ("labels", "worker") or value is None:
            continue
        if rule is None:
            if f"config[{index}].{key}" in reported:
                continue  # not a sleap-nn setting at all: said by the schema check
            if config_keys.looks_like_path_key(key) and not isinstance(value, bool | int | float):
                problem(
                    key,
                    value,
                    ProblemCode.UNKNOWN_FIELD,
                    f"{key} is not a sleap-nn setting sleap-rtc knows, and its name says it "
                    "takes a path; remove it (a worker runs only paths it checked)",
                )
            continue
        entries = value if isinstance(value, list) else [value]
        if not all(isinstance(e, str) for e in entries) or (
            rule == "checkpoint" and isinstance(value, list)
        ):
            problem(key, value, ProblemCode.CONFIG_INVALID, f"{key} must be a path")
            continue
        field_name = f"config[{index}].{key}"
        found: list[Path] = []
        for entry in entries:
            before = len(problems)
            if rule == "checkpoint":
                real = checkpoint(mounts, field_name, entry, problems, base=base)
            else:
                real = existing(mounts, field_name, entry, problems, want="file", base=base)
                if real is not None and real.suffix.lower() not in DATA_SUFFIXES:
                    problems.append(
                        Problem(
                            field=field_name,
                            value=entry,
                            code=ProblemCode.WRONG_FILE_TYPE,
                            message=f"{entry} is not a labels (.slp) or video file",
                        )
                    )
                    real = None
            for i in range(before, len(problems)):
                last = problems[i]
                problems[i] = last.model_copy(
                    update={"message": f"{last.message} (named in {config_raw} as {key})"}
                )
            if real is not None:
                found.append(real)
        if len(found) == len(entries):
            resolved[key] = [str(p) for p in found] if isinstance(value, list) else str(found[0])
    return resolved
