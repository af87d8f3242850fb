"""A job's options as the command line that asks for them again.

The job index and the dashboard show each job with the ``sleap-rtc train`` or
``track`` command that reproduces it. The flags come from the one option table
(:data:`~sleap_rtc.jobs.options.OPTIONS`), so they can't drift from what the
commands take::

    >>> option_args(TrainSpec(config_paths=["/data/a.yaml"], max_epochs=5).model_dump())
    ['--config', '/data/a.yaml', '--max-epochs', '5']
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from typing import Any

from sleap_rtc.jobs.options import JobKind, JobOption, options_for
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec

_DEFAULTS: dict[str, dict[str, Any]] = {
    "train": {
        name: f.get_default(call_default_factory=True) for name, f in TrainSpec.model_fields.items()
    },
    "track": {
        name: f.get_default(call_default_factory=True) for name, f in TrackSpec.model_fields.items()
    },
}


def _flags(option: JobOption, value: Any) -> Iterable[str]:
    if option.value_type is bool:
        if value is True:
            yield option.flag
        elif value is False and option.negatable:
            yield f"--no-{option.flag[2:]}"
        return
    items = value if option.multiple else [value]
    for item in items:
        yield option.flag
        if option.nargs > 1:
            yield from (str(part) for part in item)
        else:
            yield str(item)


def option_args(spec: dict[str, Any]) -> list[str]:
    """The flags that set ``spec``'s fields (a spec's ``model_dump()``), in ``--help``
    order; fields left at their default are left out."""
    kind: JobKind = "track" if spec.get("kind") == "track" else "train"
    defaults = _DEFAULTS[kind]
    args: list[str] = []
    for option in options_for(kind):
        value = spec.get(option.field)
        if value is None or value == defaults.get(option.field):
            continue
        args.extend(_flags(option, value))
    return args


def command_line(kind: str, room: str, worker: str, args: Iterable[str]) -> str:
    """The shell command that submits the same job to the same worker again."""
    return shlex.join(["sleap-rtc", kind, "--room", room, "--worker-id", worker, *args])
