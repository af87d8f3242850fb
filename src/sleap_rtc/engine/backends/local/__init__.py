"""The local backend: a job's sleap-nn steps run as child processes of the worker.

See :mod:`~sleap_rtc.engine.backends.local.backend`. This module is its registry
entry, light to import: the backend itself loads when a worker builds it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from sleap_rtc.engine.backend import Backend, BackendContext, BackendPlugin


class LocalSettings(BaseModel):
    """``[local]`` in worker.toml: nothing to set yet (the worker's own fields apply)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _build(settings: LocalSettings, context: BackendContext) -> Backend:
    from sleap_rtc.engine.backends.local.backend import LocalBackend

    return LocalBackend(cancel_grace_s=context.cancel_grace_s, warm_engine=context.warm_engine)


PLUGIN = BackendPlugin(
    name="local",
    summary="child processes on this machine",
    settings=LocalSettings,
    build=_build,
)
