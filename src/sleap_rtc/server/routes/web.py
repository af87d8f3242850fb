"""The dashboard's login: log in with a password form, ask who is logged in, log out.

The session is a cookie (:mod:`sleap_rtc.server.websession`); everything else the
dashboard does goes through the same API routes as the CLI, with that cookie.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from sleap_rtc.protocol import api
from sleap_rtc.protocol.signaling import CLOSE_UNAUTHORIZED
from sleap_rtc.server import websession
from sleap_rtc.server.auth import AuthError
from sleap_rtc.server.deps import StateDep, web_claims
from sleap_rtc.server.errors import ApiError
from sleap_rtc.server.models import User
from sleap_rtc.server.routes.accounts import checked_login
from sleap_rtc.server.service import accounts

router = APIRouter(tags=["dashboard session"])


@router.post("/v1/auth/web/login", response_model=api.WebSession)
async def web_login(
    body: api.LoginRequest, request: Request, response: Response, state: StateDep
) -> api.WebSession:
    """Log a browser in: sets the HttpOnly session cookie; the answer holds the CSRF
    token that requests changing something must send in ``X-CSRF-Token``."""
    ttl = state.settings.web_session_ttl

    def start(session: Session, user: User) -> tuple[str, str, api.WebSession]:
        session_id = accounts.start_session(session, user, ttl)
        token, csrf, expires = websession.issue(state.signer, user, session_id, ttl)
        view = api.UserView(username=user.username, is_admin=user.is_admin)
        return token, csrf, api.WebSession(user=view, csrf_token=csrf, expires_at=expires)

    token, _, body_out = await checked_login(request, state, body, start)
    secure = websession.secure(request, state.settings)
    websession.set_cookie(response, token, body_out.expires_at, secure)
    return body_out


async def _claims(request: Request, state: StateDep) -> websession.WebClaims:
    cookie = request.cookies.get(websession.COOKIE)
    if cookie is None:
        raise ApiError(401, "UNAUTHORIZED", "not logged in")
    try:
        return await web_claims(state, cookie)
    except AuthError as exc:
        raise ApiError(401, exc.code, exc.message) from None


@router.get("/v1/auth/web/session", response_model=api.WebSession)
async def web_session(request: Request, state: StateDep) -> api.WebSession:
    """Who this browser is logged in as, and the session's CSRF token; 401 if nobody."""
    claims = await _claims(request, state)
    user = api.UserView(username=claims.access.username, is_admin=claims.access.is_admin)
    return api.WebSession(
        user=user, csrf_token=claims.csrf_token, expires_at=claims.access.expires_at
    )


@router.post("/v1/auth/web/logout", status_code=204)
async def web_logout(request: Request, state: StateDep) -> Response:
    """End the browser's session (CSRF token required): the cookie stops working at
    once, and the session's live streams end."""
    claims = await _claims(request, state)
    refused = websession.check_request(request, claims)
    if refused is not None:
        raise ApiError(403, "CSRF_FAILED", f"refused: {refused}; reload the page and try again")
    session_id = claims.access.session_id
    await state.database.run(accounts.end_session, session_id)
    state.events.end_session(session_id)
    state.hub.disconnect_login_session(session_id, CLOSE_UNAUTHORIZED, "logged out")
    response = Response(status_code=204)
    websession.clear_cookie(response, websession.secure(request, state.settings))
    return response
