"""What to run after a job: the rule behind the ``next:`` lines of a job's summary.

After training, the track command for the models it made (on the labels it trained
on when the job named them, else a placeholder for the data to track)::

    >>> from sleap_rtc.jobs.specs import TrainSpec
    >>> done = p.JobComplete(job_id="j1", outputs=["/vast/models/m1"])
    >>> after(["sleap-rtc", "track", "--room", "lab"], TrainSpec(config_paths=["/c.yaml"]), done)
    ['sleap-rtc track --room lab --data-path VIDEO_OR_SLP --model-paths /vast/models/m1']

Across a room, also the command that fetches the outputs (any time later)::

    >>> fetch("lab", done)
    ['sleap-rtc jobs download j1 . --room lab']
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.protocol import jobs as p

#: Stands for the data to track when the job didn't name it.
DATA_PLACEHOLDER = "VIDEO_OR_SLP"


def after(
    track_command: Sequence[str], spec: TrainSpec | TrackSpec, result: p.JobComplete
) -> list[str]:
    """The commands to run after ``spec`` ended with ``result``; ``track_command`` starts
    a track job where this one ran (``sleap-rtc track --room R`` or ``sleap-rtc local
    track --mount ...``)."""
    if not isinstance(spec, TrainSpec) or not result.outputs:
        return []
    models = [r.output for r in result.results if r.kind == "train"] or list(result.outputs)
    argv = [*track_command, "--data-path", spec.labels_path or DATA_PLACEHOLDER]
    for model in models:
        argv += ["--model-paths", model]
    return [shlex.join(argv)]


def fetch(room: str, result: p.JobComplete) -> list[str]:
    """The command that downloads a room job's outputs (none without outputs)."""
    if not result.outputs:
        return []
    return [shlex.join(["sleap-rtc", "jobs", "download", result.job_id, ".", "--room", room])]
