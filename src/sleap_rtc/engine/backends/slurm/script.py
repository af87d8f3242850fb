"""The batch script of a SLURM-backed job, and the environment sbatch runs in.

The script holds the ``#SBATCH`` resources of the worker's ``[slurm]`` settings,
the setup lines, then ``python -m sleap_rtc.engine.backends.slurm.node SPOOL``
(see :mod:`~sleap_rtc.engine.backends.slurm.node`), which runs the steps on the
compute node. The spool folder and the job's name go on sbatch's command line.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from sleap_rtc.engine import sandbox
from sleap_rtc.engine.backend import EngineJob
from sleap_rtc.engine.backends.slurm.settings import SlurmSettings

#: What the batch script runs with ``python -m`` on the compute node.
NODE_MODULE = "sleap_rtc.engine.backends.slurm.node"


def render_script(
    job: EngineJob, folder: Path, settings: SlurmSettings, grace_s: float, *, warm: bool = False
) -> str:
    """The batch script for ``job``; the spool folder and name go on sbatch's command line.

    With ``warm``, a job of several steps runs them from one warm engine on the node
    (the first step waits for its imports, the others start at once).
    """
    python = settings.python or [sys.executable]
    run = [*python, "-m", NODE_MODULE, str(folder)]
    run += ["--cancel-grace-s", f"{grace_s:g}"]
    if warm and len(job.steps) > 1:
        run.append("--warm-engine")
    if job.sandbox is not None:
        # The node-side runner is confined too; it writes only its spool folder.
        policy = job.sandbox.adding(write=[str(folder)])
        run = [*sandbox.launcher(policy, python), *run]
    lines = [
        "#!/bin/bash",
        f"# sleap-rtc {job.kind} job {job.job_id}: {', '.join(s.name for s in job.steps)}",
        *(f"#SBATCH {d}" for d in settings.directives()),
        "set -euo pipefail",
        *settings.setup,
        "exec " + " ".join(shlex.quote(part) for part in run),
        "",
    ]
    return "\n".join(lines)


def job_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The worker's environment for sbatch, without anything named like a secret.

    The batch script's setup lines may need the login environment (modules,
    conda), so only secrets are taken out here; the sleap-nn steps on the node get
    the allow-listed environment of :func:`sleap_rtc.engine.sandbox.job_environment`.
    """
    env = dict(os.environ if base is None else base)
    return {name: value for name, value in env.items() if not sandbox.is_secret_name(name)}
