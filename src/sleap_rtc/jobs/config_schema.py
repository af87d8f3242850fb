"""Check a sleap-nn training config against sleap-nn's own schema before a job runs.

sleap-nn reads a config by merging it into its structured config
(``TrainingJobConfig``: attrs classes turned into an OmegaConf schema), then
building the attrs objects, which runs their validators. A misspelled key, a value
of the wrong type or a choice that is not offered fails there, minutes into a job.
This module finds all of those problems at once, when the job is submitted.

Importing sleap-nn's config classes imports torch, far too slow to do per job, so
the schema is kept as plain data:

- :func:`derive_schema` walks the attrs classes of the installed sleap-nn and
  writes each setting as ``dotted key -> {kind, nullable, ...}``. ``kind`` is
  ``int``, ``float``, ``str``, ``bool``, ``list`` (with the kind of its ``items``),
  ``dict``, ``any`` or ``section``. Choices (``options``) come from the field's
  validators: the strings they mention are tried one by one against the real
  class, and kept only if the validator accepts exactly those (a validator that
  accepts other spellings gives no choices). A section that holds one of
  several variants (sleap-nn's ``oneof`` classes: backbones, heads) is marked
  ``oneof``; ``required`` marks the ones sleap-nn needs one variant of.
  ``python -m sleap_rtc.jobs.config_schema --dump`` prints it as JSON.
- ``sleap_nn_schema.json`` is that output for the sleap-nn version the worker
  extra pins, loaded lazily without sleap-nn. :func:`schema_for` derives and
  caches the schema of another installed version in a child process.
- :func:`check_config` and :func:`check_override` compare a config (or one
  ``KEY=VALUE`` override) with a schema in pure Python. Values are judged the way
  OmegaConf converts them: ``"16"`` is a fine ``int``, ``2`` a fine ``float``,
  ``yes`` a fine ``bool``, a ``${...}`` interpolation is left to sleap-nn, and
  nothing below a ``dict`` or ``any`` setting is checked.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import json
import logging
import os
import re
import subprocess
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

SCHEMA_FORMAT = 1
SNAPSHOT = "sleap_nn_schema.json"
DERIVE_TIMEOUT_S = 60
_MAX_VALUE = 200
_BOOL_WORDS = frozenset({"yes", "y", "on", "true", "no", "n", "off", "false"})
_TOKEN = re.compile(r"^[\w.:/+-]{1,64}$")
_NOT_A_CHOICE = "__not_a_sleap_nn_choice__"


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config: where, what was given, and what to do about it.

    ``code`` is a :class:`~sleap_rtc.jobs.problems.ProblemCode` value:
    ``UNKNOWN_FIELD``, ``INVALID_TYPE``, ``INVALID_VALUE``, ``CONFLICT`` or
    ``MISSING_FIELD``.
    """

    key: str
    value: str | None
    message: str
    code: str


@dataclass(frozen=True)
class Schema:
    """The settings of one sleap-nn version (the JSON :func:`derive_schema` writes)."""

    sleap_nn_version: str
    keys: Mapping[str, Mapping[str, Any]]
    ignored: frozenset[str] = frozenset()
    children: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Schema:
        if data.get("format") != SCHEMA_FORMAT:
            raise ValueError(f"schema format {data.get('format')!r}, expected {SCHEMA_FORMAT}")
        keys: dict[str, Mapping[str, Any]] = dict(data["keys"])
        children: dict[str, list[str]] = {}
        for key in keys:
            parent, _, name = key.rpartition(".")
            children.setdefault(parent, []).append(name)
        return cls(
            sleap_nn_version=str(data["sleap_nn_version"]),
            keys=keys,
            ignored=frozenset(data.get("ignored", ())),
            children={k: tuple(v) for k, v in children.items()},
        )


# -- deriving the schema from the installed sleap-nn ------------------------------------


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """``Optional[X]`` -> ``(X, True)``; other unions become ``Any``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Any), len(rest) < len(args)
    return tp, tp is Any


def _kind(tp: Any) -> dict[str, Any]:
    import attrs

    base = typing.get_origin(tp) or tp
    if tp is Any:
        return {"kind": "any"}
    if attrs.has(tp):
        return {"kind": "section"}
    if isinstance(tp, type) and issubclass(tp, Enum):
        return {"kind": "str", "options": [m.name for m in tp]}
    if tp in (int, float, str, bool):
        return {"kind": tp.__name__}
    if base in (list, tuple, typing.Sequence):
        args = typing.get_args(tp)
        return {"kind": "list", "items": _kind(_unwrap(args[0])[0])["kind"] if args else "any"}
    if base in (dict, typing.Mapping):
        return {"kind": "dict"}
    return {"kind": "any"}


def _strings(obj: Any, owner: type, depth: int = 3) -> set[str]:
    """Every short string a validator (or what it calls) mentions: candidate choices."""
    found: set[str] = set()
    if depth < 0 or obj is None:
        return found
    if isinstance(obj, str):
        return {obj} if _TOKEN.match(obj) else found
    if isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            found |= _strings(item, owner, depth - 1)
        return found
    if type(obj).__module__.startswith("attr"):  # attrs' in_, optional, and_ validators
        for attr in ("options", "validator", "_validators"):
            found |= _strings(getattr(obj, attr, None), owner, depth - 1)
    code = getattr(obj, "__code__", None)
    if code is None:
        return found
    codes = [code]
    while codes:
        current = codes.pop()
        for const in current.co_consts:
            if hasattr(const, "co_consts"):
                codes.append(const)
            else:
                found |= _strings(const, owner, 1)
        for name in current.co_names:
            for target in (getattr(owner, name, None), getattr(obj, "__globals__", {}).get(name)):
                if callable(target) or isinstance(target, tuple | list | frozenset):
                    found |= _strings(target, owner, depth - 1)
    for cell in getattr(obj, "__closure__", None) or ():
        found |= _strings(cell.cell_contents, owner, depth - 1)
    return found


def _choices(owner: type, attribute: Any, many: bool) -> list[str] | None:
    """The values a validated string field accepts, or ``None`` if it is no fixed list."""
    candidates = sorted(_strings(attribute.validator, owner))

    def accepts(value: str) -> bool:
        try:
            owner(**{attribute.name: [value] if many else value})
        except Exception:
            return False
        return True

    if not candidates or accepts(_NOT_A_CHOICE):
        return None
    allowed = [c for c in candidates if accepts(c)]
    variants = {v for c in allowed for v in (c.swapcase(), c + "_x", " " + c)} - set(allowed)
    if not allowed or any(accepts(v) for v in variants):
        return None
    return allowed


def _walk(cls: type, prefix: str, keys: dict[str, dict[str, Any]]) -> None:
    import attrs

    attrs.resolve_types(cls)
    for attribute in attrs.fields(cls):
        path = f"{prefix}{attribute.name}"
        tp, nullable = _unwrap(attribute.type)
        entry = {**_kind(tp), "nullable": nullable}
        keys[path] = entry
        if entry["kind"] == "section":
            if hasattr(tp, "which_oneof"):
                entry["oneof"] = True
            _walk(tp, f"{path}.", keys)
        elif attribute.validator is not None and "options" not in entry:
            many = entry["kind"] == "list" and entry["items"] == "str"
            if entry["kind"] == "str" or many:
                options = _choices(cls, attribute, many)
                if options:
                    entry["options"] = options


def derive_schema() -> dict[str, Any]:
    """The schema of the installed sleap-nn as plain JSON data (imports sleap-nn)."""
    import sleap_nn
    from sleap_nn.config import model_config, training_job_config

    try:
        from loguru import logger

        logger.disable("sleap_nn")  # the choices tried are refused noisily
    except ImportError:
        pass
    keys: dict[str, dict[str, Any]] = {}
    _walk(training_job_config.TrainingJobConfig, "", keys)
    if hasattr(training_job_config, "check_must_be_set"):
        # sleap-nn refuses a config that names no backbone or no head.
        for path in ("model_config.backbone_config", "model_config.head_configs"):
            if path in keys:
                keys[path]["required"] = True
    # Keys older sleap-nn wrote and this one drops with a warning on load.
    leaf = getattr(model_config, "_EMBEDDING_LEAF", None)
    ignored = [f"{leaf}.{k}" for k in getattr(model_config, "REMOVED_EMBEDDING_HEAD_KEYS", ())]
    ignored += [
        f"{leaf}.objective.negatives.{k}"
        for k in getattr(model_config, "REMOVED_EMBEDDING_NEGATIVES_KEYS", ())
    ]
    return {
        "format": SCHEMA_FORMAT,
        "sleap_nn_version": sleap_nn.__version__,
        "ignored": sorted(ignored) if leaf else [],
        "keys": keys,
    }


def dump_schema() -> str:
    return json.dumps(derive_schema(), indent=1) + "\n"


# -- loading a schema -------------------------------------------------------------------


@functools.cache
def load_snapshot() -> Schema:
    """The schema shipped with sleap-rtc (no sleap-nn import)."""
    text = resources.files("sleap_rtc.jobs").joinpath(SNAPSHOT).read_text(encoding="utf-8")
    return Schema.from_json(json.loads(text))


def installed_sleap_nn_version() -> str | None:
    """The installed sleap-nn's version, read from its metadata (no import)."""
    try:
        return importlib.metadata.version("sleap-nn")
    except importlib.metadata.PackageNotFoundError:
        return None


def schema_for(version: str | None, cache_dir: Path | None = None) -> tuple[Schema, bool]:
    """The schema for sleap-nn ``version``, and whether it really is for that version.

    The shipped snapshot serves its own version (and ``None``). Another version is
    derived from the installed sleap-nn in a child process and kept as JSON in
    ``cache_dir``; if that fails, the snapshot is returned with ``False``.
    """
    shipped = load_snapshot()
    if version is None or version == shipped.sleap_nn_version:
        return shipped, True
    cached = None
    if cache_dir is not None:
        safe = re.sub(r"[^\w.+-]", "_", version)
        cached = cache_dir / f"sleap_nn_schema-{safe}.json"
        try:
            return Schema.from_json(json.loads(cached.read_text(encoding="utf-8"))), True
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    command = [sys.executable, "-m", "sleap_rtc.jobs.config_schema", "--dump"]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=DERIVE_TIMEOUT_S, check=True
        )
        schema = Schema.from_json(json.loads(done.stdout))
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError) as exc:
        why = " ".join([str(exc), *(getattr(exc, "stderr", None) or "").splitlines()[-1:]])
        fallback = shipped.sleap_nn_version
        log.warning("no settings for sleap-nn %s (%s); using %s's", version, why, fallback)
        return shipped, False
    if schema.sleap_nn_version != version:
        log.warning("sleap-nn %s is installed, not %s", schema.sleap_nn_version, version)
        return schema, False
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(done.stdout, encoding="utf-8")
            partial.replace(cached)
        except OSError as exc:
            log.warning("could not cache the sleap-nn schema in %s: %s", cached, exc)
    return schema, True


# -- checking ---------------------------------------------------------------------------


def _show(value: Any) -> str:
    try:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1] + "…"


def _fits(kind: str, value: Any) -> bool:
    """Whether OmegaConf turns ``value`` into a setting of ``kind``."""
    if kind == "str":
        return not isinstance(value, dict | list | tuple | bytes)
    if kind == "bool" and isinstance(value, str) and value.lower() in _BOOL_WORDS:
        return True
    if type(value) is str and kind in ("int", "float", "bool"):
        try:
            (float if kind == "float" else int)(value)
        except ValueError:
            return False
        return True
    allowed = {"int": (int,), "float": (int, float), "bool": (bool, int)}.get(kind)
    return allowed is None or type(value) in allowed


def _interpolated(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


_WANTS = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "str": "a single value (text)",
    "list": "a list",
    "dict": "a mapping",
    "section": "a mapping of settings",
}


class _Checker:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.issues: list[ConfigIssue] = []

    def add(self, key: str, value: Any, message: str, code: str) -> None:
        shown = None if code == "MISSING_FIELD" else _show(value)
        self.issues.append(ConfigIssue(key=key, value=shown, message=message, code=code))

    def wrong(self, path: str, value: Any, kind: str) -> None:
        null = "cannot be null; it " if value is None else ""
        self.add(path, value, f"{path} {null}must be {_WANTS[kind]}", "INVALID_TYPE")

    def unknown(self, parent: str, name: str, value: Any) -> None:
        path = f"{parent}.{name}" if parent else name
        message = f"{path} is not a sleap-nn setting"
        close = difflib.get_close_matches(name, self.schema.children.get(parent, ()), n=1)
        elsewhere = [k for k in self.schema.keys if k.rpartition(".")[2] == name]
        elsewhere = [k for k in elsewhere if k.count(".") == min(e.count(".") for e in elsewhere)]
        if close or 0 < len(elsewhere) <= 2:
            message += f"; did you mean {' or '.join(close or elsewhere)}?"
        self.add(path, value, message, "UNKNOWN_FIELD")

    def mapping(self, prefix: str, data: Mapping[Any, Any]) -> None:
        for name, value in data.items():
            path = f"{prefix}.{name}" if prefix else str(name)
            spec = self.schema.keys.get(path)
            if spec is not None:
                self.value(path, spec, value)
            elif path not in self.schema.ignored:
                self.unknown(prefix, str(name), value)

    def value(self, path: str, spec: Mapping[str, Any], value: Any) -> None:
        kind = spec["kind"]
        if value is None:
            if not spec.get("nullable") and kind != "any":
                self.wrong(path, value, kind)
        elif kind == "any" or _interpolated(value):
            return
        elif kind in ("section", "dict"):
            if not isinstance(value, dict):
                self.wrong(path, value, kind)
            elif kind == "section":
                self.mapping(path, value)
                chosen = [str(k) for k, v in value.items() if v is not None]
                if spec.get("oneof") and len(chosen) > 1:
                    message = f"{path} sets {', '.join(chosen)}; sleap-nn takes only one of them"
                    self.add(path, chosen, message, "CONFLICT")
        elif kind == "list":
            if not isinstance(value, list):
                self.wrong(path, value, kind)
                return
            for index, item in enumerate(value):
                where, items = f"{path}[{index}]", spec["items"]
                if item is None and items != "any":
                    self.add(where, item, f"{where} cannot be null", "INVALID_TYPE")
                elif items == "list" and not isinstance(item, list):
                    self.wrong(where, item, items)
                elif not isinstance(item, dict | list):  # OmegaConf lets containers by
                    self.scalar(where, spec, items, item)
        else:
            self.scalar(path, spec, kind, value)

    def scalar(self, path: str, spec: Mapping[str, Any], kind: str, value: Any) -> None:
        options = spec.get("options")
        if _interpolated(value):
            return
        if not _fits(kind, value):
            self.wrong(path, value, kind)
        elif options and str(value) not in options:
            message = f"{path} must be one of {', '.join(options)} (got {value!r})"
            self.add(path, value, message, "INVALID_VALUE")

    def required(self, data: Mapping[Any, Any]) -> None:
        """A ``required`` section must set one variant (unless it is already wrong)."""
        flagged = {issue.key for issue in self.issues}
        for path, spec in self.schema.keys.items():
            if not spec.get("required") or path in flagged:
                continue
            node: Any = data
            for part in path.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is None or all(v is None for v in node.values()):
                names = ", ".join(self.schema.children.get(path, ()))
                self.add(path, None, f"{path} must set one of {names}", "MISSING_FIELD")


def check_config(data: Mapping[str, Any], schema: Schema | None = None) -> list[ConfigIssue]:
    """Every way ``data`` (a parsed config) breaks sleap-nn's schema; empty if none."""
    checker = _Checker(schema or load_snapshot())
    if not isinstance(data, dict):
        checker.add("", data, "a sleap-nn config must be a mapping of settings", "INVALID_TYPE")
        return checker.issues
    checker.mapping("", data)
    checker.required(data)
    return checker.issues


def check_override(key: str, raw_value: str, schema: Schema | None = None) -> list[ConfigIssue]:
    """The problems of one ``KEY=VALUE`` override (``raw_value`` is read as YAML)."""
    checker = _Checker(schema or load_snapshot())
    try:
        value = yaml.safe_load(raw_value)
    except yaml.YAMLError:
        checker.add(key, raw_value, f"the value for {key} is not valid YAML", "INVALID_VALUE")
        return checker.issues
    parts = key.split(".")
    for depth in range(1, len(parts) + 1):
        path = ".".join(parts[:depth])
        spec = checker.schema.keys.get(path)
        if spec is None:
            if path not in checker.schema.ignored:
                checker.unknown(".".join(parts[: depth - 1]), parts[depth - 1], value)
            break
        if spec["kind"] in ("dict", "any"):
            break  # free-form below this point
        if depth == len(parts):
            checker.value(key, spec, value)
        elif spec["kind"] != "section":
            message = f"{path} is a single setting, not a section"
            checker.add(key, value, message, "UNKNOWN_FIELD")
            break
    return checker.issues


if __name__ == "__main__":
    if sys.argv[1:] != ["--dump"]:
        raise SystemExit("usage: python -m sleap_rtc.jobs.config_schema --dump")
    sys.stdout.write(dump_schema())
