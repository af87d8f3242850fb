"""``sleap-rtc server``: run the rendezvous server, and manage its accounts.

The server's dependencies come with the ``server`` extra
(``pip install 'sleap-rtc[server]'``); they are imported only here.
"""

from __future__ import annotations

import logging
import socket
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from sleap_rtc import locations
from sleap_rtc.cli.durations import Duration

DEFAULT_PORT = 8000


def _database_options(func: Any) -> Any:
    func = click.option(
        "--database-url",
        envvar="SLEAP_RTC_DATABASE_URL",
        metavar="URL",
        help="PostgreSQL for production, e.g. postgresql://sleap@db/sleap_rtc "
        "[env SLEAP_RTC_DATABASE_URL; default: SQLite in --data-dir].",
    )(func)
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder for the embedded SQLite database [default: 'server' in the data folder].",
    )(func)
    return func


def _database_url(data_dir: Path | None, database_url: str | None) -> str:
    from sleap_rtc.server.db import DatabaseError, normalize_url, sqlite_url

    if database_url:
        try:
            return normalize_url(database_url)
        except DatabaseError as exc:
            raise click.ClickException(str(exc)) from None
    folder = (data_dir or locations.data_dir() / "server").expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    return sqlite_url(folder)


def _import_server() -> None:
    try:
        import fastapi  # noqa: F401
        import sqlalchemy  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(
            f"the server needs the 'server' extra ({exc.name} is missing): "
            "pip install 'sleap-rtc[server]'"
        ) from None


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise click.ClickException(
            f"can't listen on {host}:{port}: {exc.strerror}. "
            "Choose another --port, or stop what is using it."
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@click.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on (0 picks a free one and prints it).",
)
@_database_options
@click.option(
    "--access-token-ttl",
    type=Duration(),
    default="15m",
    show_default=True,
    help="How long an access token is valid; clients refresh it by themselves.",
)
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(0.1, 300),
    default=5.0,
    show_default=True,
    help="Seconds between worker heartbeats.",
)
@click.option(
    "--heartbeat-timeout",
    type=click.FloatRange(0.3, 3600),
    default=15.0,
    show_default=True,
    help="Seconds without a heartbeat before a worker is marked offline.",
)
@click.option(
    "--login-failures-per-minute",
    type=click.IntRange(1, 10_000),
    default=5,
    show_default=True,
    help="Failed logins allowed per minute for one address and username.",
)
@click.option(
    "--allow-private-webhooks",
    is_flag=True,
    envvar="SLEAP_RTC_ALLOW_PRIVATE_WEBHOOKS",
    help="Post notifications to webhooks on loopback, private and link-local addresses "
    "too (a chat server inside your network) [env SLEAP_RTC_ALLOW_PRIVATE_WEBHOOKS; "
    "default: public addresses only].",
)
@click.option(
    "--web-session-ttl",
    type=Duration(),
    default="7d",
    show_default=True,
    help="How long a dashboard login lasts unless the user logs out.",
)
@click.option(
    "--secure-cookies",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Mark the dashboard's session cookie Secure (sent over https only): auto does "
    "when the request came over https (a TLS proxy in front that says so).",
)
@click.option(
    "--lane-rate-per-user",
    type=click.IntRange(0, 100_000),
    default=200,
    show_default=True,
    help="MiB per second one user's relay lanes may move (bulk file bytes through this "
    "server when a client can't reach its worker directly); 0 turns relay lanes off.",
)
@click.option(
    "--lane-rate",
    type=click.IntRange(0, 1_000_000),
    default=1000,
    show_default=True,
    help="MiB per second all relay lanes on this server may move together; 0: off.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.pass_context
def server(
    ctx: click.Context,
    host: str,
    port: int,
    data_dir: Path | None,
    database_url: str | None,
    access_token_ttl: timedelta,
    heartbeat_interval: float,
    heartbeat_timeout: float,
    login_failures_per_minute: int,
    allow_private_webhooks: bool,
    web_session_ttl: timedelta,
    secure_cookies: str,
    lane_rate_per_user: int,
    lane_rate: int,
    log_level: str,
) -> None:
    """Run the server: accounts, rooms, worker keys, presence, signaling, the dashboard.

    It never runs jobs and never sees files. The schema is created or upgraded
    when it starts. The web dashboard is at / and the API's documentation at
    /docs. Put it behind a TLS-terminating proxy for use beyond one host.

    \b
    Examples:
      sleap-rtc server                                  # SQLite in the data folder
      sleap-rtc server --host 0.0.0.0 --port 8000 --database-url postgresql://sleap@db/sleap
      sleap-rtc server --allow-private-webhooks         # notify a chat server in the lab
      sleap-rtc server --lane-rate-per-user 50 --lane-rate 200   # share the uplink
      sleap-rtc server add-user alice --admin
    """
    if ctx.invoked_subcommand is not None:
        return
    _import_server()
    import uvicorn

    from sleap_rtc.server.app import WS_MAX_SIZE, build_state, create_app
    from sleap_rtc.server.db import DatabaseError, redact
    from sleap_rtc.server.settings import ServerSettings

    if heartbeat_timeout <= heartbeat_interval:
        raise click.BadParameter(
            f"{heartbeat_timeout} s must be longer than --heartbeat-interval "
            f"({heartbeat_interval} s)",
            param_hint="--heartbeat-timeout",
        )
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    url = _database_url(data_dir, database_url)
    settings = ServerSettings(
        database_url=url,
        access_token_ttl_s=access_token_ttl.total_seconds(),
        heartbeat_interval_s=heartbeat_interval,
        heartbeat_timeout_s=heartbeat_timeout,
        login_failures_per_minute=login_failures_per_minute,
        allow_private_webhooks=allow_private_webhooks,
        web_session_ttl_s=web_session_ttl.total_seconds(),
        cookie_secure={"auto": None, "always": True, "never": False}[secure_cookies],
        lane_mib_per_second_per_user=lane_rate_per_user,
        lane_mib_per_second=lane_rate,
    )
    try:
        state = build_state(settings)
    except DatabaseError as exc:
        raise click.ClickException(str(exc)) from None
    app = create_app(settings, state)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=log_level,
        ws_max_size=WS_MAX_SIZE,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    click.echo(
        f"sleap-rtc server listening on http://{shown}:{bound_port} (database: {redact(url)})",
    )
    click.echo(
        f"dashboard: http://{shown}:{bound_port}/ (log in with a sleap-rtc account); "
        f"API docs: http://{shown}:{bound_port}/docs"
    )
    sys.stdout.flush()
    uvicorn.Server(config).run(sockets=[sock])


def _read_password(password_stdin: bool, confirm: bool = True) -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.ClickException("no password on standard input")
        return password
    if not sys.stdin.isatty():
        raise click.ClickException(
            "no terminal to ask for a password; pipe it in with --password-stdin"
        )
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    return value


@server.command("add-user")
@click.argument("username")
@click.option("--admin", is_flag=True, help="Make the account an administrator.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@_database_options
def add_user(
    username: str,
    admin: bool,
    password_stdin: bool,
    data_dir: Path | None,
    database_url: str | None,
) -> None:
    """Create an account on the server's database (the server may be running).

    \b
    Examples:
      sleap-rtc server add-user alice --admin
      printf '%s\\n' "$PASSWORD" | sleap-rtc server add-user bob --password-stdin
    """
    _import_server()
    from sleap_rtc.server.db import DatabaseError, create_engine, session_factory, upgrade
    from sleap_rtc.server.errors import ApiError
    from sleap_rtc.server.service import accounts

    url = _database_url(data_dir, database_url)
    password = _read_password(password_stdin)
    try:
        engine = create_engine(url)
        upgrade(engine)
        with session_factory(engine)() as session:
            accounts.create_user(session, username, password, is_admin=admin)
    except (ApiError, DatabaseError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"user {username} created{' (admin)' if admin else ''}")


@server.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@_database_options
def set_password(
    username: str, password_stdin: bool, data_dir: Path | None, database_url: str | None
) -> None:
    """Set an account's password; its sessions everywhere are ended.

    \b
    Examples:
      sleap-rtc server set-password alice          # asks for the new password twice
      printf '%s\\n' "$PASSWORD" | sleap-rtc server set-password alice --password-stdin
      sleap-rtc server set-password alice --database-url postgresql://sleap@db/sleap_rtc
    """
    _import_server()
    from sleap_rtc.server.db import DatabaseError, create_engine, session_factory, upgrade
    from sleap_rtc.server.errors import ApiError
    from sleap_rtc.server.service import accounts

    url = _database_url(data_dir, database_url)
    password = _read_password(password_stdin)
    try:
        engine = create_engine(url)
        upgrade(engine)
        with session_factory(engine)() as session:
            accounts.set_password(session, username, password)
    except (ApiError, DatabaseError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"password of {username} changed; their sessions were ended")
