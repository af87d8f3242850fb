"""The WebSocket endpoints: workers (``/v1/worker``) and clients (``/v1/client``).

A worker authenticates with its key and registers; a client with an access
token. From then on both send signaling messages: heartbeats (workers), relay
messages to each other (forwarded under the rules of
:mod:`sleap_rtc.server.service.relay`), re-authentication (clients) and pings.
What every connection may send is bounded: a socket reads no faster than the
sender's relay budget allows, and a connection that keeps sending messages the
protocol can't decode is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from starlette.websockets import WebSocket, WebSocketDisconnect

from sleap_rtc.protocol.signaling import (
    CLOSE_FORBIDDEN,
    CLOSE_PROTOCOL,
    CLOSE_REPLACED,
    CLOSE_TOO_BIG,
    CLOSE_UNAUTHORIZED,
    MAX_MESSAGE_BYTES,
    ErrorMessage,
    Heartbeat,
    JobControlResult,
    JobReport,
    Ping,
    Pong,
    ProtocolError,
    Reauth,
    Register,
    Registered,
    Relay,
    Welcome,
    decode_peer,
)
from sleap_rtc.server import views
from sleap_rtc.server.auth import AuthError
from sleap_rtc.server.deps import StateDep, bearer, verify_access
from sleap_rtc.server.errors import ApiError
from sleap_rtc.server.hub import ClientConn, Connection, WorkerConn
from sleap_rtc.server.logs import log
from sleap_rtc.server.notify import RoomRef, WorkerRef
from sleap_rtc.server.service import control, jobindex, relay, workers
from sleap_rtc.server.state import ServerState
from sleap_rtc.server.sweep import worker_event, worker_left

#: A connection that sends this many bad messages is closed.
MAX_PROTOCOL_ERRORS = 20

router = APIRouter()


async def _receive(ws: WebSocket) -> str | bytes | None:
    """The next message, or None once the peer has gone."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    if text is not None:
        return str(text)
    data = message.get("bytes")
    return bytes(data) if data is not None else b""


async def _refuse(ws: WebSocket, code: str, message: str, close_code: int) -> None:
    """Tell the peer why, then close; a peer that has gone already is no error."""
    with contextlib.suppress(Exception):
        await ws.send_text(ErrorMessage(code=code, message=message).model_dump_json())
        await ws.close(close_code, message[:120])


async def _messages(
    state: ServerState, ws: WebSocket, conn: Connection, sender: str
) -> AsyncIterator[Any]:
    """Decoded messages until the peer leaves; bad ones are answered and skipped."""
    errors = 0
    while True:
        try:
            raw = await _receive(ws)
        except (WebSocketDisconnect, RuntimeError):
            return
        if raw is None:
            return
        if len(raw) > MAX_MESSAGE_BYTES:
            # The socket reads relay lane frames too (up to 1 MiB); signaling stays small.
            await conn.close_and_wait(CLOSE_TOO_BIG, f"message over {MAX_MESSAGE_BYTES} bytes")
            return
        await state.relay_budget.spend(sender, len(raw))
        try:
            yield decode_peer(raw)
        except ProtocolError as exc:
            errors += 1
            conn.send(ErrorMessage(code=exc.code, message=exc.message))
            if errors >= MAX_PROTOCOL_ERRORS:
                conn.close(CLOSE_PROTOCOL, "too many invalid messages")
                return


@router.websocket("/v1/worker")
async def worker_socket(ws: WebSocket, state: StateDep) -> None:
    """A worker: key, then ``register`` within the timeout, then heartbeats and relays.

    A worker id belongs to the key that first registered it (``WORKER_ID_TAKEN``
    otherwise); the same key connecting again replaces its old connection.
    """
    await ws.accept()
    secret = bearer(ws.headers.get("authorization"))
    if secret is None:
        await _refuse(ws, "UNAUTHORIZED", "no worker key given", CLOSE_UNAUTHORIZED)
        return
    try:
        key, room = await state.worker_keys.authenticate(secret)
    except AuthError as exc:
        log.info("worker refused: %s", exc.message)
        await _refuse(ws, exc.code, exc.message, CLOSE_UNAUTHORIZED)
        return
    try:
        first = await asyncio.wait_for(_receive(ws), state.settings.register_timeout_s)
    except (TimeoutError, WebSocketDisconnect):
        await _refuse(ws, "TIMEOUT", "no register message in time", CLOSE_PROTOCOL)
        return
    if first is None:
        return
    try:
        register = decode_peer(first)
    except ProtocolError as exc:
        await _refuse(ws, exc.code, exc.message, CLOSE_PROTOCOL)
        return
    if not isinstance(register, Register):
        await _refuse(ws, "NOT_REGISTERED", "send register first", CLOSE_PROTOCOL)
        return
    since = await state.registrations.submit(
        workers.Registration(room.id, room.name, register.worker_id, key.id, register.capabilities)
    )
    if isinstance(since, ApiError):
        log.info(
            "worker %s refused in room %s (key %s): %s",
            register.worker_id,
            room.name,
            key.id,
            since.code,
        )
        await _refuse(ws, since.code, since.message, CLOSE_FORBIDDEN)
        return
    conn = Connection(ws, state.settings.send_queue_limit)
    worker = WorkerConn(
        conn=conn,
        room_id=room.id,
        room_name=room.name,
        worker_id=register.worker_id,
        key_id=key.id,
        capabilities=register.capabilities,
        status=register.status,
        running_jobs=register.running_jobs,
    )
    worker.set_gpus(list(register.capabilities.gpus))
    if not state.hub.add_worker(worker, CLOSE_REPLACED):
        taken = workers.worker_id_taken(worker.worker_id, room.name)
        await _refuse(ws, taken.code, taken.message, CLOSE_FORBIDDEN)
        return
    worker_event(state, worker, online=True)
    conn.start()
    conn.send(
        Registered(
            worker_id=worker.worker_id,
            room=room.name,
            room_id=room.id,
            heartbeat_interval=state.settings.heartbeat_interval_s,
            ticket_public_key=state.signer.public_pem(),
            issuer=state.signer.issuer,
            index_since=since,
        )
    )
    log.info(
        "worker %s (%s) online in room %s",
        worker.worker_id,
        register.capabilities.name,
        room.name,
    )
    try:
        await _worker_loop(state, worker)
    finally:
        gone = state.hub.remove_worker(worker)
        control.disconnected(worker.controls)
        await conn.finish()
        if gone:
            worker_left(state, worker)
            log.info("worker %s (%s) offline", worker.worker_id, worker.capabilities.name)
            await state.database.run(
                workers.touch_workers, [(worker.room_id, worker.worker_id, worker.last_seen)]
            )


@router.websocket("/v1/client")
async def client_socket(ws: WebSocket, state: StateDep) -> None:
    """A client session: an access token, then relays, re-authentication and pings.

    The session ends when its access token expires (unless renewed with
    ``reauth``) and when its login session ends.
    """
    await ws.accept()
    token = bearer(ws.headers.get("authorization"))
    if token is None:
        await _refuse(ws, "UNAUTHORIZED", "not logged in", CLOSE_UNAUTHORIZED)
        return
    try:
        claims = await verify_access(state, token)
    except AuthError as exc:
        await _refuse(ws, exc.code, exc.message, CLOSE_UNAUTHORIZED)
        return
    conn = Connection(ws, state.settings.send_queue_limit)
    client = ClientConn(
        conn=conn,
        session_id=f"c-{uuid.uuid4().hex[:16]}",
        user_id=claims.user_id,
        username=claims.username,
        expires_at=claims.expires_at,
        login_session=claims.session_id,
    )
    conn.start()
    state.hub.add_client(client)
    conn.send(Welcome(session_id=client.session_id, user=client.username))
    try:
        await _client_loop(state, client)
    finally:
        state.hub.remove_client(client)
        await conn.finish()


async def _worker_loop(state: ServerState, worker: WorkerConn) -> None:
    conn = worker.conn
    async for message in _messages(state, conn.ws, conn, worker.sender_key):
        worker.heard()
        if isinstance(message, Heartbeat):
            gpus = list(message.gpus) if message.gpus is not None else None
            if worker.report(message.status, message.running_jobs, gpus):
                worker_event(state, worker, online=True)
        elif isinstance(message, Relay):
            await relay.from_worker(state.database, state.hub, worker, message)
        elif isinstance(message, JobReport):
            await _job_report(state, worker, message)
        elif isinstance(message, JobControlResult):
            control.answered(worker.controls, message)
        elif isinstance(message, Ping):
            conn.send(Pong(nonce=message.nonce))
        else:
            conn.send(
                ErrorMessage(
                    code="UNEXPECTED",
                    message=f"a registered worker can't send {message.type!r}",
                )
            )


async def _job_report(state: ServerState, worker: WorkerConn, report: JobReport) -> None:
    """Index a worker's job; the connection says whose it is, so it can't write others'."""
    try:
        recorded = await state.database.run(
            jobindex.record_report, worker.room_id, worker.worker_id, report
        )
    except Exception:
        log.exception("indexing job %s of worker %s failed", report.job.job_id, worker.worker_id)
        worker.conn.send(ErrorMessage(code="INDEX_FAILED", message="the job index is unavailable"))
        return
    _job_events(state, worker, report, recorded)
    if recorded.changed:
        state.notifier.job_changed(
            RoomRef(worker.room_id, worker.room_name),
            WorkerRef(worker.worker_id, worker.capabilities.name),
            recorded,
        )


def _job_events(
    state: ServerState, worker: WorkerConn, report: JobReport, recorded: jobindex.Recorded
) -> None:
    """Tell the room's dashboards what a report changed: the job, new epochs, new log."""
    key = (worker.worker_id, report.job.job_id)
    room_id = worker.room_id
    view = views.job_view(
        state.hub,
        room_id,
        worker.room_name,
        worker.capabilities.name,
        worker.worker_id,
        recorded.job,
        datetime.now(UTC),
    )
    state.events.publish(room_id, "job", view.model_dump(mode="json"), key)
    if report.points:
        points = [p.model_dump(mode="json") for p in report.points]
        state.events.publish(room_id, "points", {"points": points}, key)
    if report.log:
        lines = [line.model_dump(mode="json") for line in report.log]
        state.events.publish(room_id, "log", {"lines": lines}, key)


async def _client_loop(state: ServerState, client: ClientConn) -> None:
    conn = client.conn
    async for message in _messages(state, conn.ws, conn, client.sender_key):
        if datetime.now(UTC) >= client.expires_at:
            conn.send(
                ErrorMessage(
                    code="TOKEN_EXPIRED",
                    message="access token has expired; reconnect with a fresh one",
                )
            )
            conn.close(CLOSE_UNAUTHORIZED, "access token expired")
            return
        if isinstance(message, Relay):
            await relay.from_client(state.database, state.hub, client, message)
        elif isinstance(message, Reauth):
            try:
                claims = await verify_access(state, message.token)
            except AuthError as exc:
                conn.send(ErrorMessage(code=exc.code, message=exc.message))
                continue
            if claims.user_id != client.user_id:
                conn.send(ErrorMessage(code="FORBIDDEN", message="token is for another user"))
                continue
            client.expires_at = claims.expires_at
            client.login_session = claims.session_id
        elif isinstance(message, Ping):
            conn.send(Pong(nonce=message.nonce))
        else:
            conn.send(
                ErrorMessage(code="UNEXPECTED", message=f"a client can't send {message.type!r}")
            )
