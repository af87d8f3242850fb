"""A throwaway PostgreSQL server for tests, and fixtures that run a test on SQLite and PostgreSQL.

``PostgresCluster`` runs ``initdb`` into a temporary directory under /tmp and starts a private
server on a free port of 127.0.0.1 (as the ``postgres`` user when we run as root, since initdb
refuses root). When ``SLEAP_RTC_TEST_POSTGRES_URL`` names an admin URL of a running server, nothing
is started and databases are created and dropped on that server instead.

Fixtures (import them into a conftest to use them):

* ``postgres_cluster`` (session): a started cluster; skips when PostgreSQL is not available,
  or fails instead when ``SLEAP_RTC_REQUIRE_POSTGRES=1``.
* ``database_url`` (function, params ``sqlite`` and ``postgresql``): a SQLAlchemy URL of an empty
  database, dropped again after the test.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

EXTERNAL_URL_ENV = "SLEAP_RTC_TEST_POSTGRES_URL"
REQUIRE_ENV = "SLEAP_RTC_REQUIRE_POSTGRES"
SYSTEM_USER = "postgres"
SUPERUSER = "postgres"
HOST = "127.0.0.1"
START_ATTEMPTS = 4


def find_postgres_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, newest version first; None if absent."""

    def usable(path: Path) -> bool:
        return (path / "initdb").is_file() and (path / "pg_ctl").is_file()

    def version_key(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)

    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if usable(p)]
    if candidates:
        return max(candidates, key=version_key)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=30
            ).stdout.strip()
            if out and usable(Path(out)):
                return Path(out)
    initdb = shutil.which("initdb")
    if initdb and usable(Path(initdb).resolve().parent):
        return Path(initdb).resolve().parent
    return None


def postgres_unavailable_reason() -> str | None:
    """Why no PostgreSQL server can be had for tests, or None when one can."""
    if os.environ.get(EXTERNAL_URL_ENV):
        return None
    if find_postgres_bindir() is None:
        return (
            "PostgreSQL is not installed: no initdb/pg_ctl under /usr/lib/postgresql/*/bin, "
            "from `pg_config --bindir` or on PATH (install it with "
            "`apt-get install postgresql`, or set "
            f"{EXTERNAL_URL_ENV}=postgresql+psycopg://USER@HOST:PORT/postgres)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            return f"running as root but there is no {SYSTEM_USER!r} user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root but `runuser` is missing, so initdb cannot run as postgres"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_accepts(port: int, host: str = HOST) -> bool:
    """Whether something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _libpq_url(sqlalchemy_url: str) -> str:
    """``postgresql+psycopg://...`` as a plain ``postgresql://...`` URL that psycopg accepts."""
    from sqlalchemy.engine import make_url

    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(False)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresCluster:
    """A private PostgreSQL server in a temp dir, or an external one named by an admin URL."""

    def __init__(self, external_url: str | None = None) -> None:
        if external_url is None:
            external_url = os.environ.get(EXTERNAL_URL_ENV) or None
        self.external_url = external_url
        self.bindir: Path | None = None
        self.tmpdir: Path | None = None
        self.port: int | None = None
        self._started = False
        self._owner: tuple[int, int] | None = None

    # --- paths --------------------------------------------------------------------------------

    @property
    def datadir(self) -> Path:
        assert self.tmpdir is not None, "cluster not started"
        return self.tmpdir / "data"

    @property
    def sockdir(self) -> Path:
        assert self.tmpdir is not None, "cluster not started"
        return self.tmpdir

    @property
    def logfile(self) -> Path:
        assert self.tmpdir is not None, "cluster not started"
        return self.tmpdir / "postgres.log"

    @property
    def is_external(self) -> bool:
        return self.external_url is not None

    # --- lifecycle ----------------------------------------------------------------------------

    def _run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL binary, as the postgres user when we are root."""
        assert self.bindir is not None and self.tmpdir is not None
        cmd = [str(self.bindir / str(args[0])), *(str(a) for a in args[1:])]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", SYSTEM_USER, "--", *cmd]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = env.get("LC_ALL") or "C.UTF-8"
        result = subprocess.run(
            cmd, cwd=self.tmpdir, env=env, capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                f"{self._log_tail()}"
            )
        return result

    def _log_tail(self) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").splitlines()[-20:]
        except (OSError, AssertionError):
            return ""
        return "\n--- postgres log ---\n" + "\n".join(lines)

    def start(self) -> PostgresCluster:
        """Initialise and start the server (nothing to do for an external one)."""
        if self._started:
            return self
        if self.is_external:
            self._started = True
            return self
        reason = postgres_unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        self.bindir = find_postgres_bindir()
        self.tmpdir = Path(tempfile.mkdtemp(prefix="sleap-rtc-pg-", dir="/tmp"))
        atexit.register(self.stop)
        try:
            if os.geteuid() == 0:
                user = pwd.getpwnam(SYSTEM_USER)
                os.chown(self.tmpdir, user.pw_uid, user.pw_gid)
            self._run(
                "initdb",
                "-D",
                self.datadir,
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "--no-sync",
                "-E",
                "UTF8",
            )
            last_error: Exception | None = None
            for _ in range(START_ATTEMPTS):
                self.port = _free_port()
                options = (
                    f"-c listen_addresses={HOST} -p {self.port} -k {self.sockdir} "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                )
                try:
                    self._run(
                        "pg_ctl",
                        "-w",
                        "-D",
                        self.datadir,
                        "-o",
                        options,
                        "-l",
                        self.logfile,
                        "start",
                    )
                except RuntimeError as exc:  # most likely the port was taken meanwhile
                    last_error = exc
                    self._pg_ctl_stop()
                    continue
                self._started = True
                return self
            raise RuntimeError(f"PostgreSQL did not start in {START_ATTEMPTS} tries: {last_error}")
        except BaseException:
            self.stop()
            raise

    def _pg_ctl_stop(self) -> None:
        if self.bindir is None or self.tmpdir is None:
            return
        if (self.datadir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", self.datadir, "-m", "immediate", "-w", "stop", check=False)

    def stop(self) -> None:
        """Stop the server and remove its directory; safe to call twice or after a failed start."""
        self._started = False
        if self.is_external or self.tmpdir is None:
            return
        try:
            self._pg_ctl_stop()
        finally:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)

    def postmaster_pid(self) -> int | None:
        """The server's process id, from postmaster.pid (None when not running here)."""
        if self.tmpdir is None:
            return None
        try:
            return int((self.datadir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- databases ----------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL of database ``dbname`` on this server."""
        if self.external_url is not None:
            from sqlalchemy.engine import make_url

            base = make_url(self.external_url)
            if base.drivername == "postgresql":
                base = base.set(drivername="postgresql+psycopg")
            return base.set(database=dbname).render_as_string(False)
        assert self.port is not None, "cluster not started"
        return f"postgresql+psycopg://{SUPERUSER}@{HOST}:{self.port}/{dbname}"

    @property
    def admin_url(self) -> str:
        """SQLAlchemy URL of the database to connect to for CREATE/DROP DATABASE."""
        if self.external_url is not None:
            from sqlalchemy.engine import make_url

            return self.url(make_url(self.external_url).database or "postgres")
        return self.url("postgres")

    def _admin_execute(self, *statements: tuple[str, tuple[object, ...]]) -> None:
        import psycopg

        with psycopg.connect(_libpq_url(self.admin_url), autocommit=True) as conn:
            for sql, params in statements:
                conn.execute(sql, params)

    def create_database(self) -> str:
        """Create a new, uniquely named, empty database and return its SQLAlchemy URL."""
        if not self._started:
            raise RuntimeError("cluster not started")
        name = f"sleap_rtc_test_{uuid.uuid4().hex[:16]}"
        self._admin_execute((f"CREATE DATABASE {_quote_ident(name)}", ()))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database ``url`` names, first ending any connections still open to it."""
        from sqlalchemy.engine import make_url

        name = make_url(url).database
        if not name:
            raise ValueError(f"no database name in {url!r}")
        self._admin_execute(
            (
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            ),
            (f"DROP DATABASE IF EXISTS {_quote_ident(name)}", ()),
        )


# --- pytest fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A started PostgreSQL server for the whole session, stopped at its end."""
    reason = postgres_unavailable_reason()
    if reason:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLAlchemy URL of an empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/server.db"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    url = cluster.create_database()
    try:
        yield url
    finally:
        with contextlib.suppress(Exception):
            cluster.drop_database(url)
