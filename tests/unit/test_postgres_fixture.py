"""The database fixtures really give SQLite and a real, separate, cleaned-up PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.postgres import (
    REQUIRE_ENV,
    PostgresCluster,
    _port_accepts,
    postgres_unavailable_reason,
)

pytestmark = pytest.mark.slow


def _process_alive(pid: int) -> bool:
    """Whether pid is a live (not zombie) process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("State:")), "")
    return state not in ("Z", "X")


def test_database_url_round_trip(database_url: str, request: pytest.FixtureRequest) -> None:
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(50))"))
            conn.execute(text("INSERT INTO items (id, name) VALUES (1, 'mouse')"))
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, name FROM items")).all()
        assert [tuple(r) for r in rows] == [(1, "mouse")]
        assert engine.dialect.name == request.node.callspec.params["database_url"]
    finally:
        engine.dispose()


def test_postgres_databases_are_separate(postgres_cluster: PostgresCluster) -> None:
    first = postgres_cluster.create_database()
    second = postgres_cluster.create_database()
    assert first != second
    try:
        engine = create_engine(first)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE only_here (id INTEGER)"))
        engine.dispose()
        engine = create_engine(second)
        assert "only_here" not in inspect(engine).get_table_names()
        engine.dispose()
    finally:
        postgres_cluster.drop_database(first)
        postgres_cluster.drop_database(second)
    # Dropped for real: the admin connection no longer lists them.
    engine = create_engine(postgres_cluster.admin_url)
    with engine.connect() as conn:
        names = set(conn.execute(text("SELECT datname FROM pg_database")).scalars())
    engine.dispose()
    assert not {first.rsplit("/", 1)[1], second.rsplit("/", 1)[1]} & names


def test_cluster_stop_leaves_nothing_behind() -> None:
    if os.environ.get("SLEAP_RTC_TEST_POSTGRES_URL"):
        pytest.skip("uses an external server; no local cluster to start and stop")
    reason = postgres_unavailable_reason()
    if reason:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(reason)
        pytest.skip(reason)

    cluster = PostgresCluster()
    try:
        cluster.start()
        assert cluster.tmpdir is not None and cluster.port is not None
        assert cluster.bindir is not None
        tmpdir, port, bindir, datadir = (
            cluster.tmpdir,
            cluster.port,
            cluster.bindir,
            cluster.datadir,
        )
        assert tmpdir.is_relative_to("/tmp")
        pid = cluster.postmaster_pid()
        assert pid is not None and _process_alive(pid)
        assert _port_accepts(port)
        url = cluster.create_database()
        engine = create_engine(url)
        conn = engine.connect()  # left open on purpose: stop must not hang on it
        assert conn.execute(text("SELECT 1")).scalar() == 1
        cluster.stop()
        with contextlib.suppress(Exception):  # the server is gone, so closing may fail
            conn.close()
        engine.dispose()
    finally:
        cluster.stop()

    assert not _process_alive(pid)
    assert not _port_accepts(port)
    assert not tmpdir.exists()
    status = subprocess.run(
        [str(bindir / "pg_ctl"), "status", "-D", str(datadir)], capture_output=True
    )
    assert status.returncode != 0
    cluster.stop()  # idempotent


def test_stop_without_start_is_harmless() -> None:
    cluster = PostgresCluster(external_url=None)
    cluster.stop()
    cluster.stop()
    assert cluster.tmpdir is None
