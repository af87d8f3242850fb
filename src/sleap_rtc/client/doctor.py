"""Checks of a user's set-up, as ``sleap-rtc doctor`` runs them: can jobs be submitted?

In order, each one needing the one before: the server answers and is a sleap-rtc
server, the stored login works, the room exists and the user is a member, and
workers are online there. The first check that fails ends the chain (what comes
after it can't be known). Nothing here prints; text that came from the server or a
worker is cut to a bounded length, and the caller escapes it for its terminal.
"""

from __future__ import annotations

from typing import Final

from sleap_rtc import __version__
from sleap_rtc.client.config import ConfigError, resolve_room, resolve_server
from sleap_rtc.client.credentials import CredentialStore
from sleap_rtc.client.errors import ClientError, NotLoggedIn, ServerError, ServerUnreachable
from sleap_rtc.client.session import ServerClient
from sleap_rtc.protocol.api import WorkerView
from sleap_rtc.protocol.checks import Check

__all__ = ["DEFAULT_TIMEOUT_S", "Check", "check_client", "clip", "describe_worker"]

#: How long the doctor waits for one answer from the server.
DEFAULT_TIMEOUT_S: Final = 10.0
#: The most characters of one value from the server or a worker (a name, a version).
MAX_VALUE_CHARS: Final = 64
#: The most names listed in one line (rooms, mounts).
MAX_LISTED: Final = 8

_FIX_SERVER_URL = (
    "pass the address `sleap-rtc server` prints with --server URL "
    '(or set SLEAP_RTC_SERVER, or server = "..." in config.toml)'
)


def clip(text: object, limit: int = MAX_VALUE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    value = str(text)
    return value if len(value) <= limit else value[: max(0, limit - 1)] + "…"


def _names(values: list[str]) -> str:
    shown = [clip(v) for v in values[:MAX_LISTED]]
    more = len(values) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _gpus(worker: WorkerView) -> str:
    if not worker.gpus:
        return "CPU only" if worker.accelerator == "cpu" else clip(worker.accelerator).upper()
    names = sorted({clip(g.name) for g in worker.gpus})
    model = ", ".join(names)
    if len(worker.gpus) > 1:
        model = f"{len(worker.gpus)}× {model}"
    return f"{model} ({worker.best_gpu_memory_mb:,} MB free)"


def describe_worker(worker: WorkerView) -> Check:
    """An online worker as one check: its sleap-nn, GPUs, mounts and load."""
    version = worker.sleap_nn_version
    parts = [
        clip(worker.status),
        f"sleap-nn {clip(version)}" if version else "no sleap-nn",
        _gpus(worker),
        f"mounts {_names(worker.mounts)}" if worker.mounts else "no mounts",
        f"jobs {worker.running_jobs}/{worker.max_concurrent_jobs}",
    ]
    if worker.sandbox == "off":
        parts.append("runs jobs without a sandbox")
    name = f"worker {clip(worker.name)}"
    if version is None and "local" in worker.backends:
        return Check(
            name,
            False,
            "; ".join(parts),
            "install sleap-nn on that machine (pip install 'sleap-rtc[worker]') "
            "and restart its worker",
        )
    return Check(name, True, "; ".join(parts))


async def _server_check(client: ServerClient) -> Check:
    try:
        health = await client.check_server()
    except ServerUnreachable as exc:
        # The error ends with advice of its own; the fix below says it for this command.
        reason = str(exc).partition(". Check the URL")[0]
        return Check(
            "server",
            False,
            clip(reason, 400),
            "start the server (`sleap-rtc server`), or " + _FIX_SERVER_URL,
        )
    except ClientError as exc:  # something answers, but not a sleap-rtc server
        return Check("server", False, clip(exc, 400), _FIX_SERVER_URL)
    same = "" if health.version == __version__ else f"; this client is {__version__}"
    return Check(
        "server",
        True,
        f"{client.url}: sleap-rtc {clip(health.version)}, database {clip(health.database)}{same}",
    )


async def _login_check(client: ServerClient, required: bool) -> Check:
    login_fix = f"run `sleap-rtc login --server {client.url}`"
    stored = client.store.get(client.url)
    if stored is None:
        if not required:
            return Check(
                "login",
                True,
                f"not logged in to {client.url} here; a worker needs only its key "
                f"({login_fix} to submit jobs from this machine)",
            )
        return Check("login", False, f"not logged in to {client.url}", login_fix)
    try:
        user = await client.whoami()
    except NotLoggedIn:
        return Check(
            "login",
            False,
            f"the login saved for {client.url} no longer works (expired or revoked)",
            login_fix,
        )
    except ClientError as exc:
        return Check("login", False, clip(exc, 400), login_fix)
    admin = " (admin)" if user.is_admin else ""
    return Check("login", True, f"logged in as {clip(user.username)}{admin}")


async def _room_check(client: ServerClient, room: str | None) -> Check:
    if room is None:
        mine = [r.name for r in await client.rooms()]
        if not mine:
            return Check(
                "room",
                False,
                "no room given, and you belong to no room",
                "create one (`sleap-rtc rooms create NAME`) or join one with an invite "
                "(`sleap-rtc rooms join CODE`), then pass --room NAME",
            )
        return Check(
            "room",
            False,
            f"no room given; you belong to {_names(mine)}",
            'pass --room ROOM, or set SLEAP_RTC_ROOM or room = "..." in config.toml',
        )
    try:
        info = await client.room(room)
    except ServerError as exc:
        if exc.status != 404:
            raise
        return Check(
            "room",
            False,
            f"room {clip(room)} doesn't exist, or you are not a member",
            "check the name with `sleap-rtc rooms list`, or ask its owner for an invite "
            "(`sleap-rtc rooms invite ROOM`, then `sleap-rtc rooms join CODE`)",
        )
    return Check(
        "room",
        True,
        f"{clip(info.name)}: you are {clip(info.role)}; {info.members} member(s); "
        f"{info.workers_online} of {info.workers_known} worker(s) online",
    )


async def _worker_checks(client: ServerClient, room: str) -> list[Check]:
    workers = await client.workers(room)
    online = [w for w in workers if w.status != "offline"]
    if not online:
        known = f" ({len(workers)} known, all offline)" if workers else ""
        return [
            Check(
                "workers",
                False,
                f"no worker online in room {clip(room)}{known}",
                f"start one on a GPU machine: `sleap-rtc keys create --room {clip(room)}`, then "
                f"`SLEAP_RTC_WORKER_KEY=srk_... sleap-rtc worker --room {clip(room)} "
                "--mount /data`",
            )
        ]
    offline = len(workers) - len(online)
    also = f" ({offline} offline)" if offline else ""
    summary = Check("workers", True, f"{len(online)} online in room {clip(room)}{also}")
    return [summary, *(describe_worker(w) for w in online)]


async def check_client(
    server: str | None = None,
    room: str | None = None,
    *,
    store: CredentialStore | None = None,
    login_required: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[Check]:
    """The client-side checks, in order, up to the first problem.

    ``server`` and ``room`` default the way every command's do (SLEAP_RTC_SERVER,
    config.toml, the last login; SLEAP_RTC_ROOM, config.toml). With
    ``login_required=False`` (a worker machine, which needs only its key) a missing
    login is fine, and the room and its workers are then not checked.
    """
    store = store or CredentialStore()
    try:
        url = resolve_server(server, fallback=store.default_server())
        room = resolve_room(room)
    except ConfigError as exc:
        return [Check("server", False, clip(exc, 400), "fix or remove config.toml")]
    if url is None:
        return [
            Check(
                "server",
                False,
                "no server configured",
                "pass --server URL, set SLEAP_RTC_SERVER, or log in once with "
                "`sleap-rtc login --server URL`",
            )
        ]
    async with ServerClient(url, store=store, timeout=timeout) as client:
        return await _chain(client, room, login_required)


async def _chain(client: ServerClient, room: str | None, login_required: bool) -> list[Check]:
    checks = [await _server_check(client)]
    if not checks[-1].ok:
        return checks
    checks.append(await _login_check(client, login_required))
    if not checks[-1].ok or client.store.get(client.url) is None:
        return checks  # without a login (a worker machine's), nothing more to ask
    try:
        checks.append(await _room_check(client, room))
        if checks[-1].ok and room is not None:
            checks.extend(await _worker_checks(client, room))
    except ClientError as exc:  # the server went away or refused mid-way
        name = "room" if checks[-1].name == "login" else "workers"
        checks.append(Check(name, False, clip(exc, 400), "run `sleap-rtc doctor` again"))
    return checks
