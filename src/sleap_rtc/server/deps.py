"""What routes and sockets ask FastAPI for: the server's state, the database, the hub, the user.

Each dependency reads the one :class:`ServerState` on ``app.state.server`` of the
app that took the request (HTTP or WebSocket alike), so routers hold no state of
their own and can be mounted on any app :func:`~sleap_rtc.server.app.create_app` builds.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from sleap_rtc.server import websession
from sleap_rtc.server.auth import AccessClaims, AuthError
from sleap_rtc.server.db import Database
from sleap_rtc.server.errors import ApiError
from sleap_rtc.server.hub import Hub
from sleap_rtc.server.service import accounts
from sleap_rtc.server.state import ServerState

SESSION_ENDED = "this login session has ended (logged out); run `sleap-rtc login` again"


def get_state(connection: HTTPConnection) -> ServerState:
    state: ServerState = connection.app.state.server
    return state


StateDep = Annotated[ServerState, Depends(get_state)]


def get_database(state: StateDep) -> Database:
    return state.database


DatabaseDep = Annotated[Database, Depends(get_database)]


def get_hub(state: StateDep) -> Hub:
    return state.hub


HubDep = Annotated[Hub, Depends(get_hub)]


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, or None for any other header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def verify_access(state: ServerState, token: str) -> AccessClaims:
    """The claims of a valid access token whose login session is still going.

    Raises :class:`AuthError`. The session is looked up every time, so logging
    out ends the access token at once instead of when it expires.
    """
    claims = state.signer.verify_access(token)
    if not await state.database.run(accounts.session_active, claims.session_id):
        raise AuthError("SESSION_ENDED", SESSION_ENDED)
    return claims


async def web_claims(state: ServerState, cookie: str) -> websession.WebClaims:
    """The claims of a dashboard session cookie whose login session is still going."""
    claims = websession.verify(state.signer, cookie)
    if not await state.database.run(accounts.session_active, claims.access.session_id):
        raise AuthError("SESSION_ENDED", "this dashboard session has ended; log in again")
    return claims


async def current_user(request: Request, state: StateDep) -> AccessClaims:
    """The logged-in user of an HTTP request: a bearer access token (the CLI) or the
    dashboard's session cookie (with its CSRF token for changes); 401 without either."""
    token = bearer(request.headers.get("authorization"))
    if token is not None:
        try:
            return await verify_access(state, token)
        except AuthError as exc:
            raise ApiError(401, exc.code, exc.message) from None
    cookie = request.cookies.get(websession.COOKIE)
    if cookie is None:
        raise ApiError(401, "UNAUTHORIZED", "not logged in; run `sleap-rtc login`")
    try:
        claims = await web_claims(state, cookie)
    except AuthError as exc:
        raise ApiError(401, exc.code, exc.message) from None
    refused = websession.check_request(request, claims)
    if refused is not None:
        raise ApiError(403, "CSRF_FAILED", f"refused: {refused}; reload the page and try again")
    return claims.access


UserDep = Annotated[AccessClaims, Depends(current_user)]
