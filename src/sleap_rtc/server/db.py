"""Database engine, schema migrations and sessions.

SQLite (a file in the server's data folder) is the embedded default; PostgreSQL is
for production (``--database-url postgresql+psycopg://...``). The schema is created
and upgraded by Alembic migrations when the server starts.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from sleap_rtc.server.logs import log

MIGRATIONS = Path(__file__).with_name("migrations")

T = TypeVar("T")


class DatabaseError(RuntimeError):
    """The database can't be used; the message says which and what to do."""


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'server.db').absolute()}"


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use the psycopg 3 driver for them."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(
            f"--database-url {redact(url)!r} is not a database URL; expected e.g. "
            "postgresql://user@host:5432/sleap_rtc or sqlite:////path/server.db"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise DatabaseError(
            f"database {parsed.get_backend_name()!r} is not supported; use SQLite or PostgreSQL"
        )
    return parsed.render_as_string(hide_password=False)


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _private(path: Path, mode: int) -> None:
    """Take group and other permissions off ``path`` if it has any (and is ours to change)."""
    current = stat.S_IMODE(path.stat().st_mode)
    if current & 0o077:
        try:
            path.chmod((current & 0o700) | mode)
        except PermissionError:
            log.warning("%s is readable by others (mode %o) and can't be changed", path, current)
            return
        log.info("made %s private (mode %o, was %o)", path, mode, current)


def prepare_sqlite_file(database: Path) -> None:
    """The data folder 0700 and the database file 0600, created so or tightened.

    The database holds password hashes, refresh-token digests and the token
    signing key; SQLite gives its -wal and -shm files the database file's mode.
    """
    folder = database.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _private(folder, 0o700)
    if not database.exists():
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT, 0o600))
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        if path.exists():
            _private(path, 0o600)


#: Pooled connections, and how many database calls run at once (:meth:`Database.run`):
#: equal, so a burst of calls waits its turn instead of opening and closing
#: connections beyond the pool (each new SQLite connection also sets its pragmas).
POOL_SIZE = 16
#: Spare connections for code that opens a session outside :meth:`Database.run`.
POOL_OVERFLOW = 4


def create_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        parsed = make_url(url)
        if parsed.database and parsed.database != ":memory:":
            prepare_sqlite_file(Path(parsed.database))
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False},
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(
        url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW
    )


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (a no-op when it is there already)."""
    config = _alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except sa.exc.OperationalError as exc:
        raise DatabaseError(
            f"can't reach the database {redact(str(engine.url))}: {exc.orig}. "
            "Check --database-url and that the database server is running."
        ) from None


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def dialect_insert(dialect: str) -> Any:
    """The ``insert`` with ``on_conflict_do_update`` of ``dialect`` (PostgreSQL or SQLite)."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@dataclass(frozen=True)
class Database:
    """The database, used from async code: each call gets a session of its own in a thread.

    The service functions are synchronous (SQLAlchemy sessions are not shared
    between threads), so the event loop never waits on a query and a session never
    outlives the call it was opened for.
    """

    engine: Engine
    sessions: sessionmaker[Session]
    #: At most :data:`POOL_SIZE` calls at once, each with a pooled connection.
    limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(POOL_SIZE))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(session, *args)`` in a worker thread with its own session."""

        def call() -> T:
            with self.sessions() as session:
                return fn(session, *args)

        return await anyio.to_thread.run_sync(call, limiter=self.limiter)
