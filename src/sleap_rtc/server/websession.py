"""The dashboard's login: an HttpOnly session cookie, and a CSRF token for changes.

A browser logs in with the same accounts as the CLI. Its session is a token the
server signs (audience ``web``) in a cookie that scripts can't read
(``HttpOnly``), that no other site's page sends (``SameSite=Strict``) and that
goes only over TLS when the server is reached over TLS (``Secure``). The token
names a login session, so logging out ends it at once, like the CLI's.

Every request that changes something and is authenticated by the cookie must
also carry the session's CSRF token in ``X-CSRF-Token``; the token is inside the
signed cookie, and the page learns it from the login answer, which another
site's page can't read. Requests with a bearer token carry no ambient
credentials and need none.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from fastapi import Request, Response

from sleap_rtc.server.auth import AccessClaims, AuthError, TokenSigner
from sleap_rtc.server.models import User
from sleap_rtc.server.settings import ServerSettings

COOKIE = "sleap_rtc_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
AUDIENCE = "web"


@dataclass(frozen=True)
class WebClaims:
    access: AccessClaims
    csrf_token: str


def issue(
    signer: TokenSigner, user: User, session_id: str, ttl: timedelta
) -> tuple[str, str, datetime]:
    """A session cookie's value for ``user``, its CSRF token and when it expires."""
    csrf = secrets.token_urlsafe(24)
    token, expires = signer.sign(
        {
            "sub": str(user.id),
            "name": user.username,
            "adm": user.is_admin,
            "aud": AUDIENCE,
            "sid": session_id,
            "csrf": csrf,
        },
        ttl,
    )
    return token, csrf, expires


def verify(signer: TokenSigner, token: str) -> WebClaims:
    """The claims of a session cookie; raises :class:`AuthError`."""
    claims = signer.verify(token, audience=AUDIENCE)
    try:
        access = AccessClaims(
            user_id=int(claims["sub"]),
            username=str(claims["name"]),
            is_admin=bool(claims.get("adm", False)),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            session_id=str(claims["sid"]),
        )
        return WebClaims(access, str(claims["csrf"]))
    except (KeyError, ValueError):
        raise AuthError("INVALID_TOKEN", "the session cookie is not valid; log in again") from None


def check_request(request: Request, claims: WebClaims) -> str | None:
    """Why a cookie-authenticated request is refused as cross-site, or None if it isn't.

    A change needs the session's CSRF token; any request that names its origin
    must name this server.
    """
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != _own_host(request):
        return "the request comes from another site's page"
    if request.method in SAFE_METHODS:
        return None
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not secrets.compare_digest(sent, claims.csrf_token):
        return f"the request lacks the session's CSRF token (header {CSRF_HEADER})"
    return None


def _own_host(request: Request) -> str:
    # The host only: behind a TLS proxy the scheme the server sees may differ.
    return request.headers.get("host") or request.url.netloc


def secure(request: Request, settings: ServerSettings) -> bool:
    if settings.cookie_secure is not None:
        return settings.cookie_secure
    return request.url.scheme == "https"


def set_cookie(response: Response, token: str, expires: datetime, secure: bool) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=max(0, int((expires - datetime.now(UTC)).total_seconds())),
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, secure: bool) -> None:
    response.delete_cookie(COOKIE, path="/", secure=secure, httponly=True, samesite="strict")


__all__ = ["COOKIE", "CSRF_HEADER", "AuthError", "WebClaims", "check_request", "issue", "verify"]
