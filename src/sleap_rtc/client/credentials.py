"""The login session on disk: one file, mode 0600, with tokens per server URL.

Refreshing rotates the refresh token, so concurrent ``sleap-rtc`` processes
coordinate through an exclusive lock on the file: the one that refreshes writes
the new pair, and the others read it instead of refreshing again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from sleap_rtc import locations
from sleap_rtc.protocol.api import TokenPair


class StoredSession(BaseModel):
    model_config = ConfigDict(extra="ignore")

    username: str
    is_admin: bool = False
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime

    @classmethod
    def from_tokens(cls, tokens: TokenPair) -> StoredSession:
        return cls(
            username=tokens.user.username,
            is_admin=tokens.user.is_admin,
            access_token=tokens.access_token,
            access_expires_at=tokens.access_expires_at,
            refresh_token=tokens.refresh_token,
            refresh_expires_at=tokens.refresh_expires_at,
        )

    def access_valid_for(self) -> float:
        return (self.access_expires_at - datetime.now(UTC)).total_seconds()


class _File(BaseModel):
    model_config = ConfigDict(extra="ignore")

    default: str | None = None
    servers: dict[str, StoredSession] = {}


def credentials_path() -> Path:
    return locations.config_dir() / "credentials.json"


class CredentialStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or credentials_path()

    def _read(self) -> _File:
        try:
            return _File.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return _File()
        except (ValidationError, ValueError):
            return _File()

    def _write(self, data: _File) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data.model_dump(mode="json"), indent=2))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock while reading, refreshing and writing."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def get(self, server: str) -> StoredSession | None:
        return self._read().servers.get(server)

    def default_server(self) -> str | None:
        return self._read().default

    def put(self, server: str, session: StoredSession) -> None:
        data = self._read()
        data.servers[server] = session
        data.default = server
        self._write(data)

    def remove(self, server: str) -> StoredSession | None:
        """Forget the session for ``server``. It stays the default server unless another
        is logged in, so the next command says "not logged in to <server>" rather than
        that no server is configured."""
        data = self._read()
        removed = data.servers.pop(server, None)
        if data.default == server and data.servers:
            data.default = next(iter(data.servers))
        self._write(data)
        return removed
