"""The job sandbox: what a job's processes may touch, enforced by the kernel.

A job runs code the worker did not write: sleap-nn unpickles checkpoints, so a
member who can name a checkpoint can run Python on the worker. The sandbox keeps
that code away from everything that is not the job's own:

- **Files** (Landlock, Linux ≥ 5.13): read and execute the Python environment,
  the system's libraries and a short list of ``/etc`` entries; read the read-only
  mounts; read and write the writable mounts, the job's own work folder and
  ``/dev/shm``; use the GPU devices. Nothing else opens: not the worker's state
  folder (job store, logs, other jobs' work folders), its key file, its config,
  the user's home, other users' uploads.
- **Processes**: a job can't signal or ptrace the worker or any process outside
  its sandbox, nor read their ``/proc/<pid>/environ`` or memory (Landlock scopes;
  a worker running as root also drops every capability for its jobs, because
  root's ``CAP_SYS_PTRACE`` would otherwise open ``/proc`` of other processes).
- **Environment**: built from an allow-list (:func:`job_environment`); the
  worker's key, tokens and database URLs never reach a job.

Landlock was chosen over bubblewrap or user namespaces because it needs no
privileges, no setuid helper and no namespaces (often disabled on clusters), is
inherited by every child across ``fork``/``exec``, and works the same in a SLURM
batch job on a compute node. What it does not do: hide the file *names* of other
paths (``stat`` of a path outside is refused, but the process list is visible),
limit CPU, memory or the network (jobs can open TCP connections; use a firewall
if that matters), or protect against kernel bugs.

The sandbox is entered by a tiny launcher, ``python -m sleap_rtc.engine.sandbox
--policy JSON -- COMMAND...``, which restricts itself and then ``exec``\\ s the
command, so the same wrapper serves the local backend and compute nodes.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import fnmatch
import glob
import json
import os
import site
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: ``sandbox`` values in worker.toml: "landlock" (the default) or "off".
SANDBOX_MODES = ("landlock", "off")

#: ``/etc`` entries programs read at start (dynamic loader, time zone, TLS roots, user
#: names). The rest of ``/etc`` stays closed: an admin may keep a worker key there.
ETC_ENTRIES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "ssl",
    "ca-certificates",
    "pki",
    "passwd",
    "group",
    "nsswitch.conf",
    "hosts",
    "host.conf",
    "resolv.conf",
    "gai.conf",
    "mime.types",
    "os-release",
    "lsb-release",
    "debian_version",
    "fonts",
    "OpenCL",
    "nvidia",
    "glvnd",
    "alternatives",
    "matplotlibrc",
)
#: System folders that hold programs and libraries.
SYSTEM_READ = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/proc", "/sys")
#: Devices every program expects; GPUs are added when present.
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty")
GPU_DEVICE_GLOBS = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/dri", "/dev/kfd")

#: Variables a job inherits from the worker's environment (shell-style patterns).
#: Anything else is left out, so credentials the worker's shell holds stay there.
DEFAULT_ENV_ALLOW = (
    "PATH",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "PYTHONHASHSEED",
    "PYTHONWARNINGS",
    "VIRTUAL_ENV",
    "CONDA_*",
    "OMP_*",
    "MKL_*",
    "OPENBLAS_*",
    "KMP_*",
    "NUMEXPR_*",
    "CUDA_*",
    "NVIDIA_*",
    "NCCL_*",
    "CUBLAS_*",
    "CUDNN_*",
    "TORCH_*",
    "PYTORCH_*",
    "HIP_*",
    "ROCM_*",
    "HSA_*",
    "SLURM_*",
    "SLURMD_*",
    "WANDB_MODE",
    "MPLBACKEND",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
#: Never passed on, whatever the allow-list says.
ENV_DENY = ("SLEAP_RTC_*", "*DATABASE_URL*", "*_KEY", "*TOKEN*", "*SECRET*", "*PASSWORD*")


class SandboxError(RuntimeError):
    """The sandbox can't be set up; the message says why and what to do."""


@dataclass(frozen=True)
class SandboxPolicy:
    """The job-specific part of a sandbox: folders to read, folders to read and write.

    System paths (the Python environment, libraries, devices) are added where the
    sandbox is entered, because a compute node's Python lives elsewhere than the
    worker's.
    """

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()

    def adding(self, *, read: Iterable[str] = (), write: Iterable[str] = ()) -> SandboxPolicy:
        return SandboxPolicy(
            read=tuple(dict.fromkeys([*self.read, *read])),
            write=tuple(dict.fromkeys([*self.write, *write])),
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SandboxPolicy:
        data = json.loads(text)
        return cls(read=tuple(map(str, data["read"])), write=tuple(map(str, data["write"])))


# ------------------------------------------------------------------ availability


def unavailable_reason() -> str | None:
    """Why the Landlock sandbox can't be used here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"Landlock needs Linux; this is {sys.platform}"
    try:
        import landlockpy
    except ImportError:
        return "the landlockpy package is not installed (pip install 'sleap-rtc[worker]')"
    abi = landlockpy.abi_version()
    if abi < 1:
        return (
            "this kernel has no Landlock (it needs Linux 5.13 or newer with Landlock "
            "enabled, e.g. lsm=landlock,... on the kernel command line)"
        )
    return None


def describe() -> str:
    """A short description of the sandbox this machine gives, for logs and listings."""
    reason = unavailable_reason()
    if reason:
        return f"unavailable: {reason}"
    import landlockpy

    return f"landlock ABI {landlockpy.abi_version()}"


# ------------------------------------------------------------------ system paths


def python_paths() -> list[str]:
    """Folders of the running Python and every package it can import."""
    found = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        *site.getsitepackages(),
        site.getusersitepackages(),
        *(sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib")),
    ]
    # Editable installs and .pth entries put source folders on sys.path; the working
    # folder ('' or the cwd) is left out: it may be anything.
    cwd = os.getcwd()
    found += [p for p in sys.path if p and p != cwd and os.path.isdir(p)]
    return _existing(found)


def system_read_paths() -> list[str]:
    return _existing([*SYSTEM_READ, *(f"/etc/{name}" for name in ETC_ENTRIES), *python_paths()])


def device_paths() -> list[str]:
    gpus = [hit for pattern in GPU_DEVICE_GLOBS for hit in glob.glob(pattern)]
    return _existing([*DEVICES, *gpus])


def _existing(paths: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for raw in paths:
        if raw and os.path.exists(raw):
            seen[os.path.realpath(raw)] = None
    return list(seen)


# ------------------------------------------------------------------ environment


def is_secret_name(name: str) -> bool:
    """True for an environment variable a job must never see (:data:`ENV_DENY`)."""
    return _matches(name, ENV_DENY)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def job_environment(
    base: Mapping[str, str],
    *,
    allow: Iterable[str] = (),
    work_dir: Path | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment a job's processes get: allowed names from ``base``, then ``extra``.

    ``allow`` adds patterns to :data:`DEFAULT_ENV_ALLOW`; :data:`ENV_DENY` always
    wins. With ``work_dir``, HOME, TMPDIR and the caches point inside it, so nothing
    a job writes for itself lands in the worker user's home.
    """
    patterns = (*DEFAULT_ENV_ALLOW, *allow)
    env = {k: v for k, v in base.items() if _matches(k, patterns) and not _matches(k, ENV_DENY)}
    if work_dir is not None:
        tmp = work_dir / "tmp"
        env.update(
            HOME=str(work_dir),
            TMPDIR=str(tmp),
            XDG_CACHE_HOME=str(work_dir / ".cache"),
            MPLCONFIGDIR=str(work_dir / ".config" / "matplotlib"),
        )
    for key, value in (extra or {}).items():
        if not _matches(key, ENV_DENY):
            env[key] = value
    return env


# ------------------------------------------------------------------ entering


def _drop_capabilities() -> None:
    """Empty the capability bounding set, so ``exec`` leaves even root with none."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, pr_cap_ambient, pr_cap_ambient_clear_all = 24, 47, 4
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        last = 63
    for cap in range(last + 1):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise SandboxError(f"could not drop capability {cap}: {os.strerror(err)}")
    libc.prctl(pr_cap_ambient, pr_cap_ambient_clear_all, 0, 0, 0)


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def _clear_capabilities() -> None:
    """Empty this process's own capability sets, as ``exec`` after
    :func:`_drop_capabilities` would: a step forked without ``exec`` (the warm
    engine) must not keep root's ``CAP_SYS_PTRACE`` or ``CAP_DAC_OVERRIDE``."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(version=0x20080522, pid=0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"could not clear capabilities: {os.strerror(err)}")


def _has_capabilities() -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("CapEff:", "CapPrm:")) and int(line.split()[1], 16):
                return True
    except (OSError, ValueError, IndexError):
        return os.geteuid() == 0
    return False


def protect_worker() -> None:
    """Make this (worker) process non-dumpable: processes of the same user can then not
    read its ``/proc/<pid>/environ`` or memory, where a key passed in the environment
    lives. Also holds when a job runs without a sandbox."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0


def enter(policy: SandboxPolicy) -> None:
    """Restrict this process (and everything it starts) to ``policy``. Irreversible."""
    reason = unavailable_reason()
    if reason:
        raise SandboxError(f"can't sandbox the job: {reason}")
    import landlockpy as ll

    read = ll.AccessFS.READ_FILE | ll.AccessFS.READ_DIR | ll.AccessFS.EXECUTE
    file_rw = ll.AccessFS.READ_FILE | ll.AccessFS.WRITE_FILE | ll.AccessFS.TRUNCATE
    write = (
        read
        | file_rw
        | ll.AccessFS.REMOVE_DIR
        | ll.AccessFS.REMOVE_FILE
        | ll.AccessFS.MAKE_DIR
        | ll.AccessFS.MAKE_REG
        | ll.AccessFS.MAKE_SYM
        | ll.AccessFS.MAKE_SOCK
        | ll.AccessFS.MAKE_FIFO
        | ll.AccessFS.REFER
    )
    device = file_rw | ll.AccessFS.IOCTL_DEV
    file_only = (
        ll.AccessFS.READ_FILE
        | ll.AccessFS.WRITE_FILE
        | ll.AccessFS.TRUNCATE
        | ll.AccessFS.EXECUTE
        | ll.AccessFS.IOCTL_DEV
    )
    capable = _has_capabilities()
    if capable:
        _drop_capabilities()
    with ll.Ruleset(
        handled_net=ll.AccessNet.NONE,
        scoped=ll.Scope.SIGNAL | ll.Scope.ABSTRACT_UNIX_SOCKET,
    ) as ruleset:

        def allow(path: str, access: ll.AccessFS) -> None:
            if not os.path.exists(path):
                return
            if not os.path.isdir(path):
                access &= file_only
            ruleset.allow_path(path, access)

        for path in system_read_paths():
            allow(path, read)
        for path in policy.read:
            allow(path, read)
        for path in device_paths():
            allow(path, device | (ll.AccessFS.READ_DIR if os.path.isdir(path) else 0))
        for path in ("/dev/shm", *policy.write):
            allow(path, write)
        ruleset.restrict()
    if capable:
        _clear_capabilities()


def launcher(policy: SandboxPolicy, python: Iterable[str] | None = None) -> list[str]:
    """The argv prefix that runs a command inside ``policy``."""
    return [
        *(python or [sys.executable]),
        "-m",
        "sleap_rtc.engine.sandbox",
        "--policy",
        policy.to_json(),
        "--",
    ]


def wrap(argv: list[str], policy: SandboxPolicy) -> list[str]:
    """``argv``, run inside ``policy``."""
    return [*launcher(policy), *argv]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sleap_rtc.engine.sandbox",
        description="Run a command inside a sleap-rtc job sandbox (started by the worker).",
    )
    parser.add_argument("--policy", required=True, help="the sandbox policy as JSON")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    try:
        policy = SandboxPolicy.from_json(args.policy)
        enter(policy)
    except (SandboxError, ValueError, KeyError, OSError) as exc:
        print(f"sleap-rtc sandbox: {exc}", file=sys.stderr)
        return 126
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"sleap-rtc sandbox: can't run {command[0]}: {exc}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
