"""The relay lane socket (``/v1/lane``): a worker's half waits, its client's pairs.

Protocol: :mod:`sleap_rtc.protocol.relaylane`; who may wait and pair, and what
frames cost: :mod:`sleap_rtc.server.service.lanes`. Here: the worker's half must
come with the key its registered connection holds and name that worker id; once
paired, binary frames of at most
:data:`~sleap_rtc.protocol.relaylane.MAX_LANE_MESSAGE` bytes pass both ways, and a
text message or a longer one ends the pair.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter
from starlette.websockets import WebSocket, WebSocketDisconnect

from sleap_rtc.protocol.codec import ProtocolError
from sleap_rtc.protocol.relaylane import (
    MAX_LANE_MESSAGE,
    PAIR_TIMEOUT_S,
    ClientLaneHello,
    LaneStatus,
    WorkerLaneHello,
    decode_hello,
)
from sleap_rtc.protocol.signaling import CLOSE_FORBIDDEN, CLOSE_PROTOCOL, CLOSE_UNAUTHORIZED
from sleap_rtc.server.auth import AuthError
from sleap_rtc.server.deps import StateDep, bearer, verify_access
from sleap_rtc.server.logs import log
from sleap_rtc.server.service.lanes import LaneBoard, LaneRefused, Waiting
from sleap_rtc.server.state import ServerState

router = APIRouter()


async def _status(ws: WebSocket, op: str, message: str = "") -> None:
    status = LaneStatus.model_validate({"op": op, "message": message[:512]})
    await ws.send_text(status.model_dump_json())


async def _refuse(ws: WebSocket, message: str, close_code: int) -> None:
    with contextlib.suppress(Exception):
        await _status(ws, "refused", message)
        await ws.close(close_code, message[:120])


@router.websocket("/v1/lane")
async def lane_socket(ws: WebSocket, state: StateDep) -> None:
    """One half of a relay lane: a worker's (waits) or a client's (pairs and passes)."""
    await ws.accept()
    board = state.lanes
    if not board.enabled:
        await _refuse(ws, "relay lanes are off on this server", CLOSE_FORBIDDEN)
        return
    secret = bearer(ws.headers.get("authorization"))
    if secret is None:
        await _refuse(ws, "no credentials given", CLOSE_UNAUTHORIZED)
        return
    try:
        first = await asyncio.wait_for(ws.receive(), state.settings.register_timeout_s)
        text = first.get("text")
        if first["type"] == "websocket.disconnect":
            return
        if not isinstance(text, str):
            raise ProtocolError("INVALID_MESSAGE", "a lane starts with its hello, as text")
        hello = decode_hello(text)
    except TimeoutError:
        await _refuse(ws, "no hello in time", CLOSE_PROTOCOL)
        return
    except (ProtocolError, WebSocketDisconnect, RuntimeError) as exc:
        await _refuse(ws, getattr(exc, "message", "bad hello"), CLOSE_PROTOCOL)
        return
    try:
        if isinstance(hello, WorkerLaneHello):
            await _worker_half(state, ws, secret, hello)
        else:
            await _client_half(state, ws, secret, hello)
    except LaneRefused as exc:
        await _refuse(ws, exc.message, exc.close_code)


async def _worker_half(
    state: ServerState, ws: WebSocket, secret: str, hello: WorkerLaneHello
) -> None:
    try:
        key, room = await state.worker_keys.authenticate(secret)
    except AuthError as exc:
        raise LaneRefused(exc.message, CLOSE_UNAUTHORIZED) from None
    online = state.hub.worker(room.id, hello.worker_id)
    if online is None or online.key_id != key.id:
        raise LaneRefused(f"worker {hello.worker_id!r} is not online with this key")
    conn = online.conn
    waiting = Waiting((room.id, hello.worker_id), hello.user_id, ws, lambda: not conn.closing)
    state.lanes.wait(hello.digest, waiting)
    try:
        await _status(ws, "waiting")
        client = await asyncio.wait_for(asyncio.shield(waiting.paired), PAIR_TIMEOUT_S)
    except TimeoutError:
        raise LaneRefused("no client took the relay lane in time", CLOSE_PROTOCOL) from None
    finally:
        state.lanes.forget(hello.digest, waiting)
    if client is None:
        raise LaneRefused("the relay lane was refused to its client")
    await waiting.over.wait()


async def _client_half(
    state: ServerState, ws: WebSocket, secret: str, hello: ClientLaneHello
) -> None:
    try:
        claims = await verify_access(state, secret)
    except AuthError as exc:
        raise LaneRefused(exc.message, CLOSE_UNAUTHORIZED) from None
    board = state.lanes
    # The worker names the account as tickets do: its id as text.
    user = str(claims.user_id)
    waiting = board.take(hello.token, user)
    try:
        try:
            await _status(waiting.ws, "paired")
            await _status(ws, "paired")
        except Exception:
            waiting.paired.set_result(None)
            return
        waiting.paired.set_result(ws)
        passes = [
            asyncio.create_task(_pass(board, waiting, waiting.ws, ws, user)),
            asyncio.create_task(_pass(board, waiting, ws, waiting.ws, user)),
        ]
        _, pending = await asyncio.wait(passes, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in passes:
            with contextlib.suppress(BaseException):
                await task
        ended = [t for t in passes if not t.cancelled() and t.exception() is None]
        reason = next((t.result() for t in ended if t.result()), "")
        code = CLOSE_PROTOCOL if reason else 1000
        for end in (ws, waiting.ws):
            with contextlib.suppress(Exception):
                await end.close(code, reason[:120])
        if reason:
            log.info("relay lane of user %s ended: %s", user, reason)
    finally:
        board.done(user)
        waiting.over.set()


async def _pass(
    board: LaneBoard, pair: Waiting, source: WebSocket, target: WebSocket, user_id: str
) -> str:
    """Frames from ``source`` to ``target`` until either ends; a reason if one broke a rule."""
    while pair.alive():
        try:
            message = await source.receive()
        except (WebSocketDisconnect, RuntimeError):
            return ""
        if message["type"] == "websocket.disconnect":
            return ""
        data = message.get("bytes")
        if data is None:
            return "a relay lane carries binary frames only"
        if len(data) > MAX_LANE_MESSAGE:
            return f"a frame of {len(data)} bytes, over {MAX_LANE_MESSAGE}"
        await board.spend(user_id, len(data))
        try:
            await target.send_bytes(data)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return ""
    return "the worker is no longer online"
