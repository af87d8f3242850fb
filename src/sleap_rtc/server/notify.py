"""Notifications by webhook: a Slack-compatible JSON post when a job ends (or starts).

A job's worker reports it to the index (:mod:`sleap_rtc.server.service.jobindex`);
when its state changes, :meth:`Notifier.job_changed` queues it and returns at once,
so the worker's socket never waits on a chat service. One sender task takes the
queue in order, finds who wants to hear (:func:`recipients`) and posts to each:

- a job that ends (COMPLETE, FAILED, CANCELLED) goes to its owner's hook, when the
  owner is an account that belongs to the room, and to the room's hook;
- a job that starts running goes only to the hooks set ``on_start``;
- a job submitted with ``--no-notify`` goes nowhere.

A post is ``{"text": <one line>, "sleap_rtc": {...}}``: Slack, Mattermost, Rocket.Chat
and Teams workflows show ``text``; a script reads ``sleap_rtc``. Transport errors,
HTTP 429 and 5xx are retried (three attempts in all, backing off); other answers are
final. A webhook URL is a secret, so logs name only its scheme and host.

The server posts only to public addresses unless ``allow_private_webhooks`` is on:
the host is resolved at send time, every address it has is checked, and the post
goes to the checked address itself (the name is kept for the Host header and TLS),
so a name can't point somewhere else between the check and the connection.
Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from sleap_rtc import __version__
from sleap_rtc.protocol import index as ix
from sleap_rtc.protocol.api import webhook_hint
from sleap_rtc.server.db import Database
from sleap_rtc.server.logs import log
from sleap_rtc.server.service.jobindex import Recorded
from sleap_rtc.server.service.webhooks import Hook, JobHooks, hooks_for_job

#: The states that end a job and are announced (a rejection is told to the submitter).
ENDS = frozenset({"COMPLETE", "FAILED", "CANCELLED"})
#: Job changes waiting to be sent; beyond this, new ones are dropped (and logged).
QUEUE_LIMIT = 1_000
TIMEOUT_S = 5.0
ATTEMPTS = 3
#: First wait between attempts, doubled each time.
BACKOFF_S = 0.5
#: A job the index first hears of when it has ended already (a worker catching the
#: index up) is announced only if it ended this recently, so a new index or a worker
#: moved to another room doesn't flood a channel with old jobs.
RECENT_S = 3600.0
#: Most characters of a failure's reason put in the message line.
REASON_CHARS = 200

PRIVATE_HINT = (
    "the server posts only to public addresses; start it with --allow-private-webhooks "
    "(or SLEAP_RTC_ALLOW_PRIVATE_WEBHOOKS=1) to allow ones inside your network"
)


class RoomRef(NamedTuple):
    id: str
    name: str


class WorkerRef(NamedTuple):
    id: str
    name: str


@dataclass(frozen=True)
class JobEvent:
    """A job whose state changed, and where it runs."""

    room: RoomRef
    worker: WorkerRef
    job: ix.IndexedJob


@dataclass(frozen=True)
class Outcome:
    """What one post got; ``message`` says it without the URL."""

    delivered: bool
    status: int | None
    attempts: int
    message: str


# ------------------------------------------------------------------------------- rules


def announced(before: str | None, job: ix.IndexedJob, now: float | None = None) -> bool:
    """Whether a job going from ``before`` (None: new to the index) to its state now
    is worth a notification at all."""
    if job.state == before:
        return False
    if job.state == "RUNNING":
        return True
    if job.state not in ENDS:
        return False
    if before is None:
        return (time.time() if now is None else now) - job.updated_at <= RECENT_S
    return True


def recipients(job: ix.IndexedJob, hooks: JobHooks) -> list[Hook]:
    """The hooks that hear of ``job`` now, one per address."""
    if job.notify is False:
        return []
    chosen: list[Hook] = []
    if hooks.owner is not None and hooks.owner_is_member:
        chosen.append(hooks.owner)
    if hooks.room is not None:
        chosen.append(hooks.room)
    if job.state == "RUNNING":
        chosen = [h for h in chosen if h.on_start]
    elif job.state not in ENDS:
        return []
    unique: list[Hook] = []
    for hook in chosen:
        if all(hook.url != kept.url for kept in unique):
            unique.append(hook)
    return unique


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _slack(text: str) -> str:
    """``text`` with the three characters Slack reads as markup escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def message_text(event: JobEvent) -> str:
    """The one line a chat shows, e.g. ``sleap-rtc: train job 3f9a1c COMPLETE in 0:01:23
    (owner alice, worker lab-gpu-1, room lab), best val loss 0.0123``."""
    job = event.job
    head = f"sleap-rtc: {job.kind} job {job.job_id} {job.state}"
    if job.state == "COMPLETE" and job.stopped_early:
        head += " (stopped early)"
    if job.elapsed_s is not None and job.state in ENDS:
        head += f" {'in' if job.state == 'COMPLETE' else 'after'} {_clock(job.elapsed_s)}"
    who = f"owner {job.owner or 'unknown'}, worker {event.worker.name}, room {event.room.name}"
    text = f"{head} ({who})"
    loss = job.best_val_loss
    if loss is not None:
        text += f", best val loss {loss:.4g}"
    frames = [r.frames for r in job.results if r.frames is not None]
    if frames:
        text += f", {sum(frames)} frames predicted"
    if job.state in ("FAILED", "CANCELLED") and job.reason:
        reason = job.reason if len(job.reason) <= REASON_CHARS else job.reason[:REASON_CHARS] + "…"
        text += f": {reason}"
    return _slack(text)


def payload(event: JobEvent) -> dict[str, Any]:
    """The JSON body posted for ``event``."""
    job = event.job
    return {
        "text": message_text(event),
        "sleap_rtc": {
            "job_id": job.job_id,
            "room": event.room.name,
            "worker": event.worker.name,
            "worker_id": event.worker.id,
            "state": job.state,
            "kind": job.kind,
            "owner": job.owner,
            "elapsed_s": job.elapsed_s,
            "stopped_early": job.stopped_early,
            "reason": job.reason,
            "best_val_loss": job.best_val_loss,
            "outputs": list(job.outputs),
            "results": [r.model_dump(mode="json") for r in job.results],
        },
    }


def sample_payload(hook: Hook, by: str) -> dict[str, Any]:
    """The body of ``sleap-rtc notify test``."""
    whose = f"room {hook.name}" if hook.scope == "room" else f"user {hook.name}"
    text = (
        f"sleap-rtc: test notification for {whose}, sent by {by}. Jobs will be announced "
        "here when they end" + (" and when they start." if hook.on_start else ".")
    )
    return {
        "text": _slack(text),
        "sleap_rtc": {"test": True, "scope": hook.scope, "name": hook.name, "by": by},
    }


# ----------------------------------------------------------------------- where it goes


class Refused(Exception):
    """The server won't post to this webhook; ``reason`` says why, without the URL."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def refusal(address: str) -> str | None:
    """Why ``address`` (an IP address) is not one to post to unless private ones are
    allowed, or None for a public address. An IPv6 address that carries an IPv4 one
    (mapped, 6to4) is judged by that one too."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [v4 for v4 in (ip.ipv4_mapped, ip.sixtofour) if v4 is not None]
        candidates = [*embedded, ip]
    for candidate in candidates:
        if candidate.is_loopback:
            return f"{address} is a loopback address"
        if candidate.is_link_local:
            return f"{address} is a link-local address"
        if candidate.is_unspecified or candidate.is_multicast:
            return f"{address} is not a unicast address"
        if candidate.is_private:
            return f"{address} is a private address"
        if not candidate.is_global:
            return f"{address} is not a public address"
    return None


@dataclass(frozen=True)
class Target:
    """A request to the address checked: the URL with it for the host, the Host header,
    and the name TLS checks the certificate against."""

    url: str
    host: str
    sni: str | None


def pinned(url: str, address: str) -> Target:
    """``url`` sent to ``address`` (one of its host's addresses), keeping the host's name."""
    parts = urlsplit(url)
    name = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    userinfo = parts.netloc.rpartition("@")[0] + "@" if "@" in parts.netloc else ""
    literal = f"[{address}]" if ":" in address else address
    target = urlunsplit(
        (parts.scheme, userinfo + literal + port, parts.path or "/", parts.query, "")
    )
    header = (f"[{name}]" if ":" in name else name) + port
    is_name = True
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        is_name = False
    sni = name if parts.scheme.lower() == "https" and is_name else None
    return Target(target, header, sni)


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` has (an IP address is its own)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"its host can't be resolved ({exc.args[-1] if exc.args else exc})") from None
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise Refused("its host has no address")
    return addresses


class _HideUrlPaths(logging.Filter):
    """Shows the URLs httpx logs ("HTTP Request: POST <url> ...") as scheme, host and
    port only: the path and query of a webhook URL are its secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(
                f"{a.scheme}://{a.netloc.decode('ascii', 'replace').rpartition('@')[2]}"
                if isinstance(a, httpx.URL)
                else a
                for a in record.args
            )
        return True


def _hide_url_paths() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _HideUrlPaths) for f in logger.filters):
        logger.addFilter(_HideUrlPaths())


class _Retry(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


# ------------------------------------------------------------------------------ sender


class Notifier:
    """The server's notifications: a bounded queue of job changes and one sender task.

    :meth:`start` and :meth:`stop` go with the app's lifespan; :meth:`job_changed`
    never blocks and never raises.
    """

    def __init__(
        self,
        database: Database,
        *,
        allow_private: bool = False,
        queue_limit: int = QUEUE_LIMIT,
        timeout_s: float = TIMEOUT_S,
        attempts: int = ATTEMPTS,
        backoff_s: float = BACKOFF_S,
    ) -> None:
        self.database = database
        self.allow_private = allow_private
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._queue: asyncio.Queue[JobEvent] = asyncio.Queue(queue_limit)
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            _hide_url_paths()
            self._client = httpx.AsyncClient(
                timeout=self.timeout_s,
                follow_redirects=False,
                # Proxies from the environment would connect by name, past the address check.
                trust_env=False,
                # One connection per post: a kept connection is keyed by address and could
                # carry the next post for another name that shares it.
                limits=httpx.Limits(max_keepalive_connections=0),
                headers={"user-agent": f"sleap-rtc/{__version__}"},
            )
        return self._client

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sleap-rtc notifications")

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stop the sender, after up to ``drain_s`` seconds for what is queued."""
        if self._task is not None and drain_s > 0 and self._queue.qsize():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def job_changed(self, room: RoomRef, worker: WorkerRef, recorded: Recorded) -> None:
        """Queue a job whose state a report changed, if the change is announced."""
        try:
            if not recorded.changed or not announced(recorded.before, recorded.job):
                return
            self._queue.put_nowait(JobEvent(room, worker, recorded.job))
        except asyncio.QueueFull:
            log.warning(
                "notifications are behind (%d waiting); job %s of worker %s not announced",
                self._queue.qsize(),
                recorded.job.job_id,
                worker.id,
            )
        except Exception:
            log.exception("queueing a notification for job %s failed", recorded.job.job_id)

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self.deliver(event)
            except Exception:
                log.exception("notifying of job %s failed", event.job.job_id)
            finally:
                self._queue.task_done()

    async def deliver(self, event: JobEvent) -> list[Outcome]:
        """Post ``event`` to every hook that wants it."""
        hooks = await self.database.run(hooks_for_job, event.room.id, event.job.owner)
        body = payload(event)
        outcomes = []
        for hook in recipients(event.job, hooks):
            what = f"job {event.job.job_id} {event.job.state} for {hook.scope} {hook.name}"
            outcomes.append(await self.post(hook.url, body, what))
        return outcomes

    async def _address(self, url: str) -> str:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        addresses = await resolve(parts.hostname or "", port)
        if not self.allow_private:
            for address in addresses:
                why = refusal(address)
                if why is not None:
                    raise Refused(f"{why}; {PRIVATE_HINT}")
        return addresses[0]

    async def post(self, url: str, body: dict[str, Any], what: str) -> Outcome:
        """Post ``body`` to ``url``, retrying what may pass; never raises."""
        where = webhook_hint(url)
        try:
            target = pinned(url, await self._address(url))
        except Refused as exc:
            log.warning("not posting %s to %s: %s", what, where, exc.reason)
            return Outcome(False, None, 0, f"not posted to {where}: {exc.reason}")
        attempts = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff_s, max=30),
            retry=retry_if_exception_type((httpx.TransportError, _Retry)),
            reraise=True,
        )
        extensions = {"sni_hostname": target.sni} if target.sni else None
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    response = await self._http().post(
                        target.url, json=body, headers={"host": target.host}, extensions=extensions
                    )
                    if _retryable(response.status_code):
                        raise _Retry(response.status_code)
        except _Retry as exc:
            message = f"{where} answered HTTP {exc.status} {attempts} times"
            log.warning("posting %s failed: %s", what, message)
            return Outcome(False, exc.status, attempts, message)
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            message = f"{where} could not be reached ({type(exc).__name__}, {attempts} attempts)"
            log.warning("posting %s failed: %s", what, message)
            return Outcome(False, None, attempts, message)
        status = response.status_code
        if 200 <= status < 300:
            log.info("posted %s to %s (HTTP %d, attempt %d)", what, where, status, attempts)
            return Outcome(True, status, attempts, f"{where} answered HTTP {status}")
        message = (
            f"{where} answered HTTP {status}; check the webhook URL "
            "(a revoked or mistyped one is answered 403, 404 or 410)"
        )
        log.warning("posting %s failed: %s", what, message)
        return Outcome(False, status, attempts, message)

    async def test(self, hook: Hook, by: str) -> Outcome:
        """Post the test message to ``hook`` now (not queued)."""
        return await self.post(
            hook.url, sample_payload(hook, by), f"a test for {hook.scope} {hook.name}"
        )
