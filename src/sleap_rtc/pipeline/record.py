"""The record of a pipeline's submissions: ``slurm_jobs/{job}/runs.json``.

Written by :func:`~sleap_rtc.pipeline.run.submit` and the ``--chain=poll``
driver (:mod:`sleap_rtc.pipeline.driver`) as they go; read by ``status`` and
``cancel``. It maps each stage's key (``{dataset}/{stage}``) to an entry::

    {"job_id": "101", "submitted_at": 1700000000.0, "after": ["99", "100"],
     "dependency": "afterok", "inputs_key": "5f2c…"}
    {"job_id": "102", ..., "attempts": [{"job_id": "102"}, {"job_id": "103"}], "gate": "104"}
    {"job_id": null, "state": "WAITING", "waits_for": ["centroid", "centered_instance"],
     "driver": {"host": "login1", "pid": 4242}, "updated_at": 1700000000.0}
    {"job_id": null, "state": "NOT SUBMITTED", "reason": "parent centroid FAILED (job 99)",
     "blocked_by": {"stage": "centroid", "job_id": "99", "state": "FAILED"}, ...}

It is replaced whole on every write, so a reader never sees half of it. Also here:
the rule that one pipeline has one live driver per host.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Collection, Mapping
from pathlib import Path

from sleap_rtc.pipeline.sbatch import Layout
from sleap_rtc.pipeline.spec import Pipeline

#: States of a stage with no job: the driver submits it when its parents complete;
#: it was not submitted (a parent did not complete, or the driver stopped first).
WAITING = "WAITING"
NOT_SUBMITTED = "NOT SUBMITTED"


def record_path(pipeline: Pipeline, layout: Layout) -> Path:
    return layout.scripts / pipeline.name / "runs.json"


def load_record(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def write_record(path: Path, record: Mapping[str, object]) -> None:
    """Replace the record at once, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.part")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(path)


def update_record(path: Path, entries: Mapping[str, dict[str, object]]) -> None:
    """Set these stages' entries, keeping everything else in the record."""
    record = load_record(path)
    record.update(entries)
    write_record(path, record)


def entry_jobs(entry: Mapping[str, object]) -> list[str]:
    """Every job an entry names: its job, its attempts (``retries``), the job standing
    for them."""
    found = []
    attempts = entry.get("attempts")
    if isinstance(attempts, list):  # in order, the first attempt first
        found += [str(a["job_id"]) for a in attempts if isinstance(a, dict) and a.get("job_id")]
    if entry.get("job_id"):
        found.append(str(entry["job_id"]))
    if entry.get("gate"):
        found.append(str(entry["gate"]))
    return list(dict.fromkeys(found))


def this_driver() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def driver_alive(entry: Mapping[str, object]) -> bool | None:
    """Whether the driver that wrote ``entry`` still runs; None when that can't be told
    from here (another host, or no driver named)."""
    driver = entry.get("driver")
    if not isinstance(driver, dict) or driver.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(driver["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return True


class AlreadyDriven(Exception):
    """A driver on this host is driving the same pipeline (``--chain=poll``)."""


def refuse_if_driven(path: Path, record: Mapping[str, object]) -> None:
    """AlreadyDriven when another live driver on this host has stages WAITING in ``record``."""
    me = this_driver()
    for key, entry in record.items():
        if not isinstance(entry, dict) or entry.get("state") != WAITING:
            continue
        if entry.get("driver") != me and driver_alive(entry):
            raise AlreadyDriven(
                f"process {entry['driver']['pid']} is already driving this pipeline ({key} "
                f"waits for it, in {path}); stop it first, or follow it with "
                "`sleap-rtc pipeline status`"
            )


def array_jobs(record: Mapping[str, Mapping[str, object]], keys: Collection[str]) -> set[str]:
    """The array jobs among the record's: those of the stages ``keys`` (array stages),
    less the job standing for their attempts."""
    return {
        job
        for key in keys
        for job in entry_jobs(record.get(key, {}))
        if job != record.get(key, {}).get("gate")
    }
