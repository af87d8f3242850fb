"""The backend registry: each backend's name → its plug-in (settings table and factory).

One folder per backend (like submitit's executors): ``local/`` runs jobs as child
processes here, ``slurm/`` as SLURM batch jobs. Each folder's ``__init__`` holds a
:class:`~sleap_rtc.engine.backend.BackendPlugin`; the worker's configuration
(``backend = NAME`` and its ``[NAME]`` table) and ``sleap-rtc worker --backend``
read :data:`BACKENDS`, so a new scheduler is one new folder and one entry below.
"""

from __future__ import annotations

from sleap_rtc.engine.backend import BackendPlugin
from sleap_rtc.engine.backends.local import PLUGIN as LOCAL
from sleap_rtc.engine.backends.slurm import PLUGIN as SLURM

#: Every backend a worker can run jobs on, by name; the first is the default.
BACKENDS: dict[str, BackendPlugin] = {plugin.name: plugin for plugin in (LOCAL, SLURM)}
DEFAULT_BACKEND = next(iter(BACKENDS))


def backend_plugin(name: str) -> BackendPlugin:
    """The plug-in called ``name``; ValueError naming the known ones otherwise."""
    try:
        return BACKENDS[name]
    except KeyError:
        known = ", ".join(BACKENDS)
        raise ValueError(f"backend {name!r} is not one of: {known}") from None
