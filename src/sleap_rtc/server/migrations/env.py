"""Alembic environment: runs on the connection handed over by ``sleap_rtc.server.db``."""

from __future__ import annotations

from alembic import context

from sleap_rtc.server.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `sleap-rtc server` (sleap_rtc.server.db.upgrade)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
