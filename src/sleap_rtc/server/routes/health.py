"""``/health``: whether the server is up, its version and its database's schema."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from sleap_rtc import __version__
from sleap_rtc.protocol import api
from sleap_rtc.server import db
from sleap_rtc.server.deps import DatabaseDep

router = APIRouter()


@router.get("/health", response_model=api.HealthView)
async def health(database: DatabaseDep) -> api.HealthView:
    revision = await run_in_threadpool(db.current_revision, database.engine)
    return api.HealthView(
        status="ok",
        version=__version__,
        database=database.engine.dialect.name,
        schema_revision=revision,
    )
