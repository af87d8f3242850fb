"""The worker's side of the warm engine (:mod:`sleap_rtc.engine.warm`).

:class:`WarmEngine` starts the zygote, keeps it healthy and forks steps from it;
:class:`WarmProcess` is a forked step with the surface of an
:class:`asyncio.subprocess.Process` the local backend uses (``pid``, ``returncode``,
``stdout``, ``wait()``). The engine replaces a zygote that died or went stale (the
installed sleap-nn, torch or sleap-rtc changed under it) on the next step; when a
zygote can't be started it says why (:class:`WarmUnavailable`), the backend starts
that step cold, and the engine tries again after :data:`RETRY_AFTER_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sleap_rtc.engine.sandbox import SandboxPolicy
from sleap_rtc.engine.warm import ENTRY_POINT, MAX_MESSAGE, PRELOAD, decode, send

log = logging.getLogger(__name__)

#: How long the zygote may take to import everything before it is given up on.
START_TIMEOUT_S = 600.0
#: After a zygote failed to start, steps start cold for this long before it is tried again.
RETRY_AFTER_S = 300.0
#: Packages whose installed files, when changed, make a running zygote stale.
WATCHED_PACKAGES = ("sleap_nn", "torch", "lightning", "sleap_io", "sleap_rtc")
#: Lines of the zygote's own output kept to explain its death.
LOG_TAIL_BYTES = 4000


class WarmUnavailable(RuntimeError):
    """No warm start now; the message says why (the step then starts cold)."""


def sleap_nn_script() -> str:
    """The console script the zygote stands in for: ``sleap-nn`` beside this interpreter."""
    return str(Path(sys.executable).with_name("sleap-nn"))


def _fingerprint() -> tuple[tuple[str, int, int, int], ...]:
    """What identifies the installed packages: their ``__init__`` files' inode and times."""
    marks = []
    for name in WATCHED_PACKAGES:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin is None:
            continue
        try:
            st = os.stat(origin)
        except OSError:
            continue
        marks.append((name, st.st_ino, st.st_mtime_ns, st.st_size))
    warm = Path(__file__).with_name("warm.py").stat()
    marks.append(("warm", warm.st_ino, warm.st_mtime_ns, warm.st_size))
    return tuple(marks)


class WarmProcess:
    """A step forked by the zygote."""

    def __init__(self, pid: int, stdout: asyncio.StreamReader, exit_code: asyncio.Future[int]):
        self.pid = pid
        self.stdout = stdout
        self._exit = exit_code
        #: Set when the zygote died under the step (which was then ended).
        self.lost: str | None = None

    @property
    def returncode(self) -> int | None:
        return self._exit.result() if self._exit.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)


class _Zygote:
    """One zygote process and its socket."""

    def __init__(self, engine: WarmEngine) -> None:
        self.engine = engine
        self.folder = Path(tempfile.mkdtemp(prefix="sleap-rtc-warm-", dir=engine.folder))
        self.fingerprint = _fingerprint()
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending: dict[int, asyncio.Future[tuple[int, asyncio.Future[int]]]] = {}
        self.exits: dict[int, asyncio.Future[int]] = {}
        self.steps: dict[int, WarmProcess] = {}
        self.dead: str | None = None
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(engine.env)
        (self.folder / "tmp").mkdir()
        env.update(
            HOME=str(self.folder),
            TMPDIR=str(self.folder / "tmp"),
            XDG_CACHE_HOME=str(self.folder / ".cache"),
            MPLCONFIGDIR=str(self.folder / "matplotlib"),
            # As a job's own environment has them: what is imported here sees the same.
            PYTHONUNBUFFERED="1",
            TERM="dumb",
            NO_COLOR="1",
            # CUDA must stay uninitialized in the zygote: forked children can't use a
            # CUDA context their parent made. NVML answers "is there a GPU" without one.
            PYTORCH_NVML_BASED_CUDA_CHECK="1",
        )
        self.log_path = self.folder / "zygote.log"
        with open(self.log_path, "wb") as log_file:
            self.popen = subprocess.Popen(
                [
                    engine.python,
                    "-P",
                    "-m",
                    "sleap_rtc.engine.warm",
                    "--fd",
                    str(theirs.fileno()),
                    "--parent",
                    str(os.getpid()),
                    "--entry",
                    engine.entry,
                    "--preload",
                    ",".join(engine.preload),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.folder,
                env=env,
            )
        theirs.close()
        self.sock.setblocking(False)
        self.reader = asyncio.create_task(self._read(), name="warm-engine-reader")

    @property
    def alive(self) -> bool:
        return self.dead is None

    def log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        reason = "the warm engine closed its socket"
        try:
            while True:
                data = await loop.sock_recv(self.sock, MAX_MESSAGE)
                if not data:
                    break
                try:
                    self._dispatch(decode(data))
                except (ValueError, KeyError, TypeError) as exc:
                    reason = f"the warm engine sent a bad message ({exc})"
                    break
        except OSError as exc:
            reason = f"the warm engine's socket failed: {exc}"
        code = await asyncio.to_thread(self._wait_exit)
        if code is not None:
            reason = f"the warm engine exited with code {code}"
            tail = self.log_tail()
            if tail:
                reason += f" ({tail})"
        self._die(reason)

    def _wait_exit(self) -> int | None:
        try:
            return self.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "ready":
            if not self.ready.done():
                self.ready.set_result(message)
        elif op == "error":
            if not self.ready.done():
                self.ready.set_exception(WarmUnavailable(str(message.get("message"))[:500]))
        elif op == "spawned":
            pid = int(message["pid"])
            exit_future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self.exits[pid] = exit_future
            future = self.pending.pop(int(message["id"]), None)
            if future is None or future.done():  # nobody waits for it any more
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            else:
                future.set_result((pid, exit_future))
        elif op == "spawn_failed":
            future = self.pending.pop(int(message["id"]), None)
            if future is not None and not future.done():
                future.set_exception(WarmUnavailable(str(message.get("message"))[:500]))
        elif op == "exited":
            ended = self.exits.pop(int(message["pid"]), None)
            self.steps.pop(int(message["pid"]), None)
            if ended is not None and not ended.done():
                ended.set_result(int(message["code"]))

    def _die(self, reason: str, *, warn: bool = True) -> None:
        if self.dead is not None:
            return
        self.dead = reason
        if warn:
            log.warning("warm engine: %s", reason)
        if not self.ready.done():
            self.ready.set_exception(WarmUnavailable(reason))
        for future in self.pending.values():
            if not future.done():
                future.set_exception(WarmUnavailable(reason))
        self.pending.clear()
        # Steps of a dead zygote can't be waited for: end them (their PDEATHSIG does too).
        for pid, exit_future in self.exits.items():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            step = self.steps.get(pid)
            if step is not None:
                step.lost = f"{reason}; the step was ended"
            if not exit_future.done():
                exit_future.set_result(-signal.SIGKILL)
        self.exits.clear()
        self.steps.clear()
        with contextlib.suppress(OSError):
            self.sock.close()

    async def spawn(
        self,
        argv: list[str],
        env: Mapping[str, str],
        cwd: Path | None,
        policy: SandboxPolicy | None,
    ) -> WarmProcess:
        loop = asyncio.get_running_loop()
        request_id = next(self.engine.ids)
        read_fd, write_fd = os.pipe()
        try:
            future: asyncio.Future[tuple[int, asyncio.Future[int]]] = loop.create_future()
            self.pending[request_id] = future
            message = {
                "op": "spawn",
                "id": request_id,
                "argv": argv,
                "env": dict(env),
                "cwd": str(cwd) if cwd is not None else None,
                "policy": policy.to_json() if policy is not None else None,
            }
            try:
                send(self.sock, message, [write_fd])
            except ValueError as exc:
                self.pending.pop(request_id, None)
                raise WarmUnavailable(str(exc)) from None
            except OSError as exc:
                self.pending.pop(request_id, None)
                self._die(f"the warm engine's socket failed: {exc}")
                raise WarmUnavailable(self.dead or "") from None
            finally:
                os.close(write_fd)
            pid, exit_future = await future
        except BaseException:
            os.close(read_fd)
            raise
        reader = asyncio.StreamReader(limit=self.engine.stdout_limit)
        pipe = os.fdopen(read_fd, "rb", buffering=0)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        process = WarmProcess(pid, reader, exit_future)
        if not exit_future.done():
            self.steps[pid] = process
        return process

    async def retire(self) -> None:
        """Close once the steps running from it have ended."""
        try:
            await asyncio.gather(*self.exits.values(), return_exceptions=True)
        finally:
            await self.close()

    async def close(self) -> None:
        """End the zygote (its socket closes: it exits; its steps die with it)."""
        self.reader.cancel()
        with contextlib.suppress(BaseException):
            await self.reader
        self._die("the warm engine was closed", warn=False)
        if await asyncio.to_thread(self._wait_exit) is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            await asyncio.to_thread(self.popen.wait)
        shutil.rmtree(self.folder, ignore_errors=True)


class WarmEngine:
    """Starts job steps from a zygote that has imported sleap-nn.

    ``env`` is the zygote's environment (the worker's allow-listed variables; each
    step gets its own job environment on top of nothing). Use :meth:`start` to warm
    up ahead of the first step, :meth:`spawn` for each step, :meth:`close` at the end.
    ``script``, ``entry`` and ``preload`` say which console script the zygote stands
    in for, its click command and what to import ahead (sleap-nn's, by default).
    ``folder`` is where the zygote's own files go (default: the temporary folder).
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        python: str = sys.executable,
        stdout_limit: int = 1 << 20,
        start_timeout_s: float = START_TIMEOUT_S,
        script: str | None = None,
        entry: str = ENTRY_POINT,
        preload: tuple[str, ...] = PRELOAD,
        folder: Path | None = None,
    ) -> None:
        self.env = dict(env)
        self.python = python
        self.script = script or sleap_nn_script()
        self.entry = entry
        self.preload = preload
        #: Where each zygote's private folder (HOME, TMPDIR, its log) is made; None: TMPDIR.
        self.folder = folder
        self.stdout_limit = stdout_limit
        self.start_timeout_s = start_timeout_s
        self.ids = itertools.count(1)
        self._zygote: _Zygote | None = None
        self._starting: asyncio.Task[_Zygote] | None = None
        self._failed_at = 0.0
        self._failure = ""
        self._retiring: set[asyncio.Task[None]] = set()
        self.ready_info: dict[str, Any] = {}

    def eligible(self, argv: list[str]) -> bool:
        """Whether ``argv`` runs this environment's own ``sleap-nn`` (which the zygote is)."""
        return bool(argv) and argv[0] == self.script and Path(self.script).is_file()

    @property
    def pid(self) -> int | None:
        zygote = self._zygote
        return zygote.popen.pid if zygote is not None and zygote.alive else None

    def start(self) -> asyncio.Task[_Zygote]:
        """Start a zygote in the background (or return the start under way)."""
        if self._starting is None or self._starting.done():
            self._starting = asyncio.create_task(self._start(), name="warm-engine-start")
        return self._starting

    async def _start(self) -> _Zygote:
        started = time.monotonic()
        try:
            zygote = _Zygote(self)
        except OSError as exc:
            raise self._failed(f"can't start it: {exc}") from None
        try:
            self.ready_info = await asyncio.wait_for(
                asyncio.shield(zygote.ready), self.start_timeout_s
            )
        except BaseException as exc:
            await zygote.close()
            if isinstance(exc, TimeoutError):
                raise self._failed(
                    f"it did not get ready in {self.start_timeout_s:.0f} s"
                ) from None
            if isinstance(exc, WarmUnavailable):
                raise self._failed(str(exc)) from None
            raise
        self._failure = ""
        self._zygote = zygote
        missing = self.ready_info.get("missing") or {}
        log.info(
            "warm engine ready (pid %s) in %.1f s%s",
            zygote.popen.pid,
            time.monotonic() - started,
            f"; not preloaded: {', '.join(sorted(missing))}" if missing else "",
        )
        return zygote

    def _failed(self, reason: str) -> WarmUnavailable:
        self._failed_at, self._failure = time.monotonic(), reason
        log.warning("warm engine unavailable: %s; steps start cold", reason)
        return WarmUnavailable(reason)

    async def ready(self) -> _Zygote:
        """A live, current zygote; :class:`WarmUnavailable` when there can't be one now."""
        zygote = self._zygote
        if zygote is not None and zygote.alive and zygote.fingerprint == _fingerprint():
            return zygote
        if zygote is not None:
            self._zygote = None
            log.info("warm engine: replacing it (%s)", zygote.dead or "its packages changed")
            # Steps it already runs (other jobs') go on; it ends after the last.
            retiring = asyncio.create_task(zygote.retire(), name="warm-engine-retire")
            self._retiring.add(retiring)
            retiring.add_done_callback(self._retiring.discard)
        idle = self._starting is None or self._starting.done()
        if idle and self._failure and time.monotonic() - self._failed_at < RETRY_AFTER_S:
            raise WarmUnavailable(self._failure)
        return await asyncio.shield(self.start())

    async def spawn(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None,
        policy: SandboxPolicy | None,
    ) -> WarmProcess:
        """Fork one step running ``argv`` (``sleap-nn`` and its arguments)."""
        zygote = await self.ready()
        try:
            return await zygote.spawn(argv, env, cwd, policy)
        except WarmUnavailable:
            if zygote.alive:
                raise
        # It died before it could fork the step (e.g. killed while idle): a fresh one.
        zygote = await self.ready()
        return await zygote.spawn(argv, env, cwd, policy)

    async def close(self) -> None:
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
        zygote, self._zygote = self._zygote, None
        if zygote is not None:
            await zygote.close()
        for retiring in list(self._retiring):
            retiring.cancel()
            with contextlib.suppress(BaseException):
                await retiring
