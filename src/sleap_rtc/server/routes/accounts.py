"""Accounts: log in, refresh, log out, who am I, and the keys that verify the server's tokens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from sleap_rtc.protocol import api
from sleap_rtc.protocol.signaling import CLOSE_UNAUTHORIZED
from sleap_rtc.server.auth import PasswordProvider
from sleap_rtc.server.deps import DatabaseDep, HubDep, StateDep, UserDep
from sleap_rtc.server.errors import ApiError
from sleap_rtc.server.logs import log
from sleap_rtc.server.models import User
from sleap_rtc.server.service import accounts
from sleap_rtc.server.state import ServerState

router = APIRouter()
T = TypeVar("T")


def _tokens_body(tokens: accounts.Tokens) -> api.TokenPair:
    return api.TokenPair(
        access_token=tokens.access_token,
        access_expires_at=tokens.access_expires_at,
        refresh_token=tokens.refresh_token,
        refresh_expires_at=tokens.refresh_expires_at,
        user=api.UserView(username=tokens.user.username, is_admin=tokens.user.is_admin),
    )


@router.get("/v1/auth/keys", response_model=api.PublicKeys)
async def public_keys(state: StateDep) -> api.PublicKeys:
    return api.PublicKeys(
        issuer=state.signer.issuer,
        keys=[api.PublicKey(kid=state.signer.kid, public_key_pem=state.signer.public_pem())],
    )


def checked_login(
    request: Request,
    state: ServerState,
    body: api.LoginRequest,
    start: Callable[[Session, User], T],
) -> Awaitable[T]:
    """Check a username and password (failures limited per address and username)
    and ``start`` a login for the user: the CLI's tokens or the dashboard's cookie."""
    address = request.client.host if request.client else "unknown"

    async def attempt() -> T:
        def check(session: Session) -> T | None:
            user = PasswordProvider().authenticate(session, body.username, body.password)
            return None if user is None else start(session, user)

        with state.logins.attempt(address, body.username) as outcome:
            started = await state.database.run(check)
            outcome.failed = started is None
        if started is None:
            log.info("failed login for %r from %s", body.username, address)
            raise ApiError(401, "BAD_CREDENTIALS", "wrong username or password")
        log.info("login: %s from %s", body.username, address)
        return started

    return attempt()


@router.post("/v1/auth/login", response_model=api.TokenPair)
async def login(body: api.LoginRequest, request: Request, state: StateDep) -> api.TokenPair:
    """A new login session; failed logins are limited per address and username."""
    settings = state.settings

    def start(session: Session, user: User) -> accounts.Tokens:
        return accounts.issue_tokens(
            session, state.signer, user, settings.access_ttl, settings.refresh_ttl
        )

    return _tokens_body(await checked_login(request, state, body, start))


@router.post("/v1/auth/refresh", response_model=api.TokenPair)
async def refresh(body: api.RefreshRequest, state: StateDep) -> api.TokenPair:
    tokens = await state.database.run(
        accounts.refresh_tokens,
        state.signer,
        body.refresh_token,
        state.settings.access_ttl,
        state.settings.refresh_ttl,
    )
    return _tokens_body(tokens)


@router.post("/v1/auth/logout", status_code=204)
async def logout(body: api.RefreshRequest, database: DatabaseDep, hub: HubDep) -> Response:
    """End the login session: its access tokens stop working and its sockets are closed."""
    ended = await database.run(accounts.revoke_refresh, body.refresh_token)
    if ended is not None:
        hub.disconnect_login_session(ended, CLOSE_UNAUTHORIZED, "logged out")
    return Response(status_code=204)


@router.get("/v1/me", response_model=api.UserView)
async def me(user: UserDep) -> api.UserView:
    return api.UserView(username=user.username, is_admin=user.is_admin)
