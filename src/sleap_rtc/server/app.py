"""The server's ASGI app: the routers of each area and the sockets, wired to one state.

The server never runs jobs and never sees files: it knows who may talk to whom,
which workers are online, and passes signaling messages between members of a room.
This module only assembles it: settings → :class:`ServerState`, the lifespan
(sweeper, shutdown), the body limit and the error bodies. Routes live in
:mod:`sleap_rtc.server.routes`, the WebSocket endpoints in :mod:`sleap_rtc.server.sockets`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from sleap_rtc import __version__
from sleap_rtc.protocol import api
from sleap_rtc.protocol.relaylane import MAX_LANE_MESSAGE
from sleap_rtc.protocol.signaling import CLOSE_GOING_AWAY
from sleap_rtc.server import dashboard, db, lanes, sockets
from sleap_rtc.server.auth import TokenSigner
from sleap_rtc.server.batch import GroupCommit
from sleap_rtc.server.errors import ApiError
from sleap_rtc.server.hub import Hub
from sleap_rtc.server.keycache import WorkerKeyCache
from sleap_rtc.server.limits import BodyLimit, LoginLimiter
from sleap_rtc.server.notify import Notifier
from sleap_rtc.server.routes import (
    accounts,
    events,
    health,
    jobs,
    keys,
    notify,
    rooms,
    web,
    workers,
)
from sleap_rtc.server.service.lanes import LaneBoard
from sleap_rtc.server.service.relay import RelayBudget
from sleap_rtc.server.service.workers import record_registrations
from sleap_rtc.server.settings import ServerSettings
from sleap_rtc.server.state import ServerState
from sleap_rtc.server.sweep import save_last_seen, sweep

#: The largest WebSocket message the server reads: a relay lane's frame (up to 1 MiB).
#: The signaling sockets refuse anything over MAX_MESSAGE_BYTES themselves.
WS_MAX_SIZE = MAX_LANE_MESSAGE


def build_state(settings: ServerSettings) -> ServerState:
    """Open the database, apply migrations and load the signing key."""
    engine = db.create_engine(settings.database_url)
    db.upgrade(engine)
    sessions = db.session_factory(engine)
    with sessions() as session:
        signer = TokenSigner.load_or_create(session, settings.issuer)
    database = db.Database(engine, sessions)
    return ServerState(
        settings=settings,
        database=database,
        signer=signer,
        hub=Hub(),
        logins=LoginLimiter(settings.login_failures_per_minute, settings.address_login_failures),
        relay_budget=RelayBudget(settings.relay_kib_per_second),
        lanes=LaneBoard(settings.lane_mib_per_second_per_user, settings.lane_mib_per_second),
        notifier=Notifier(database, allow_private=settings.allow_private_webhooks),
        worker_keys=WorkerKeyCache(database),
        registrations=GroupCommit(database, record_registrations),
    )


def create_app(settings: ServerSettings, state: ServerState | None = None) -> FastAPI:
    """The app for ``settings``; ``state`` when the caller built it already (to report errors)."""
    state = state or build_state(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What was loaded to start (FastAPI, SQLAlchemy, pydantic's schemas) lives as
        # long as the process: kept out of the collector's full passes, which then take
        # a few ms instead of a 100+ ms pause in the middle of a request.
        gc.collect()
        gc.freeze()
        sweeper = asyncio.create_task(sweep(state))
        await state.notifier.start()
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            state.hub.close_all(CLOSE_GOING_AWAY, "server is shutting down")
            state.events.end_all()
            await state.notifier.stop(drain_s=2.0)
            await run_in_threadpool(save_last_seen, state)
            state.database.engine.dispose()

    app = FastAPI(
        title="sleap-rtc server",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served from the package's own files (sleap_rtc.server.dashboard)
        redoc_url=None,
        exception_handlers={ApiError: _api_error, RequestValidationError: _invalid},
    )
    app.state.server = state
    for router in (
        health.router,
        accounts.router,
        rooms.router,
        workers.router,
        jobs.router,
        keys.router,
        notify.router,
        web.router,
        events.router,
        dashboard.router,
    ):
        app.include_router(router)
    app.include_router(sockets.router)
    app.include_router(lanes.router)
    app.mount("/static", dashboard.static_files(), name="static")
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(dashboard.SecurityHeaders)
    return app


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    body = api.ErrorResponse(error=api.ErrorBody(code=exc.code, message=exc.message))
    return JSONResponse(body.model_dump(), status_code=exc.status, headers=exc.headers)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 in the API's error shape, naming (at most five of) the fields that are wrong."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg')}")
    body = api.ErrorResponse(error=api.ErrorBody(code="INVALID", message="; ".join(parts)))
    return JSONResponse(body.model_dump(), status_code=422)
