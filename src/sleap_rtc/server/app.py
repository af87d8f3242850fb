"""The server's ASGI app: HTTP API for accounts, rooms and keys; WebSockets for presence.

The server never runs jobs and never sees files: it knows who may talk to whom,
which workers are online, and passes signaling messages between members of a room.

Size: every route is still a closure in one factory; they split into routers per area
(accounts, rooms, keys, presence) as the job index adds its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from limits import RateLimitItem
from limits import parse as parse_limit
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from sleap_rtc import __version__
from sleap_rtc.protocol import api
from sleap_rtc.protocol.signaling import (
    CLOSE_FORBIDDEN,
    CLOSE_GOING_AWAY,
    CLOSE_HEARTBEAT_TIMEOUT,
    CLOSE_PROTOCOL,
    CLOSE_REPLACED,
    CLOSE_UNAUTHORIZED,
    Delivery,
    ErrorMessage,
    Heartbeat,
    Ping,
    Pong,
    ProtocolError,
    Reauth,
    Register,
    Registered,
    Relay,
    Sender,
    Welcome,
    decode_peer,
)
from sleap_rtc.server import db, logs, service
from sleap_rtc.server.auth import AccessClaims, AuthError, PasswordProvider, TokenSigner
from sleap_rtc.server.errors import ApiError
from sleap_rtc.server.hub import MEMBERSHIP_TTL_S, ClientConn, Connection, Hub, WorkerConn
from sleap_rtc.server.models import Room, WorkerKey
from sleap_rtc.server.settings import ServerSettings

log = logging.getLogger("sleap_rtc.server")
logs.install(log)

T = TypeVar("T")

#: A connection that sends this many bad messages is closed.
MAX_PROTOCOL_ERRORS = 20
#: How often a sender over its relay budget is looked at again.
THROTTLE_STEP_S = 0.05


@dataclass
class ServerState:
    settings: ServerSettings
    engine: Engine
    sessions: sessionmaker[Session]
    signer: TokenSigner
    hub: Hub
    limiter: MovingWindowRateLimiter
    #: What each sender relays, in KiB (a counter per sender, not a list of hits).
    relay_limiter: SlidingWindowCounterRateLimiter
    relay_budget: RateLimitItem
    #: Logins being checked right now, per rate-limit key: each may still fail, so
    #: it counts against the limit until it has.
    logins_in_flight: dict[tuple[str, ...], int]

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(session, *args)`` in a worker thread with its own session."""

        def call() -> T:
            with self.sessions() as session:
                return fn(session, *args)

        return await run_in_threadpool(call)


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


StateDep = Annotated[ServerState, Depends(_state)]


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


SESSION_ENDED = "this login session has ended (logged out); run `sleap-rtc login` again"


async def _verify_access(state: ServerState, token: str) -> AccessClaims:
    """The claims of a valid access token whose login session is still going.

    Raises :class:`AuthError`. The session is looked up every time, so logging
    out ends the access token at once instead of when it expires.
    """
    claims = state.signer.verify_access(token)
    if not await state.db(service.session_active, claims.session_id):
        raise AuthError("SESSION_ENDED", SESSION_ENDED)
    return claims


async def _claims(request: Request, state: StateDep) -> AccessClaims:
    token = _bearer(request.headers.get("authorization"))
    if token is None:
        raise ApiError(401, "UNAUTHORIZED", "not logged in; run `sleap-rtc login`")
    try:
        return await _verify_access(state, token)
    except AuthError as exc:
        raise ApiError(401, exc.code, exc.message) from None


UserDep = Annotated[AccessClaims, Depends(_claims)]


def _tokens_body(tokens: service.Tokens) -> api.TokenPair:
    return api.TokenPair(
        access_token=tokens.access_token,
        access_expires_at=tokens.access_expires_at,
        refresh_token=tokens.refresh_token,
        refresh_expires_at=tokens.refresh_expires_at,
        user=api.UserView(username=tokens.user.username, is_admin=tokens.user.is_admin),
    )


def _key_view(key: WorkerKey, room: Room, creator: str | None) -> api.KeyView:
    return api.KeyView(
        id=key.id,
        name=key.name,
        room=room.name,
        created_by=creator,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
    )


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _best_gpu_memory(gpus: list[dict[str, Any]]) -> int:
    best = 0
    for gpu in gpus:
        free = gpu.get("memory_free_mb")
        best = max(best, int(free if free is not None else gpu.get("memory_total_mb") or 0))
    return best


def worker_entry(row: service.WorkerRow, room_name: str, live: WorkerConn | None) -> dict[str, Any]:
    """One worker as in :class:`api.WorkerView`, built as plain data.

    Listing a room with a thousand workers builds no model per worker: the live
    part comes from the connection, the rest from the stored capabilities.
    """
    worker_id, name, hostname, stored, last_seen = row
    caps: dict[str, Any] = live.capabilities_dict if live else (stored or {})
    status = "offline"
    if live is not None:
        status = "busy" if live.status == "busy" else "online"
    return {
        "id": worker_id,
        "name": caps.get("name") or name,
        "room": room_name,
        "status": status,
        "hostname": caps.get("hostname") or hostname,
        "accelerator": caps.get("accelerator", "cpu"),
        "gpus": live.gpus_dicts if live else list(caps.get("gpus", [])),
        "running_jobs": live.running_jobs if live else 0,
        "max_concurrent_jobs": int(caps.get("max_concurrent_jobs", 1)),
        "sleap_nn_version": caps.get("sleap_nn_version"),
        "backends": list(caps.get("backends", [])),
        "mounts": list(caps.get("mounts", [])),
        "sandbox": str(caps.get("sandbox", "off")),
        "last_seen": _iso(live.last_seen if live else last_seen),
        "connected_since": _iso(live.connected_at) if live else None,
    }


def build_state(settings: ServerSettings) -> ServerState:
    """Open the database, apply migrations and load the signing key."""
    engine = db.create_engine(settings.database_url)
    db.upgrade(engine)
    sessions = db.session_factory(engine)
    with sessions() as session:
        signer = TokenSigner.load_or_create(session, settings.issuer)
    return ServerState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        signer=signer,
        hub=Hub(),
        limiter=MovingWindowRateLimiter(MemoryStorage()),
        relay_limiter=SlidingWindowCounterRateLimiter(MemoryStorage()),
        relay_budget=parse_limit(f"{settings.relay_kib_per_second}/second"),
        logins_in_flight={},
    )


def create_app(settings: ServerSettings, state: ServerState | None = None) -> FastAPI:
    state = state or build_state(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(_sweep(state))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            state.hub.close_all(CLOSE_GOING_AWAY, "server is shutting down")
            await run_in_threadpool(_save_last_seen, state)
            state.engine.dispose()

    app = FastAPI(
        title="sleap-rtc server",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.server = state

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": exc.retry_after} if isinstance(exc, _RateLimited) else None
        body = api.ErrorResponse(error=api.ErrorBody(code=exc.code, message=exc.message))
        return JSONResponse(body.model_dump(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}")
        body = api.ErrorResponse(error=api.ErrorBody(code="INVALID", message="; ".join(parts)))
        return JSONResponse(body.model_dump(), status_code=422)

    _routes(app)
    _sockets(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


def _too_large(limit: int) -> JSONResponse:
    body = api.ErrorResponse(
        error=api.ErrorBody(
            code="TOO_LARGE", message=f"request body is over the limit of {limit} bytes"
        )
    )
    return JSONResponse(body.model_dump(), status_code=413)


class BodyLimit:
    """Refuse HTTP request bodies over ``limit`` bytes (413) before anything parses them.

    A declared Content-Length over the limit is refused at once; a body without
    one (chunked) is read up to the limit and refused as soon as it goes over.
    What was read is handed on to the app, so it reads the body as usual. The
    rest of an over-long body is read and dropped (up to a bound), so the client
    gets the answer instead of a reset connection.
    """

    #: An over-long body is drained up to this many times the limit, then cut off.
    DRAIN_FACTOR = 16

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = -1
            if size < 0:
                body = api.ErrorResponse(
                    error=api.ErrorBody(code="INVALID", message="Content-Length is not a number")
                )
                await JSONResponse(body.model_dump(), status_code=400)(scope, receive, send)
                return
            if size > self.limit:
                if size <= self.limit * self.DRAIN_FACTOR:
                    await self._drain(receive, 0)
                await _too_large(self.limit)(scope, receive, send)
                return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away: the app sees that instead of a body
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.limit:
                if message.get("more_body", False):
                    await self._drain(receive, received)
                await _too_large(self.limit)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                break
        replay: list[Message] = [message]

        async def replayed() -> Message:
            if replay:
                return replay.pop()
            return await receive()

        await self.app(scope, replayed, send)

    async def _drain(self, receive: Receive, received: int) -> None:
        while received <= self.limit * self.DRAIN_FACTOR:
            message = await receive()
            if message["type"] != "http.request":
                return
            received += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


class _RateLimited(ApiError):
    def __init__(self, retry_after: int) -> None:
        super().__init__(
            429,
            "RATE_LIMITED",
            f"too many failed logins; try again in {retry_after} s",
        )
        self.retry_after = str(retry_after)


def _routes(app: FastAPI) -> None:
    @app.get("/health", response_model=api.HealthView)
    async def health(state: StateDep) -> api.HealthView:
        revision = await run_in_threadpool(db.current_revision, state.engine)
        return api.HealthView(
            status="ok",
            version=__version__,
            database=state.engine.dialect.name,
            schema_revision=revision,
        )

    @app.get("/v1/auth/keys", response_model=api.PublicKeys)
    async def public_keys(state: StateDep) -> api.PublicKeys:
        return api.PublicKeys(
            issuer=state.signer.issuer,
            keys=[api.PublicKey(kid=state.signer.kid, public_key_pem=state.signer.public_pem())],
        )

    @app.post("/v1/auth/login", response_model=api.TokenPair)
    async def login(body: api.LoginRequest, request: Request, state: StateDep) -> api.TokenPair:
        address = request.client.host if request.client else "unknown"
        per_user = parse_limit(f"{state.settings.login_failures_per_minute}/minute")
        per_address = parse_limit(f"{state.settings.address_login_failures}/minute")
        keys: list[tuple[RateLimitItem, tuple[str, ...]]] = [
            (per_user, ("login", address, body.username)),
            (per_address, ("login", address, "*")),
        ]
        # Before the (slow) password check, and with nothing awaited between the
        # check and the reservation, so parallel guesses can't all slip through:
        # an attempt being checked counts as a failure until it has succeeded.
        in_flight = state.logins_in_flight
        for limit, parts in keys:
            pending = in_flight.get(parts, 0)
            if not state.limiter.test(limit, *parts, cost=pending + 1):
                stats = state.limiter.get_window_stats(limit, *parts)
                wait = int(stats.reset_time - datetime.now(UTC).timestamp()) + 1
                raise _RateLimited(max(1, wait) if stats.remaining <= 0 else 1)
        for _, parts in keys:
            in_flight[parts] = in_flight.get(parts, 0) + 1

        def attempt(session: Session) -> service.Tokens | None:
            user = PasswordProvider().authenticate(session, body.username, body.password)
            if user is None:
                return None
            return service.issue_tokens(
                session, state.signer, user, state.settings.access_ttl, state.settings.refresh_ttl
            )

        failed = False
        try:
            tokens = await state.db(attempt)
            failed = tokens is None
        finally:
            for limit, parts in keys:
                left = in_flight.get(parts, 1) - 1
                if left > 0:
                    in_flight[parts] = left
                else:
                    in_flight.pop(parts, None)
                if failed:
                    state.limiter.hit(limit, *parts)
        if tokens is None:
            log.info("failed login for %r from %s", body.username, address)
            raise ApiError(401, "BAD_CREDENTIALS", "wrong username or password")
        log.info("login: %s from %s", tokens.user.username, address)
        return _tokens_body(tokens)

    @app.post("/v1/auth/refresh", response_model=api.TokenPair)
    async def refresh(body: api.RefreshRequest, state: StateDep) -> api.TokenPair:
        tokens = await state.db(
            service.refresh_tokens,
            state.signer,
            body.refresh_token,
            state.settings.access_ttl,
            state.settings.refresh_ttl,
        )
        return _tokens_body(tokens)

    @app.post("/v1/auth/logout", status_code=204)
    async def logout(body: api.RefreshRequest, state: StateDep) -> Response:
        ended = await state.db(service.revoke_refresh, body.refresh_token)
        if ended is not None:
            state.hub.disconnect_login_session(ended, CLOSE_UNAUTHORIZED, "logged out")
        return Response(status_code=204)

    @app.get("/v1/me", response_model=api.UserView)
    async def me(user: UserDep) -> api.UserView:
        return api.UserView(username=user.username, is_admin=user.is_admin)

    @app.post("/v1/rooms", response_model=api.RoomView, status_code=201)
    async def create_room(body: api.CreateRoom, user: UserDep, state: StateDep) -> api.RoomView:
        expires = (
            datetime.now(UTC) + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
        )
        room, member = await state.db(service.create_room, user.user_id, body.name, expires)
        log.info("room %s created by %s", room.name, user.username)
        return service.room_view(room, member, 1, 0)

    @app.get("/v1/rooms", response_model=list[api.RoomView])
    async def list_rooms(user: UserDep, state: StateDep) -> list[api.RoomView]:
        rows = await state.db(service.list_rooms, user.user_id)
        return [service.room_view(r, m, n, state.hub.online_count(r.id)) for r, m, n in rows]

    @app.get("/v1/rooms/{room}", response_model=api.RoomInfo)
    async def room_info(room: str, user: UserDep, state: StateDep) -> api.RoomInfo:
        def read(session: Session) -> api.RoomInfo:
            found, member = service.room_for_member(session, user.user_id, room)
            members = service.room_members(session, found.id)
            view = service.room_view(found, member, len(members), state.hub.online_count(found.id))
            return api.RoomInfo(
                **view.model_dump(),
                owner=service.username_of(session, found.created_by),
                member_list=members,
                keys_active=service.count_active_keys(session, found.id),
                workers_known=len(service.room_workers(session, found.id)),
            )

        return await state.db(read)

    @app.delete("/v1/rooms/{room}", status_code=204)
    async def delete_room(room: str, user: UserDep, state: StateDep) -> Response:
        def remove(session: Session) -> str:
            found = service.room_for_owner(session, user.user_id, room)
            service.delete_room(session, found)
            return found.id

        room_id = await state.db(remove)
        state.hub.disconnect_room(room_id, CLOSE_FORBIDDEN, "room was deleted")
        log.info("room %s deleted by %s", room, user.username)
        return Response(status_code=204)

    @app.post("/v1/rooms/{room}/invites", response_model=api.InviteView, status_code=201)
    async def invite(
        room: str, body: api.CreateInvite, user: UserDep, state: StateDep
    ) -> api.InviteView:
        def create(session: Session) -> api.InviteView:
            found = service.room_for_owner(session, user.user_id, room)
            code, row = service.create_invite(
                session, found, user.user_id, timedelta(seconds=body.expires_in_s), body.max_uses
            )
            return api.InviteView(
                code=code, room=found.name, expires_at=row.expires_at, max_uses=row.max_uses
            )

        return await state.db(create)

    @app.post("/v1/invites/accept", response_model=api.RoomView)
    async def accept(body: api.AcceptInvite, user: UserDep, state: StateDep) -> api.RoomView:
        room, member, members = await state.db(service.accept_invite, user.user_id, body.code)
        log.info("%s joined room %s", user.username, room.name)
        return service.room_view(room, member, members, state.hub.online_count(room.id))

    @app.get("/v1/rooms/{room}/workers", response_model=list[api.WorkerView])
    async def workers(
        room: str,
        user: UserDep,
        state: StateDep,
        min_gpu_memory: Annotated[int | None, Query(ge=0)] = None,
    ) -> Response:
        def read(session: Session) -> tuple[Room, list[service.WorkerRow]]:
            found, _ = service.room_for_member(session, user.user_id, room)
            return found, service.room_worker_rows(session, found.id)

        found, rows = await state.db(read)
        entries = [worker_entry(r, found.name, state.hub.worker(found.id, r[0])) for r in rows]
        if min_gpu_memory is not None:
            entries = [e for e in entries if _best_gpu_memory(e["gpus"]) >= min_gpu_memory]
        order = {"online": 0, "busy": 1, "offline": 2}
        entries.sort(key=lambda e: (order[e["status"]], e["name"], e["id"]))
        return Response(json.dumps(entries, separators=(",", ":")), media_type="application/json")

    @app.post("/v1/rooms/{room}/tickets", response_model=api.TicketView, status_code=201)
    async def ticket(
        room: str, body: api.CreateTicket, user: UserDep, state: StateDep
    ) -> api.TicketView:
        found = await state.db(service.room_by_name_for_member, user.user_id, room)
        if found is None:
            raise ApiError(404, "NOT_FOUND", f"room {room!r} not found (or you are not a member)")
        if state.hub.worker(found.id, body.worker_id) is None:
            raise ApiError(
                404,
                "WORKER_OFFLINE",
                f"worker {body.worker_id!r} is not online in room {room!r}; "
                f"see `sleap-rtc rooms workers --room {room}`",
            )
        token, expires = state.signer.issue_ticket(
            user,
            found.name,
            found.id,
            body.worker_id,
            timedelta(seconds=state.settings.ticket_ttl_s),
        )
        return api.TicketView(
            ticket=token, worker_id=body.worker_id, room=found.name, expires_at=expires
        )

    @app.post("/v1/rooms/{room}/keys", response_model=api.NewKey, status_code=201)
    async def create_key(
        room: str, body: api.CreateKey, user: UserDep, state: StateDep
    ) -> api.NewKey:
        def create(session: Session) -> api.NewKey:
            found, _ = service.room_for_member(session, user.user_id, room)
            secret, key = service.create_key(session, found, user.user_id, body.name)
            view = _key_view(key, found, user.username)
            return api.NewKey(**view.model_dump(), secret=secret)

        created = await state.db(create)
        log.info(
            "worker key %s (%s) created in %s by %s", created.id, created.name, room, user.username
        )
        return created

    @app.get("/v1/rooms/{room}/keys", response_model=list[api.KeyView])
    async def list_keys(room: str, user: UserDep, state: StateDep) -> list[api.KeyView]:
        def read(session: Session) -> list[api.KeyView]:
            found, _ = service.room_for_member(session, user.user_id, room)
            return [_key_view(k, found, c) for k, c in service.list_keys(session, found)]

        return await state.db(read)

    @app.delete("/v1/rooms/{room}/keys/{key}", response_model=api.KeyView)
    async def revoke_key(room: str, key: str, user: UserDep, state: StateDep) -> api.KeyView:
        def revoke(session: Session) -> api.KeyView:
            found, member = service.room_for_member(session, user.user_id, room)
            row = service.revoke_key(session, found, member, key)
            return _key_view(row, found, service.username_of(session, row.created_by))

        view = await state.db(revoke)
        dropped = state.hub.disconnect_key(view.id, CLOSE_FORBIDDEN, "worker key was revoked")
        log.info(
            "worker key %s revoked in %s by %s (%d disconnected)",
            view.id,
            room,
            user.username,
            dropped,
        )
        return view


# -- WebSockets -------------------------------------------------------------------------------


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
    with contextlib.suppress(Exception):
        await ws.send_text(ErrorMessage(code=code, message=message).model_dump_json())
        await ws.close(close_code, message[:120])


def _sockets(app: FastAPI) -> None:
    @app.websocket("/v1/worker")
    async def worker_socket(ws: WebSocket) -> None:
        state: ServerState = ws.app.state.server
        await ws.accept()
        secret = _bearer(ws.headers.get("authorization"))
        if secret is None:
            await _refuse(ws, "UNAUTHORIZED", "no worker key given", CLOSE_UNAUTHORIZED)
            return
        try:
            key, room = await state.db(service.authenticate_worker, secret)
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
        try:
            await state.db(
                service.record_worker,
                room.id,
                room.name,
                register.worker_id,
                key.id,
                register.capabilities,
            )
        except ApiError as exc:
            log.info(
                "worker %s refused in room %s (key %s): %s",
                register.worker_id,
                room.name,
                key.id,
                exc.code,
            )
            await _refuse(ws, exc.code, exc.message, CLOSE_FORBIDDEN)
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
            taken = service.worker_id_taken(worker.worker_id, room.name)
            await _refuse(ws, taken.code, taken.message, CLOSE_FORBIDDEN)
            return
        conn.start()
        conn.send(
            Registered(
                worker_id=worker.worker_id,
                room=room.name,
                room_id=room.id,
                heartbeat_interval=state.settings.heartbeat_interval_s,
                ticket_public_key=state.signer.public_pem(),
                issuer=state.signer.issuer,
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
            await conn.finish()
            if gone:
                log.info("worker %s (%s) offline", worker.worker_id, worker.capabilities.name)
                await state.db(
                    service.touch_workers, [(worker.room_id, worker.worker_id, worker.last_seen)]
                )

    @app.websocket("/v1/client")
    async def client_socket(ws: WebSocket) -> None:
        state: ServerState = ws.app.state.server
        await ws.accept()
        token = _bearer(ws.headers.get("authorization"))
        if token is None:
            await _refuse(ws, "UNAUTHORIZED", "not logged in", CLOSE_UNAUTHORIZED)
            return
        try:
            claims = await _verify_access(state, token)
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


async def _throttle(state: ServerState, sender: str, size: int) -> None:
    """Wait until ``sender`` may send ``size`` more bytes.

    Reading from a sender over its budget pauses, so it is slowed down (its own
    socket backs up) and nobody else is: not the peers it sends to, not the
    server's other connections.
    """
    cost = 1 + size // 1024
    while not state.relay_limiter.hit(state.relay_budget, "relay", sender, cost=cost):
        await asyncio.sleep(THROTTLE_STEP_S)


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
        await _throttle(state, sender, len(raw))
        try:
            yield decode_peer(raw)
        except ProtocolError as exc:
            errors += 1
            conn.send(ErrorMessage(code=exc.code, message=exc.message))
            if errors >= MAX_PROTOCOL_ERRORS:
                conn.close(CLOSE_PROTOCOL, "too many invalid messages")
                return


async def _worker_loop(state: ServerState, worker: WorkerConn) -> None:
    conn = worker.conn
    async for message in _messages(state, conn.ws, conn, worker.sender_key):
        worker.heard()
        if isinstance(message, Heartbeat):
            worker.status = message.status
            worker.running_jobs = message.running_jobs
            if message.gpus is not None:
                worker.set_gpus(list(message.gpus))
        elif isinstance(message, Relay):
            target = state.hub.clients.get(message.to)
            allowed = False
            if target is not None:
                now = time.monotonic()
                if worker.members_checked.get(target.user_id, 0.0) > now:
                    allowed = True
                elif await state.db(service.is_member, target.user_id, worker.room_id):
                    worker.members_checked[target.user_id] = now + MEMBERSHIP_TTL_S
                    allowed = True
            if target is None or not allowed:
                conn.send(
                    ErrorMessage(
                        code="PEER_NOT_FOUND",
                        message=f"no client session {message.to!r} in room {worker.room_name!r}",
                        peer=message.to,
                    )
                )
                continue
            sender = Sender(
                kind="worker",
                id=worker.worker_id,
                room=worker.room_name,
                name=worker.capabilities.name,
            )
            delivery = Delivery(sender=sender, payload=message.payload)
            if not target.conn.offer(delivery, worker.sender_key):
                conn.tell_busy(message.to, _busy(f"client session {message.to!r}", message.to))
        elif isinstance(message, Ping):
            conn.send(Pong(nonce=message.nonce))
        else:
            conn.send(
                ErrorMessage(
                    code="UNEXPECTED",
                    message=f"a registered worker can't send {message.type!r}",
                )
            )


def _busy(what: str, peer: str) -> ErrorMessage:
    return ErrorMessage(
        code="PEER_BUSY",
        message=f"{what} is not keeping up with what you send; message dropped. "
        "Send less at once, or try again later.",
        peer=peer,
    )


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
            await _client_relay(state, client, message)
        elif isinstance(message, Reauth):
            try:
                claims = await _verify_access(state, message.token)
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


async def _client_relay(state: ServerState, client: ClientConn, message: Relay) -> None:
    conn = client.conn
    if message.room is None:
        conn.send(ErrorMessage(code="INVALID_MESSAGE", message="relay: room is required"))
        return
    now = time.monotonic()
    cached = client.rooms_checked.get(message.room)
    if cached is not None and cached[1] > now:
        room_id = cached[0]
    else:
        room = await state.db(service.room_by_name_for_member, client.user_id, message.room)
        if room is None:
            client.rooms_checked.pop(message.room, None)
            conn.send(
                ErrorMessage(
                    code="NOT_FOUND",
                    message=f"room {message.room!r} not found (or you are not a member)",
                )
            )
            return
        room_id = room.id
        client.rooms_checked[message.room] = (room_id, now + MEMBERSHIP_TTL_S)
    target = state.hub.worker(room_id, message.to)
    if target is None:
        conn.send(
            ErrorMessage(
                code="PEER_NOT_FOUND",
                message=f"worker {message.to!r} is not online in room {message.room!r}",
                peer=message.to,
            )
        )
        return
    # Every delivery (a WebRTC offer too) names the session and the account it came
    # from; the worker holds the channel's ticket against them.
    sender = Sender(
        kind="client",
        id=client.session_id,
        room=message.room,
        name=client.username,
        user_id=str(client.user_id),
    )
    if not target.conn.offer(Delivery(sender=sender, payload=message.payload), client.sender_key):
        conn.tell_busy(message.to, _busy(f"worker {message.to!r}", message.to))


def _save_last_seen(state: ServerState, workers: list[WorkerConn] | None = None) -> None:
    """Write last-seen times of ``workers`` (default: every connected one)."""
    chosen = list(state.hub.workers.values()) if workers is None else workers
    seen = [(w.room_id, w.worker_id, w.last_seen) for w in chosen]
    if not seen:
        return
    try:
        with state.sessions() as session:
            service.touch_workers(session, seen)
    except Exception:
        log.exception("could not save workers' last-seen times")


async def _sweep(state: ServerState) -> None:
    """Drop workers that stopped sending heartbeats; save last-seen; purge expired rows."""
    tick = min(1.0, state.settings.heartbeat_interval_s / 2)
    loop = asyncio.get_running_loop()
    last_save = last_purge = loop.time()
    while True:
        await asyncio.sleep(tick)
        for worker in state.hub.overdue(state.settings.heartbeat_timeout_s):
            if state.hub.remove_worker(worker):
                log.info(
                    "worker %s (%s) missed its heartbeats; marked offline",
                    worker.worker_id,
                    worker.capabilities.name,
                )
                worker.conn.close(CLOSE_HEARTBEAT_TIMEOUT, "no heartbeat")
                await run_in_threadpool(_save_last_seen, state, [worker])
        now = loop.time()
        if now - last_save >= 30:
            last_save = now
            await run_in_threadpool(_save_last_seen, state)
        if now - last_purge >= 60:
            last_purge = now
            try:
                removed = await state.db(service.purge_expired)
            except Exception:
                log.exception("could not purge expired rooms")
                continue
            for room_id in removed:
                state.hub.disconnect_room(room_id, CLOSE_FORBIDDEN, "room has expired")
