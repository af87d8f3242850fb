"""A worker's link to the server: register, heartbeat, receive relayed messages, reconnect.

The link survives server restarts and network loss: it reconnects with
exponential backoff and full jitter (tenacity) and registers again with the same
worker id. A refused key (revoked, unknown, room expired) ends it with
:class:`WorkerRefused` instead: retrying can't fix that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from sleap_rtc.protocol.signaling import (
    MAX_MESSAGE_BYTES,
    Capabilities,
    Delivery,
    ErrorMessage,
    Gpu,
    Heartbeat,
    JobControl,
    JobControlResult,
    JobReport,
    ProtocolError,
    Register,
    Registered,
    Relay,
    WorkerStatus,
    decode_server,
    encode,
)

log = logging.getLogger("sleap_rtc.worker")

ControlFn = Callable[[JobControl], Awaitable[JobControlResult]]

#: Server answers that retrying can't change.
FATAL_CODES = frozenset(
    {
        "INVALID_KEY",
        "KEY_REVOKED",
        "ROOM_EXPIRED",
        "UNAUTHORIZED",
        "UNSUPPORTED_VERSION",
        "WORKER_ID_TAKEN",
    }
)


class WorkerRefused(Exception):
    """The server won't take this worker (bad or revoked key, wrong room)."""


class _Retry(Exception):
    """The connection failed or dropped; try again after a pause."""


def load_worker_id(state_dir: Path) -> str:
    """The worker's id, kept in its state folder so it survives restarts."""
    path = state_dir / "worker_id"
    try:
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True)
    value = f"worker-{secrets.token_hex(4)}"
    tmp = path.with_name("worker_id.tmp")
    tmp.write_text(value + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return value


StatusFn = Callable[[], tuple[WorkerStatus, int]]
RelayFn = Callable[[Delivery], Awaitable[None]]


class PresenceLink:
    def __init__(
        self,
        server_url: str,
        key: str,
        worker_id: str,
        capabilities: Capabilities,
        *,
        status: StatusFn | None = None,
        refresh_gpus: Callable[[list[Gpu]], list[Gpu]] | None = None,
        on_relay: RelayFn | None = None,
        on_registered: Callable[[Registered], None] | None = None,
        on_control: ControlFn | None = None,
        expected_room: str | None = None,
        max_backoff_s: float = 30.0,
        open_timeout_s: float = 10.0,
    ) -> None:
        base = server_url.rstrip("/")
        self.ws_url = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        self.ws_url += "/v1/worker"
        self._key = key
        self.worker_id = worker_id
        self.capabilities = capabilities
        self._status = status or (lambda: ("idle", 0))
        self._refresh_gpus = refresh_gpus
        self._on_relay = on_relay
        self._on_registered = on_registered
        self._on_control = on_control
        self._controls: set[asyncio.Task[None]] = set()
        self.registration: Registered | None = None
        self.expected_room = expected_room
        self.max_backoff_s = max_backoff_s
        self.open_timeout_s = open_timeout_s
        self.room: str | None = None
        self.registered = asyncio.Event()
        self.registrations = 0
        self._ws: ClientConnection | None = None
        self._gpus = list(capabilities.gpus)
        self._poke = asyncio.Event()

    # -- public -------------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until cancelled; raises :class:`WorkerRefused` if refused."""
        while True:
            retrying = AsyncRetrying(
                retry=retry_if_exception_type(_Retry),
                wait=wait_random_exponential(multiplier=0.5, max=self.max_backoff_s),
                before_sleep=self._before_sleep,
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    ws, registered = await self._connect()
            # Registered: a later drop starts the backoff from the beginning again.
            await self._serve(ws, registered)

    def status_changed(self) -> None:
        """Send a heartbeat now (e.g. a job started or finished)."""
        self._poke.set()

    async def relay(self, to: str, payload: dict[str, Any]) -> bool:
        """Send ``payload`` to client session ``to``; False when not connected."""
        return await self.send(Relay(to=to, payload=payload))

    async def drained(self, timeout_s: float = 30.0) -> bool:
        """Wait until the server has read everything sent so far (a ping's pong comes
        back only then); False when not connected or it took longer than ``timeout_s``.

        A sender of many messages in a row waits on this now and then, so the server's
        read queue never holds so much that its own keepalive pings time out.
        """
        ws = self._ws
        if ws is None:
            return False
        try:
            pong = await ws.ping()
            await asyncio.wait_for(pong, timeout_s)
        except (ConnectionClosed, TimeoutError):
            return False
        return True

    async def send(self, message: Relay | JobReport | JobControlResult) -> bool:
        """Send a message to the server; False when not connected."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(encode(message))
        except ConnectionClosed:
            return False
        return True

    # -- connection -----------------------------------------------------------------------

    @staticmethod
    def _before_sleep(state: RetryCallState) -> None:
        wait = state.upcoming_sleep
        outcome = state.outcome
        reason = outcome.exception() if outcome is not None else None
        log.warning("server not reachable (%s); retrying in %.1f s", reason, wait)

    async def _connect(self) -> tuple[ClientConnection, Registered]:
        try:
            ws = await connect(
                self.ws_url,
                additional_headers={"Authorization": f"Bearer {self._key}"},
                max_size=MAX_MESSAGE_BYTES + 1024,
                open_timeout=self.open_timeout_s,
                ping_interval=20,
                ping_timeout=20,
                close_timeout=5,
            )
        except InvalidStatus as exc:
            raise _Retry(f"HTTP {exc.response.status_code} from {self.ws_url}") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise _Retry(str(exc) or type(exc).__name__) from None
        status, running = self._status()
        register = Register(
            worker_id=self.worker_id,
            capabilities=self.capabilities,
            status=status,
            running_jobs=running,
        )
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode(register))
        try:
            raw = await asyncio.wait_for(ws.recv(), self.open_timeout_s)
            reply = decode_server(raw)
        except (ConnectionClosed, TimeoutError, ProtocolError) as exc:
            await ws.close()
            raise _Retry(f"registration failed: {exc}") from None
        if isinstance(reply, ErrorMessage):
            await ws.close()
            if reply.code in FATAL_CODES:
                raise WorkerRefused(f"the server refused this worker: {reply.message}")
            raise _Retry(f"registration refused: {reply.message}")
        if not isinstance(reply, Registered):
            await ws.close()
            raise _Retry(f"expected 'registered', got {reply.type!r}")
        if self.expected_room is not None and reply.room != self.expected_room:
            await ws.close()
            raise WorkerRefused(
                f"the worker key is for room {reply.room!r}, not {self.expected_room!r}; "
                f"use a key made with `sleap-rtc keys create --room {self.expected_room}`"
            )
        return ws, reply

    async def _serve(self, ws: ClientConnection, registered: Registered) -> None:
        self._ws = ws
        self.room = registered.room
        self.registration = registered
        if self._on_registered is not None:
            self._on_registered(registered)
        self.registrations += 1
        self.registered.set()
        log.info("registered as %s in room %s (%s)", self.worker_id, registered.room, self.ws_url)
        beat = asyncio.create_task(self._heartbeats(ws, registered.heartbeat_interval))
        try:
            async for raw in ws:
                try:
                    message = decode_server(raw)
                except ProtocolError as exc:
                    log.warning("ignoring a bad message from the server: %s", exc)
                    continue
                if isinstance(message, Delivery):
                    if self._on_relay is not None:
                        try:
                            await self._on_relay(message)
                        except Exception:
                            log.exception("handling a relayed message failed")
                elif isinstance(message, JobControl):
                    self._control(message)
                elif isinstance(message, ErrorMessage):
                    log.warning("server: %s (%s)", message.message, message.code)
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
            self.registered.clear()
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        code = ws.close_code
        detail = f"{code} {ws.close_reason or ''}".strip() if code else "connection lost"
        log.warning("disconnected from the server (%s); reconnecting", detail)

    def _control(self, message: JobControl) -> None:
        """Answer the server's stop/cancel in a task: a cancel may take seconds, and
        the connection's reader must go on meanwhile."""

        async def answer() -> None:
            if self._on_control is None:
                reply = JobControlResult(
                    request_id=message.request_id,
                    ok=False,
                    code="UNSUPPORTED",
                    message="this worker does not take job controls from the server",
                )
            else:
                try:
                    reply = await self._on_control(message)
                except Exception:
                    log.exception("%s of job %s failed", message.action, message.job_id)
                    reply = JobControlResult(
                        request_id=message.request_id,
                        ok=False,
                        code="INTERNAL",
                        message="the worker failed to carry it out; see its log",
                    )
            await self.send(reply)

        task = asyncio.create_task(answer())
        self._controls.add(task)
        task.add_done_callback(self._controls.discard)

    async def _heartbeats(self, ws: ClientConnection, interval: float) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), interval)
            self._poke.clear()
            if self._refresh_gpus is not None and self._gpus:
                self._gpus = await asyncio.to_thread(self._refresh_gpus, self._gpus)
            status, running = self._status()
            beat = Heartbeat(status=status, running_jobs=running, gpus=self._gpus or None)
            try:
                await ws.send(encode(beat))
            except ConnectionClosed:
                return
