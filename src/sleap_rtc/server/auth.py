"""Who is who: password accounts, signed access tokens, refresh tokens, secrets.

- Passwords are hashed with Argon2id (argon2-cffi).
- Access tokens are short-lived JWTs signed with the server's Ed25519 key (PyJWT);
  the public key is published so workers can verify tickets without a secret.
- Refresh tokens, worker keys and invite codes are random secrets shown once and
  stored only as SHA-256 digests (they are high-entropy, so a slow hash adds nothing).

Identity providers share one small interface (:class:`IdentityProvider`), so an
OAuth/OIDC provider is one more class beside :class:`PasswordProvider`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from sleap_rtc.server.models import SigningKey, User

_HASHER = PasswordHasher()
#: Verified when a username doesn't exist, so timing doesn't tell which names do.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))

REFRESH_PREFIX = "srt_"
WORKER_KEY_PREFIX = "srk_"
MIN_PASSWORD_LENGTH = 8


class AuthError(Exception):
    """Authentication failed; ``code`` is machine-readable, the message is safe to show."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(
            f"password is {len(password)} characters; use at least {MIN_PASSWORD_LENGTH}"
        )


def new_secret(prefix: str = "", nbytes: int = 32) -> str:
    return prefix + secrets.token_urlsafe(nbytes)


def new_invite_code() -> str:
    """80 random bits as 16 lowercase letters and digits: easy to read out, and never
    starting with '-' (which a command line would take for an option)."""
    return base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:16]}"


class IdentityProvider(Protocol):
    """Turns credentials into a local account, or None when they are wrong."""

    name: str

    def authenticate(self, session: Session, username: str, secret: str) -> User | None: ...


class PasswordProvider:
    """Built-in accounts with Argon2id password hashes."""

    name = "password"

    def authenticate(self, session: Session, username: str, secret: str) -> User | None:
        user = session.scalar(select(User).where(User.username == username))
        stored = user.password_hash if user is not None and user.provider == self.name else None
        if verify_password(stored, secret) and user is not None:
            if _HASHER.check_needs_rehash(user.password_hash or ""):
                user.password_hash = hash_password(secret)
            return user
        return None


@dataclass(frozen=True)
class AccessClaims:
    user_id: int
    username: str
    is_admin: bool
    expires_at: datetime
    #: The login session the token belongs to; logging out ends it, and with it the token.
    session_id: str


class TokenSigner:
    """Signs and verifies the server's JWTs (EdDSA)."""

    def __init__(self, kid: str, private_key: Ed25519PrivateKey, issuer: str) -> None:
        self.kid = kid
        self.issuer = issuer
        self._private = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()

    @classmethod
    def load_or_create(cls, session: Session, issuer: str) -> TokenSigner:
        """The newest signing key in the database, created on first start."""
        row = session.scalar(select(SigningKey).order_by(SigningKey.created_at.desc()).limit(1))
        if row is None:
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode("ascii")
            row = SigningKey(kid=new_id("k"), private_key_pem=pem)
            session.add(row)
            session.commit()
        loaded = serialization.load_pem_private_key(row.private_key_pem.encode("ascii"), None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise RuntimeError(f"signing key {row.kid} is not an Ed25519 key")
        return cls(row.kid, loaded, issuer)

    def public_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def sign(self, claims: dict[str, Any], ttl: timedelta) -> tuple[str, datetime]:
        now = datetime.now(UTC)
        expires = now + ttl
        body = {
            **claims,
            "iss": self.issuer,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(body, self._private, algorithm="EdDSA", headers={"kid": self.kid})
        return token, expires

    def verify(self, token: str, audience: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.public_key,
                algorithms=["EdDSA"],
                audience=audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(
                "TOKEN_EXPIRED", "access token has expired; log in again or refresh it"
            ) from None
        except jwt.InvalidTokenError:
            raise AuthError("INVALID_TOKEN", "access token is not valid for this server") from None
        return claims

    def issue_access(self, user: User, session_id: str, ttl: timedelta) -> tuple[str, datetime]:
        return self.sign(
            {
                "sub": str(user.id),
                "name": user.username,
                "adm": user.is_admin,
                "aud": "access",
                "sid": session_id,
            },
            ttl,
        )

    def issue_ticket(
        self, claims: AccessClaims, room: str, room_id: str, worker_id: str, ttl: timedelta
    ) -> tuple[str, datetime]:
        """A peer ticket: this user may open one channel to this worker in this room.

        The worker checks the room by id as well as by name, compares the subject
        with the session that opens the channel, and refuses a ``jti`` it has seen.
        """
        return self.sign(
            {
                "sub": str(claims.user_id),
                "name": claims.username,
                "aud": "peer",
                "room": room,
                "rid": room_id,
                "wkr": worker_id,
            },
            ttl,
        )

    def verify_access(self, token: str) -> AccessClaims:
        claims = self.verify(token, audience="access")
        try:
            return AccessClaims(
                user_id=int(claims["sub"]),
                username=str(claims["name"]),
                is_admin=bool(claims.get("adm", False)),
                expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
                session_id=str(claims["sid"]),
            )
        except (KeyError, ValueError):
            raise AuthError(
                "INVALID_TOKEN", "access token is missing claims; log in again or refresh it"
            ) from None
