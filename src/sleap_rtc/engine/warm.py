"""The warm engine: job steps forked from a process that has already imported sleap-nn.

Importing torch, lightning and sleap-nn takes most of a small job's time (about
10 s of a 16 s tiny training run here). The warm engine keeps one process, the
*zygote*, that has done those imports once, without initializing CUDA, and starts
each step by forking it: the step begins work at once.

A forked step behaves like a cold ``sleap-nn`` process:

- it is its own session and process group (``setsid``), so cancelling (INT, then
  TERM, then KILL, sent by the worker to the group) reaches everything it starts;
- it gets exactly the job's environment, working folder, stdin from ``/dev/null``
  and its output on the pipe the worker reads, and enters the job's sandbox
  (:func:`sleap_rtc.engine.sandbox.enter`) before any of the job's code runs;
- it runs sleap-nn's own command line (the ``sleap-nn`` console script's entry
  point), then Python's normal exit (threads joined, ``atexit`` run), and its exit
  status is the cold process's: the code, or minus the signal that killed it.

What differs and can't be seen by the job: the hash seed of ``str`` (one per zygote,
not per process) and numpy's global generator, which is re-seeded from the OS.

The zygote (``python -P -m sleap_rtc.engine.warm --fd N``) talks to the worker over
a ``SOCK_SEQPACKET`` socket pair: one JSON message per packet, each at most
:data:`MAX_MESSAGE` bytes, the output pipe's write end passed along with ``spawn``
(``SCM_RIGHTS``). It holds no secrets (its environment is a job's allow-list), is
not dumpable, and dies with the worker (it exits when the socket closes; its steps
have ``PDEATHSIG``). The worker side is :class:`~sleap_rtc.engine.warm_client.WarmEngine`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any, NoReturn

#: Largest message either side sends or accepts.
MAX_MESSAGE = 1024 * 1024
#: What the zygote imports before it says it is ready; a missing one is only reported.
PRELOAD = (
    "torch",
    "torchvision",
    "lightning",
    "lightning.pytorch",
    "numpy",
    "pandas",
    "matplotlib",
    "matplotlib.pyplot",
    "seaborn",
    "h5py",
    "cv2",
    "zmq",
    "hydra",
    "omegaconf",
    "sleap_io",
    "wandb",
    "landlockpy",
    "sleap_nn.cli",
    "sleap_nn.config.training_job_config",
    "sleap_nn.train",
    "sleap_nn.training.model_trainer",
    "sleap_nn.data.custom_datasets",
    "sleap_nn.evaluation",
    "sleap_nn.system_info",
    "sleap_nn.legacy_predict",
    "sleap_nn.inference.run",
    "sleap_nn.inference.loaders",
    "sleap_nn.inference.predictors",
    "sleap_nn.inference.provenance",
    "sleap_nn.inference.tracking",
    "sleap_nn.tracking.tracker",
)
#: The console script a step runs: sleap-nn's ``sleap-nn`` entry point, a click command.
ENTRY_POINT = "sleap_nn.cli:cli"
#: Exit code of a step that could not be set up (like the sandbox launcher's).
SETUP_FAILED = 126

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4


def _prctl(option: int, value: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"warm engine message of {len(data)} bytes is over {MAX_MESSAGE}")
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def decode(data: bytes) -> dict[str, Any]:
    """One message; ValueError when it is not a JSON object with an ``op``."""
    message = json.loads(data)
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ValueError("not a warm engine message")
    return message


# ------------------------------------------------------------------ the zygote


def preload(names: tuple[str, ...] = PRELOAD) -> tuple[list[str], dict[str, str]]:
    """Import ``names``; returns those imported and, for the others, why not."""
    loaded: list[str] = []
    missing: dict[str, str] = {}
    for name in names:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception as exc:  # a module a sleap-nn version lacks is not fatal
            missing[name] = f"{type(exc).__name__}: {exc}"[:300]
    return loaded, missing


def _cuda_initialized() -> bool:
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and torch.cuda.is_initialized())
    except Exception:
        return False


def serve(fd: int, parent: int, entry: str = ENTRY_POINT, names: tuple[str, ...] = PRELOAD) -> int:
    """The zygote's loop: preload, say ready, then fork a step per ``spawn``.

    ``entry`` (``module:command``) is the click command each step runs; its module
    is imported with ``names``.
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the worker died while this process started
        return 1
    _prctl(_PR_SET_DUMPABLE, 0)
    sock = socket.socket(fileno=fd)
    started = time.monotonic()
    module_name = entry.partition(":")[0]
    loaded, missing = preload((*names, module_name))
    if module_name not in loaded:
        send(
            sock,
            {
                "op": "error",
                "message": f"can't import {module_name}: "
                f"{missing.get(module_name, 'unknown error')}",
            },
        )
        return 1
    if _cuda_initialized():
        send(
            sock,
            {
                "op": "error",
                "message": "importing sleap-nn initialized CUDA, so steps can't be forked from it",
            },
        )
        return 1
    gc.collect()
    gc.freeze()  # forked steps then don't copy pages the collector would touch
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    send(
        sock,
        {
            "op": "ready",
            "pid": os.getpid(),
            "import_s": round(time.monotonic() - started, 3),
            "loaded": loaded,
            "missing": missing,
        },
    )
    while True:
        readable, _, _ = select.select([fd, wake_r], [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
            _reap(sock)
        if fd in readable:
            try:
                data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 4)
            except InterruptedError:
                continue
            except OSError:
                return 0
            if not data:
                return 0  # the worker closed its end
            _handle(sock, data, fds, (wake_r, wake_w), entry)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        send(sock, {"op": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)})


def _handle(
    sock: socket.socket, data: bytes, fds: list[int], private: tuple[int, int], entry: str
) -> None:
    request_id: Any = None
    try:
        message = decode(data)
        request_id = message.get("id")
        if message["op"] == "ping":
            send(sock, {"op": "pong", "id": request_id})
            return
        if message["op"] != "spawn" or len(fds) != 1:
            raise ValueError(f"unexpected message {message['op']!r} with {len(fds)} fds")
        args, env, cwd = message["argv"], message["env"], message["cwd"]
        if not (isinstance(args, list) and args and all(isinstance(a, str) for a in args)):
            raise ValueError("argv must be a non-empty list of strings")
        if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
            raise ValueError("env must map names to strings")
        policy = message.get("policy")
        if policy is not None and not isinstance(policy, str):
            raise ValueError("policy must be a JSON string or null")
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        # The step is announced once it leads its own session, so a signal to its
        # group can't miss it.
        sync_r, sync_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(sync_r)
            _child(args, env, cwd, policy, fds[0], sock, (*private, sync_w), entry)
        os.close(sync_w)
        try:
            os.read(sync_r, 1)
        finally:
            os.close(sync_r)
        send(sock, {"op": "spawned", "id": request_id, "pid": pid})
    except Exception as exc:
        send(sock, {"op": "spawn_failed", "id": request_id, "message": str(exc)[:1000]})
    finally:
        for fd in fds:
            os.close(fd)


# ------------------------------------------------------------------ a forked step


def _child(
    args: list[str],
    env: dict[str, str],
    cwd: str | None,
    policy: str | None,
    out_fd: int,
    sock: socket.socket,
    private: tuple[int, ...],
    entry: str,
) -> NoReturn:
    zygote = os.getppid()
    try:
        os.setsid()
        for fd in private:  # the last one tells the zygote the session exists
            os.close(fd)
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != zygote:
            os._exit(SETUP_FAILED)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sock.close()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        for fd in (null, out_fd):
            if fd > 2:
                os.close(fd)
        if cwd is not None:
            os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        _fresh_process_state()
        if policy is not None:
            from sleap_rtc.engine import sandbox

            sandbox.enter(sandbox.SandboxPolicy.from_json(policy))
        _prctl(_PR_SET_DUMPABLE, 1)  # as a freshly exec'd process is
    except BaseException as exc:
        _write_error(f"sleap-rtc warm engine: can't set up the step: {exc}")
        os._exit(SETUP_FAILED)
    os._exit(_run_entry_point(args, entry))


def _fresh_process_state() -> None:
    """Reset what the zygote's imports computed from its own environment."""
    import tempfile

    tempfile.tempdir = None
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    matplotlib = sys.modules.get("matplotlib")
    if matplotlib is not None:  # its folders are memoized from MPLCONFIGDIR at import
        for name in ("get_configdir", "get_cachedir"):
            func = getattr(matplotlib, name, None)
            inner = getattr(func, "__wrapped__", None)
            if inner is not None:
                setattr(matplotlib, name, matplotlib._logged_cached(f"{name}=%s", inner))
    torch = sys.modules.get("torch")
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if torch is not None and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


def _write_error(text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, (text + "\n").encode(errors="replace"))


def _run_entry_point(argv: list[str], entry: str) -> int:
    """Run ``argv`` (the ``sleap-nn`` script, then its arguments) as the script would."""
    import atexit
    import threading

    sys.argv = list(argv)
    # A console script's __main__ has no module spec; sleap-nn decides from that
    # whether a multi-GPU run re-starts itself with ``python -m``, as it must.
    sys.modules["__main__"].__spec__ = None
    code = 0
    try:
        module_name, _, attribute = entry.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        command.main(args=argv[1:], prog_name=os.path.basename(argv[0]))
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    # What the interpreter does at a normal exit.
    with contextlib.suppress(BaseException):
        threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    return code & 0xFF


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sleap_rtc.engine.warm",
        description="The sleap-rtc warm engine (started by the worker; not for use by hand).",
    )
    parser.add_argument("--fd", type=int, required=True, help="the worker's socket")
    parser.add_argument("--parent", type=int, required=True, help="the worker's pid")
    parser.add_argument("--entry", default=ENTRY_POINT, help="module:command steps run")
    parser.add_argument(
        "--preload", default=",".join(PRELOAD), help="comma-separated modules to import first"
    )
    args = parser.parse_args(argv)
    names = tuple(name for name in args.preload.split(",") if name)
    return serve(args.fd, args.parent, args.entry, names)


if __name__ == "__main__":
    sys.exit(main())
