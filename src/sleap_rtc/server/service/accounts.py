"""Accounts: users, passwords, login sessions and the tokens that carry them.

A login session is the chain of refresh tokens one login started; every access
token names its session, so ending the session (logout, password change,
reuse of a spent refresh token) ends its access tokens too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from sleap_rtc.server import auth
from sleap_rtc.server.errors import ApiError, conflict, invalid
from sleap_rtc.server.models import RefreshToken, User, utcnow
from sleap_rtc.server.service.names import check_name


def create_user(session: Session, username: str, password: str, *, is_admin: bool = False) -> User:
    check_name("user", username)
    try:
        auth.check_password_policy(password)
    except ValueError as exc:
        raise invalid(str(exc)) from None
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise conflict(f"user {username!r} already exists")
    user = User(
        username=username,
        provider="password",
        password_hash=auth.hash_password(password),
        is_admin=is_admin,
    )
    session.add(user)
    session.commit()
    return user


def set_password(session: Session, username: str, password: str) -> User:
    try:
        auth.check_password_policy(password)
    except ValueError as exc:
        raise invalid(str(exc)) from None
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise ApiError(404, "NOT_FOUND", f"user {username!r} does not exist")
    user.password_hash = auth.hash_password(password)
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    session.commit()
    return user


@dataclass(frozen=True)
class Tokens:
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime
    user: User


def issue_tokens(
    session: Session,
    signer: auth.TokenSigner,
    user: User,
    access_ttl: timedelta,
    refresh_ttl: timedelta,
    session_id: str | None = None,
) -> Tokens:
    """A token pair for ``user``: a new login session, or ``session_id`` continued."""
    login = session_id or auth.new_id("s")
    access, access_exp = signer.issue_access(user, login, access_ttl)
    refresh = auth.new_secret(auth.REFRESH_PREFIX)
    refresh_exp = utcnow() + refresh_ttl
    session.add(
        RefreshToken(
            user_id=user.id,
            token_hash=auth.digest(refresh),
            session_id=login,
            expires_at=refresh_exp,
        )
    )
    session.commit()
    return Tokens(access, access_exp, refresh, refresh_exp, user)


def session_active(session: Session, session_id: str) -> bool:
    """Whether a login session still holds a live refresh token (not logged out or revoked).

    Asked on every request, so an access token stops working the moment its
    session ends rather than when it expires.
    """
    return (
        session.scalar(
            select(RefreshToken.id)
            .where(
                RefreshToken.session_id == session_id,
                RefreshToken.revoked_at.is_(None),
                RefreshToken.expires_at > utcnow(),
            )
            .limit(1)
        )
        is not None
    )


def refresh_tokens(
    session: Session,
    signer: auth.TokenSigner,
    refresh_token: str,
    access_ttl: timedelta,
    refresh_ttl: timedelta,
) -> Tokens:
    """Trade a refresh token for a new pair; the old one is revoked (rotation).

    A refresh token that was already used is a sign it leaked: every refresh
    token of that user is revoked, so both holders must log in again.
    """
    row = session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == auth.digest(refresh_token))
    )
    now = utcnow()
    if row is None or row.expires_at <= now:
        raise ApiError(401, "INVALID_REFRESH", "session has ended; run `sleap-rtc login` again")
    if row.revoked_at is not None:
        session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == row.user_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        session.commit()
        raise ApiError(
            401,
            "INVALID_REFRESH",
            "session was ended (token already used or logged out); run `sleap-rtc login` again",
        )
    user = session.get(User, row.user_id)
    if user is None:
        raise ApiError(401, "INVALID_REFRESH", "account no longer exists")
    row.revoked_at = now
    return issue_tokens(session, signer, user, access_ttl, refresh_ttl, row.session_id)


def revoke_refresh(session: Session, refresh_token: str) -> str | None:
    """End the login session of ``refresh_token``; returns the session's id, if it had one."""
    row = session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == auth.digest(refresh_token))
    )
    if row is None:
        return None
    now = utcnow()
    if row.session_id is None:
        if row.revoked_at is None:
            row.revoked_at = now
    else:
        session.execute(
            update(RefreshToken)
            .where(RefreshToken.session_id == row.session_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    session.commit()
    return row.session_id


def start_session(session: Session, user: User, ttl: timedelta) -> str:
    """A new login session for ``user`` with no refresh token to hand out (the
    dashboard's: its cookie names the session); returns the session's id."""
    login = auth.new_id("s")
    session.add(
        RefreshToken(
            user_id=user.id,
            token_hash=auth.digest(auth.new_secret()),
            session_id=login,
            expires_at=utcnow() + ttl,
        )
    )
    session.commit()
    return login


def end_session(session: Session, session_id: str) -> None:
    """End a login session: every token of it stops working."""
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.session_id == session_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    session.commit()


def username_of(session: Session, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    return session.scalar(select(User.username).where(User.id == user_id))
