"""Click options for job specs, made from the option table in :mod:`sleap_rtc.jobs.options`.

Every command that submits or runs a job (``sleap-rtc train/track``, ``sleap-rtc local
train/track``) gets the same flags, help sentences and defaults, because all of them
come from that one table. Building the spec is the only logic here; checking it is
the worker's job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click
from pydantic import BaseModel

from sleap_rtc.jobs.options import JobKind, JobOption, options_for
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec

F = TypeVar("F", bound=Callable[..., Any])

_SPECS: dict[str, type[BaseModel]] = {"train": TrainSpec, "track": TrackSpec}


def click_option(option: JobOption, *, required: bool | None = None) -> Callable[[F], F]:
    """One table entry as a click option; ``required`` overrides the table's word."""
    settings: dict[str, Any] = {"help": option.help}
    flags = option.flags
    if option.value_type is bool and option.negatable:
        flags = (f"{option.flag}/--no-{option.flag[2:]}", *option.flags[1:])
        settings["is_flag"] = True
        settings["default"] = None
    elif option.value_type is bool:
        settings["is_flag"] = True
    elif option.choices is not None:
        settings["type"] = click.Choice(option.choices)
    elif option.value_type is not str:
        settings["type"] = option.value_type
    if option.multiple:
        settings["multiple"] = True
    if option.nargs != 1:
        settings["nargs"] = option.nargs
    if option.metavar is not None:
        settings["metavar"] = option.metavar
    if option.show_default:
        settings["default"] = _SPECS[option.kind].model_fields[option.field].default
        settings["show_default"] = True
    if option.required if required is None else required:
        settings["required"] = True
    return click.option(*flags, option.field, **settings)


def _apply(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    def decorator(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorator


def job_options(kind: JobKind, *, required: bool = True, remote: bool = False) -> Callable[[F], F]:
    """Every option of a ``kind`` job; with ``required=False`` none is required (the
    command then checks what a job needs itself, e.g. from a spec file); ``remote``
    adds those only a job sent through a server has (``--notify``)."""
    return _apply(
        [
            click_option(o, required=None if required else False)
            for o in options_for(kind)
            if remote or not o.remote_only
        ]
    )


def make_train_options(config_required: bool = True) -> Callable[[F], F]:
    """The train options of ``sleap-rtc train``; ``config_required=False`` when another
    option may stand in."""
    return job_options("train", required=config_required, remote=True)


#: The track options, as ``sleap-rtc track`` takes them.
track_options = job_options("track", remote=True)


def spec_fields(
    kind: JobKind, options: dict[str, Any], only: Iterable[str] | None = None
) -> dict[str, Any]:
    """The spec fields among a command's parsed options (repeatable flags as lists);
    ``only`` keeps just those fields."""
    keep = set(only) if only is not None else None
    fields: dict[str, Any] = {}
    for option in options_for(kind):
        if option.field not in options or (keep is not None and option.field not in keep):
            continue
        value = options[option.field]
        fields[option.field] = list(value) if option.multiple else value
    return fields


def train_spec_from(options: dict[str, Any]) -> TrainSpec:
    return TrainSpec(**spec_fields("train", options))


def track_spec_from(options: dict[str, Any]) -> TrackSpec:
    return TrackSpec(**spec_fields("track", options))
