"""Limits on what one request or one client may cost: body size and failed logins.

(The relay budget, what one sender may pass through the server per second, is a
rule of the relay: :class:`sleap_rtc.server.service.relay.RelayBudget`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi.responses import JSONResponse
from limits import RateLimitItem
from limits import parse as parse_limit
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sleap_rtc.protocol import api
from sleap_rtc.server.errors import ApiError


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


class RateLimited(ApiError):
    """429 with the seconds to wait, in the body and as ``Retry-After``."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            429,
            "RATE_LIMITED",
            f"too many failed logins; try again in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


@dataclass
class LoginAttempt:
    """Set :attr:`failed` once the credentials are known to be wrong."""

    failed: bool = False


class LoginLimiter:
    """Failed logins allowed per minute, per (address, username) and per address.

    A login being checked counts as a failure until it has succeeded, so guesses
    sent in parallel get no more tries than ones sent one after the other.
    """

    def __init__(self, per_user_per_minute: int, per_address_per_minute: int) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_user = parse_limit(f"{per_user_per_minute}/minute")
        self._per_address = parse_limit(f"{per_address_per_minute}/minute")
        #: Logins being checked right now, per rate-limit key.
        self._in_flight: dict[tuple[str, ...], int] = {}

    @contextmanager
    def attempt(self, address: str, username: str) -> Iterator[LoginAttempt]:
        """Hold a try for the block; raises :class:`RateLimited` when none is left.

        The check and the reservation happen with nothing awaited between them
        (before the slow password check), so parallel guesses can't all slip
        through. A block that raises counts as no failure.
        """
        keys: list[tuple[RateLimitItem, tuple[str, ...]]] = [
            (self._per_user, ("login", address, username)),
            (self._per_address, ("login", address, "*")),
        ]
        in_flight = self._in_flight
        for limit, parts in keys:
            pending = in_flight.get(parts, 0)
            if not self._limiter.test(limit, *parts, cost=pending + 1):
                stats = self._limiter.get_window_stats(limit, *parts)
                wait = int(stats.reset_time - datetime.now(UTC).timestamp()) + 1
                raise RateLimited(max(1, wait) if stats.remaining <= 0 else 1)
        for _, parts in keys:
            in_flight[parts] = in_flight.get(parts, 0) + 1
        outcome = LoginAttempt()
        try:
            yield outcome
        finally:
            for limit, parts in keys:
                left = in_flight.get(parts, 1) - 1
                if left > 0:
                    in_flight[parts] = left
                else:
                    in_flight.pop(parts, None)
                if outcome.failed:
                    self._limiter.hit(limit, *parts)
