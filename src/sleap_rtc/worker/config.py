"""Worker configuration: TOML file, then command-line flags on top.

Example ``worker.toml``::

    name = "lab-gpu-1"
    server = "https://sleap-rtc.lab.example.org"   # or SLEAP_RTC_SERVER / --server
    room = "my-room"
    key_file = "/etc/sleap-rtc/worker.key"          # or SLEAP_RTC_WORKER_KEY / --key
    max_concurrent_jobs = 1
    device = "auto"             # auto | cpu | cuda | cuda:1 | mps
    stop_early = true           # allow stop-early (costs up to 10 ms per batch)
    warm_engine = true          # steps start from a pre-imported sleap-nn (false: cold)
    models_dir = "/vast/models" # where trained models go (always a writable mount)
    sandbox = "landlock"        # jobs see only the mounts ("off" only where it can't work)
    job_env = ["MY_LAB_*"]      # more variables jobs inherit (secrets never do)
    direct_listen = "0.0.0.0:7420"  # direct TLS transfers (direct_transfers = false: off)

    [[mounts]]
    path = "/vast/project"
    label = "project"

    [[mounts]]
    path = "/vast/shared-data"
    label = "data"
    read_only = true

``backend`` names a plug-in of :mod:`sleap_rtc.engine.backends`, and a table of
the same name holds its settings. On a SLURM login node, ``backend = "slurm"``
runs each job as an sbatch job with the resources and setup lines of a ``[slurm]``
table (see :class:`~sleap_rtc.engine.backends.slurm.settings.SlurmSettings`)::

    backend = "slurm"

    [slurm]
    partition = "gpu"
    time = "12:00:00"
    gpus = 1
    setup = ["module load cuda/12.1"]
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sleap_rtc import locations
from sleap_rtc.engine import sandbox
from sleap_rtc.engine.backend import Backend, BackendContext, BackendPlugin
from sleap_rtc.engine.backends import BACKENDS, DEFAULT_BACKEND, backend_plugin
from sleap_rtc.jobs.mounts import Mount, Mounts
from sleap_rtc.jobs.pathmaps import MAX_PATH_MAPS, PathMap, check_pairs

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class WorkerConfigError(ValueError):
    """A worker configuration that can't be used; the message names field and value."""


class MountConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    label: str | None = None
    read_only: bool = False


class PathMapConfig(BaseModel):
    """``[[path_maps]]``: videos that labels store under ``from`` are under ``to`` here."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from", min_length=1, max_length=4096)
    to: str = Field(min_length=1, max_length=4096)

    @model_validator(mode="after")
    def _check(self) -> Self:
        problems = check_pairs("path_maps", [(self.from_, self.to)])
        if problems:
            raise ValueError(problems[0].message)
        return self


class DeclaredGpu(BaseModel):
    """A GPU the worker announces instead of detecting it (e.g. behind a scheduler)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    memory_total_mb: int = Field(ge=0)
    memory_free_mb: int | None = Field(default=None, ge=0)


class WorkerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=64)
    mounts: list[MountConfig] = Field(default_factory=list)
    models_dir: Path | None = None
    state_dir: Path | None = None
    max_concurrent_jobs: int = Field(default=1, ge=1, le=64)
    device: str = "auto"
    sleap_nn_command: list[str] | None = None
    cancel_grace_s: float = Field(default=5.0, gt=0, le=300)
    #: Where jobs run: a name of :data:`~sleap_rtc.engine.backends.BACKENDS`, e.g.
    #: "local" (child processes here) or "slurm" (sbatch jobs).
    backend: str = DEFAULT_BACKEND
    #: Each backend's table ([slurm], ...), validated by its plug-in's settings model;
    #: read them with :meth:`backend_settings`.
    backend_tables: dict[str, Any] = Field(default_factory=dict)
    #: Allow stop-early (JOB_STOP). sleap-nn then polls for a command for up to 10 ms
    #: after every batch; turn off on fast GPUs running many tiny batches.
    stop_early: bool = True
    #: Start each step from a process that has already imported torch and sleap-nn, so
    #: it begins at once instead of after ~10 s of imports. Off: every step starts cold.
    warm_engine: bool = True
    #: Where ``sleap-rtc worker`` connects, which room it expects, and where its key is.
    server: str | None = None
    room: str | None = None
    key_file: Path | None = None
    #: Peer channels: WebRTC on or off (off: clients always go through the relay),
    #: STUN/TURN servers ([{urls = "stun:...", username = ..., credential = ...}]) and the
    #: host addresses offered as ICE candidates (default: all but loopback).
    webrtc: bool = True
    #: Bulk bytes (downloads, uploads) over a direct TLS connection to this worker when a
    #: client can reach it: ``direct_listen`` is "host:port" (port 0: any free one), and
    #: ``direct_addresses`` the addresses offered (default: ice_host_addresses, else every
    #: address of this machine). A client that can't reach it gets a lane relayed
    #: through the server instead (``relay_transfers``; the server may turn those off),
    #: and without either files go over the peer channel.
    direct_transfers: bool = True
    direct_listen: str = "0.0.0.0:0"
    direct_addresses: list[str] | None = None
    relay_transfers: bool = True
    #: Where files sent by clients land (e.g. a --pkg-path package); always a writable mount.
    upload_dir: Path | None = None
    max_upload_mb: int = Field(default=4096, ge=1, le=1 << 20)
    #: Announce these GPUs instead of detecting them ([[gpus]] name = ..., memory_total_mb = ...).
    gpus: list[DeclaredGpu] | None = None
    ice_servers: list[dict[str, str | list[str]]] = Field(default_factory=list)
    ice_host_addresses: list[str] | None = None
    #: How jobs are confined: "landlock" (they see only the mounts, their work folder and
    #: the Python environment) or "off" (they run with the worker user's full access; only
    #: for machines without Landlock, and said so at start and in ``rooms workers``).
    sandbox: Literal["landlock", "off"] = "landlock"
    #: More folders jobs may read (e.g. a CUDA toolkit outside /usr); never state or keys.
    sandbox_read: list[Path] = Field(default_factory=list)
    #: More environment variables jobs inherit, as names or shell patterns ("MY_LAB_*").
    #: Names that look like secrets (SLEAP_RTC_*, *TOKEN*, *_KEY, ...) never pass.
    job_env: list[str] = Field(default_factory=list)
    #: Video path maps every job gets after its own (labels made on lab laptops).
    path_maps: list[PathMapConfig] = Field(default_factory=list, max_length=MAX_PATH_MAPS)
    #: Uploads older than this are removed when no live job uses them.
    upload_ttl_s: float = Field(default=7 * 24 * 3600.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _take_backend_tables(cls, data: Any) -> Any:
        """Tables named after a backend belong to its plug-in, not to the worker."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        tables = {name: data.pop(name) for name in list(data) if name in BACKENDS}
        if tables:
            given = data.get("backend_tables")
            data["backend_tables"] = {**(given if isinstance(given, dict) else {}), **tables}
        return data

    @model_validator(mode="after")
    def _check_backend_tables(self) -> Self:
        """Every backend's table through its settings model; errors keep the table's name."""
        checked: dict[str, Any] = {}
        for name, plugin in BACKENDS.items():
            raw = self.backend_tables.get(name, {})
            if isinstance(raw, plugin.settings):
                checked[name] = raw
                continue
            try:
                checked[name] = plugin.settings.model_validate(raw)
            except ValidationError as exc:
                raise ValidationError.from_exception_data(
                    type(self).__name__,
                    [
                        {
                            "type": err["type"],
                            "loc": (name, *err["loc"]),
                            "input": err["input"],
                            "ctx": err.get("ctx", {}),
                        }
                        for err in exc.errors()
                    ],
                ) from None
        self.backend_tables = checked
        return self

    @field_validator("direct_listen")
    @classmethod
    def _direct_listen(cls, value: str) -> str:
        host, _, port = value.strip().rpartition(":")
        if not re.fullmatch(r"\[[0-9A-Fa-f:.]+\]|[^:\s\[\]]+", host) or not (
            port.isdigit() and int(port) <= 65535
        ):
            raise ValueError(
                "must be HOST:PORT, e.g. 0.0.0.0:7420 or [::]:7420 (port 0: any free one); "
                "to turn direct transfers off set direct_transfers = false"
            )
        return value.strip()

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        backend_plugin(value)  # an unknown name says which ones there are
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"device {value!r} must be auto, cpu, mps, cuda or cuda:N")
        return value

    def job_gpu_count(self) -> int | None:
        """GPUs this worker's jobs can use: the declared ones, none on the CPU, None when
        the backend's jobs run elsewhere (a scheduler's nodes); else those detected here."""
        if self.gpus is not None:
            return len(self.gpus)
        if self.device == "cpu":
            return 0
        if not self.backend_plugin.local_gpus:
            return None
        from sleap_rtc.engine.gpus import detect_gpus

        return len(detect_gpus(use_torch=True)[0])

    def worker_path_maps(self) -> list[PathMap]:
        """The ``[[path_maps]]`` of this worker, tried after a job's own maps."""
        return [PathMap(m.from_, m.to, "worker") for m in self.path_maps]

    def resolved_models_dir(self) -> Path:
        return (self.models_dir or locations.data_dir() / "models").expanduser().absolute()

    def resolved_upload_dir(self) -> Path:
        return (self.upload_dir or self.resolved_state_dir() / "uploads").expanduser().absolute()

    def resolved_state_dir(self) -> Path:
        return (self.state_dir or locations.data_dir() / "worker").expanduser().absolute()

    def secret_paths(self) -> list[Path]:
        """What jobs must never reach: the state folder, the key file, the config folder."""
        found = [self.resolved_state_dir(), locations.config_dir()]
        if self.key_file is not None:
            found.append(self.key_file.expanduser().absolute())
        return found

    def check_sandbox(self, mounts: Mounts, *, shared: bool = True) -> str:
        """Check that jobs can be confined as configured; returns a line for the log.

        Raises :class:`WorkerConfigError` when the sandbox is wanted but this machine
        can't give it, or (for a worker ``shared`` with others) when a mount or an
        extra read folder would hand jobs the worker's own state or key.
        """
        if self.sandbox == "off":
            return (
                'WARNING: sandbox = "off": jobs run with this worker user\'s full access '
                "(its files, its key file, its home); turn it on where Landlock is available"
            )
        reason = sandbox.unavailable_reason()
        if reason:
            raise WorkerConfigError(
                f"sandbox: jobs can't be sandboxed on this machine: {reason}. Run the worker "
                'on a kernel with Landlock, or set sandbox = "off" in worker.toml to run '
                "jobs unconfined (every room member can then read what this user can)"
            )
        if not shared:
            return f"jobs run sandboxed ({sandbox.describe()})"
        uploads = self.resolved_upload_dir().resolve()
        exposed = [(f"mount '{m.label}'", m.path) for m in mounts if m.path != uploads]
        exposed += [(f"sandbox_read {p}", Path(os.path.realpath(p))) for p in self.sandbox_read]
        for secret in self.secret_paths():
            real = Path(os.path.realpath(secret))
            for what, folder in exposed:
                if real == folder or real.is_relative_to(folder):
                    raise WorkerConfigError(
                        f"{what} ({folder}) holds the worker's {real}; jobs would reach it. "
                        "Move the state folder, key file or config out of the mounts"
                    )
        return f"jobs run sandboxed ({sandbox.describe()})"

    @property
    def backend_plugin(self) -> BackendPlugin:
        return BACKENDS[self.backend]

    def backend_settings(self, name: str | None = None) -> Any:
        """The validated ``[name]`` table (default: this worker's backend's)."""
        return self.backend_tables[name or self.backend]

    def build_backend(self) -> Backend:
        """The backend this worker runs jobs on; a
        :class:`~sleap_rtc.engine.backend.BackendError` when it can't be used here."""
        context = BackendContext(
            state_dir=self.resolved_state_dir(),
            cancel_grace_s=self.cancel_grace_s,
            warm_engine=self.warm_engine,
        )
        return self.backend_plugin.build(self.backend_settings(), context)

    def build_mounts(self) -> Mounts:
        """The configured mounts plus the models folder (created if missing)."""
        models = self.resolved_models_dir()
        models.mkdir(parents=True, exist_ok=True)
        mounts: list[Mount] = []
        for index, entry in enumerate(self.mounts):
            try:
                mounts.append(Mount.create(entry.path, entry.label, read_only=entry.read_only))
            except ValueError as exc:
                raise WorkerConfigError(f"mounts[{index}]: {exc}") from None
        if not any(m.path == models.resolve() for m in mounts):
            label = "models" if all(m.label != "models" for m in mounts) else "worker-models"
            mounts.append(Mount.create(models, label))
        uploads = self.resolved_upload_dir()
        uploads.mkdir(parents=True, exist_ok=True)
        try:
            if Mounts(mounts).containing(uploads.resolve()) is None:
                label = "uploads" if all(m.label != "uploads" for m in mounts) else "worker-uploads"
                mounts.append(Mount.create(uploads, label))
            return Mounts(mounts)
        except ValueError as exc:
            raise WorkerConfigError(f"mounts: {exc}") from None


def default_config_path() -> Path:
    return locations.config_dir() / "worker.toml"


def load_worker_config(path: Path | None = None, **overrides: object) -> WorkerConfig:
    """Read the TOML file (``path``, or the default if it exists) and apply overrides.

    Overrides set to None are ignored, so command-line flags that weren't given
    don't erase file values.
    """
    data: dict[str, object] = {}
    source = path or default_config_path()
    if path is not None and not path.is_file():
        raise WorkerConfigError(f"worker config {path} does not exist")
    if source.is_file():
        try:
            data = tomllib.loads(source.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise WorkerConfigError(f"worker config {source} is not valid TOML: {exc}") from None
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "mounts" and isinstance(value, list):
            existing = data.get("mounts") or []
            data["mounts"] = [*(existing if isinstance(existing, list) else []), *value]
        else:
            data[key] = value
    try:
        return WorkerConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            lines.append(f"{where}: {err['msg']} (got {err.get('input')!r})")
        raise WorkerConfigError(f"worker config {source}: " + "; ".join(lines)) from None
