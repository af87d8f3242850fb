"""The ``extra_args`` of a pipeline job file: job options, checked against the option table.

A job file (or one of its stages) may set the options the option table marks
``job_file`` (:func:`sleap_rtc.jobs.options.job_file_options`), each of its type:
a number, a flag, a list of strings (``overrides``), or a path map (``{OLD: NEW}``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sleap_rtc.jobs.options import JobOption
from sleap_rtc.jobs.pathmaps import as_pairs, check_pairs
from sleap_rtc.jobs.problems import Problem, ProblemCode


def _problem(field: str, value: str | None, code: ProblemCode, message: str) -> Problem:
    return Problem(field=field, value=value, code=code, message=message)


def check_args(
    args: Mapping[str, Any], allowed: Mapping[str, JobOption], where: str
) -> list[Problem]:
    """Overrides are options of the option table a job file may set, of the right type."""
    problems = []
    for key, value in args.items():
        if key not in allowed:
            problems.append(
                _problem(
                    f"{where}.{key}",
                    str(value),
                    ProblemCode.UNKNOWN_FIELD,
                    f"unknown override {key!r}; valid ones: {', '.join(sorted(allowed))}",
                )
            )
            continue
        option = allowed[key]
        if option.nargs == 2:
            problems += _pairs_problems(key, value, f"{where}.{key}")
            continue
        if option.multiple:  # a list of values, e.g. overrides: ["KEY=VALUE", ...]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                shown = json.dumps(value, default=str)[:200]
                problems.append(
                    _problem(
                        f"{where}.{key}",
                        shown,
                        ProblemCode.INVALID_TYPE,
                        f"{key} must be a list of strings, got {shown}",
                    )
                )
            continue
        want = option.value_type
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            shown = json.dumps(value)
            problems.append(
                _problem(
                    f"{where}.{key}",
                    shown,
                    ProblemCode.INVALID_TYPE,
                    f"{key} must be {want.__name__}, got {shown}",
                )
            )
        elif option.choices is not None and value not in option.choices:
            problems.append(
                _problem(
                    f"{where}.{key}",
                    str(value),
                    ProblemCode.INVALID_VALUE,
                    f"{key} is {value!r}; it must be one of {', '.join(option.choices)}",
                )
            )
        elif option.range is not None and not option.range.admits(0) and value <= 0:
            problems.append(
                _problem(
                    f"{where}.{key}",
                    str(value),
                    ProblemCode.OUT_OF_RANGE,
                    f"{key} must be greater than 0",
                )
            )
    return problems


def _pairs_problems(key: str, value: Any, where: str) -> list[Problem]:
    """A ``path_map``: ``{OLD: NEW}`` (or ``[[OLD, NEW], ...]``) with well-formed paths."""
    pairs = as_pairs(value)
    if pairs is None:
        shown = json.dumps(value, default=str)[:200]
        return [
            _problem(
                where,
                shown,
                ProblemCode.INVALID_TYPE,
                f'{key} must map OLD to NEW folders, e.g. {{"/Volumes/lab": "/data/lab"}}; '
                f"got {shown}",
            )
        ]
    return [
        p.model_copy(update={"field": p.field.replace(key, where, 1)})
        for p in check_pairs(key, pairs)
    ]
