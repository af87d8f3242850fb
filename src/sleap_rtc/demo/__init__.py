"""Demo data and tuned tiny training configs for ``sleap-rtc demo`` / ``make-demo-data``.

The demo must work offline, on a CPU, in well under a minute per model, so it ships its own
synthetic data generator (:mod:`sleap_rtc.demo.data`) and three small sleap-nn configs under
``demo/configs/`` (``single_instance``, ``centroid``, ``centered_instance``).

:mod:`sleap_rtc.demo.data` needs the worker extra (numpy, sleap-io); import it lazily.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: Names of the packaged demo configs, in the order they are usually trained.
CONFIG_NAMES: tuple[str, ...] = ("single_instance", "centroid", "centered_instance")


def packaged_config_path(name: str) -> Path:
    """Return the path of the packaged demo config ``name`` (one of :data:`CONFIG_NAMES`)."""
    if name not in CONFIG_NAMES:
        raise ValueError(f"unknown demo config {name!r}; expected one of {CONFIG_NAMES}")
    return Path(str(resources.files(__name__).joinpath("configs", f"{name}.yaml")))


__all__ = ["CONFIG_NAMES", "packaged_config_path"]
