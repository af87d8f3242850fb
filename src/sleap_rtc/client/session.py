"""Async client for the server's HTTP API, with the login session refreshed as needed."""

from __future__ import annotations

from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from sleap_rtc import __version__
from sleap_rtc.client.config import resolve_server
from sleap_rtc.client.credentials import CredentialStore, StoredSession
from sleap_rtc.client.errors import (
    ClientError,
    NoServerConfigured,
    NotLoggedIn,
    ServerError,
    ServerUnreachable,
)
from sleap_rtc.protocol import api

M = TypeVar("M", bound=BaseModel)

#: Refresh the access token when it has less than this left.
REFRESH_MARGIN_S = 30.0


def _seg(value: str) -> str:
    return quote(value, safe="")


class ServerClient:
    """One server, one user. Use as ``async with ServerClient(url) as server: ...``."""

    def __init__(
        self,
        url: str,
        *,
        store: CredentialStore | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.store = store or CredentialStore()
        self._http = httpx.AsyncClient(
            base_url=self.url,
            timeout=timeout,
            headers={"user-agent": f"sleap-rtc/{__version__}"},
            transport=transport,
        )

    @classmethod
    def from_config(cls, server: str | None = None, **kwargs: Any) -> ServerClient:
        """The server from ``server``, ``SLEAP_RTC_SERVER``, config.toml, or the last login."""
        store = kwargs.pop("store", None) or CredentialStore()
        url = resolve_server(server, fallback=store.default_server())
        if url is None:
            raise NoServerConfigured()
        return cls(url, store=store, **kwargs)

    async def __aenter__(self) -> ServerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- plumbing ---------------------------------------------------------------------------

    async def _send(
        self, method: str, path: str, *, json: Any = None, params: Any = None, token: str | None
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else None
        try:
            return await self._http.request(method, path, json=json, params=params, headers=headers)
        except httpx.TimeoutException:
            raise ServerUnreachable(self.url, "timed out") from None
        except httpx.TransportError as exc:
            raise ServerUnreachable(self.url, str(exc) or type(exc).__name__) from None

    def _error(self, response: httpx.Response) -> ServerError:
        try:
            body = api.ErrorResponse.model_validate_json(response.content)
            return ServerError(response.status_code, body.error.code, body.error.message)
        except ValidationError:
            # Not a sleap-rtc answer (a proxy's or another server's page): say so, and
            # don't print the page.
            return ServerError(
                response.status_code,
                "NOT_SLEAP_RTC",
                f"{self.url} answered HTTP {response.status_code} "
                f"{response.reason_phrase or ''}".rstrip()
                + " with something that isn't a sleap-rtc answer; is it the sleap-rtc server's "
                "address (`sleap-rtc server` prints it)?",
            )

    async def check_server(self) -> api.HealthView:
        """The server's ``/health``: ServerUnreachable if nothing answers, ClientError if
        what answers is not a sleap-rtc server."""
        response = await self._send("GET", "/health", token=None)
        try:
            return api.HealthView.model_validate_json(response.content)
        except ValidationError:
            raise ClientError(
                f"{self.url} answered, but it is not a sleap-rtc server (its /health said "
                f"HTTP {response.status_code}); check the address (`sleap-rtc server` prints it)"
            ) from None

    @staticmethod
    def _parse(response: httpx.Response, model: Any) -> Any:
        try:
            return TypeAdapter(model).validate_json(response.content)
        except ValidationError as exc:
            raise ClientError(
                f"unexpected answer from the server ({exc.error_count()} problems); "
                "is it a sleap-rtc server of a compatible version?"
            ) from None

    def session(self) -> StoredSession:
        stored = self.store.get(self.url)
        if stored is None:
            raise NotLoggedIn(self.url)
        return stored

    async def access_token(self, *, force_refresh: bool = False) -> str:
        """A valid access token, refreshed (under the credentials lock) when needed.

        With no session for this server, the server is asked first, so a mistyped
        address says it can't be reached (or isn't sleap-rtc) rather than "not logged in".
        """
        if self.store.get(self.url) is None:
            await self.check_server()
        stored = self.session()
        if not force_refresh and stored.access_valid_for() > REFRESH_MARGIN_S:
            return stored.access_token
        with self.store.locked():
            current = self.store.get(self.url)
            if current is None:
                raise NotLoggedIn(self.url)
            if current.access_token != stored.access_token and (
                current.access_valid_for() > REFRESH_MARGIN_S
            ):
                return current.access_token  # another process refreshed it meanwhile
            response = await self._send(
                "POST",
                "/v1/auth/refresh",
                json={"refresh_token": current.refresh_token},
                token=None,
            )
            if response.status_code == 401:
                self.store.remove(self.url)
                raise NotLoggedIn(self.url, self._error(response).message)
            if response.status_code != 200:
                raise self._error(response)
            tokens: api.TokenPair = self._parse(response, api.TokenPair)
            self.store.put(self.url, StoredSession.from_tokens(tokens))
            return tokens.access_token

    async def _call(
        self,
        method: str,
        path: str,
        model: Any = None,
        *,
        json: Any = None,
        params: Any = None,
    ) -> Any:
        token = await self.access_token()
        response = await self._send(method, path, json=json, params=params, token=token)
        if response.status_code == 401:
            token = await self.access_token(force_refresh=True)
            response = await self._send(method, path, json=json, params=params, token=token)
        if response.status_code >= 400:
            raise self._error(response)
        if model is None:
            return None
        return self._parse(response, model)

    # -- accounts ---------------------------------------------------------------------------

    async def health(self) -> api.HealthView:
        response = await self._send("GET", "/health", token=None)
        if response.status_code != 200:
            raise self._error(response)
        result: api.HealthView = self._parse(response, api.HealthView)
        return result

    async def login(self, username: str, password: str) -> api.UserView:
        response = await self._send(
            "POST",
            "/v1/auth/login",
            json={"username": username, "password": password},
            token=None,
        )
        if response.status_code != 200:
            error = self._error(response)
            if response.status_code == 429:
                error.message += f" (retry after {response.headers.get('retry-after', '?')} s)"
            raise error
        tokens: api.TokenPair = self._parse(response, api.TokenPair)
        with self.store.locked():
            self.store.put(self.url, StoredSession.from_tokens(tokens))
        return tokens.user

    async def logout(self) -> bool:
        """Revoke the refresh token on the server and forget the session here."""
        with self.store.locked():
            stored = self.store.get(self.url)
            if stored is None:
                return False
            try:
                await self._send(
                    "POST",
                    "/v1/auth/logout",
                    json={"refresh_token": stored.refresh_token},
                    token=None,
                )
            finally:
                self.store.remove(self.url)
        return True

    async def whoami(self) -> api.UserView:
        result: api.UserView = await self._call("GET", "/v1/me", api.UserView)
        return result

    async def public_keys(self) -> api.PublicKeys:
        response = await self._send("GET", "/v1/auth/keys", token=None)
        if response.status_code != 200:
            raise self._error(response)
        result: api.PublicKeys = self._parse(response, api.PublicKeys)
        return result

    # -- rooms ------------------------------------------------------------------------------

    async def create_room(self, name: str, expires: timedelta | None = None) -> api.RoomView:
        body: dict[str, Any] = {"name": name}
        if expires is not None:
            body["expires_in_s"] = max(1, int(expires.total_seconds()))
        result: api.RoomView = await self._call("POST", "/v1/rooms", api.RoomView, json=body)
        return result

    async def rooms(self) -> list[api.RoomView]:
        result: list[api.RoomView] = await self._call("GET", "/v1/rooms", list[api.RoomView])
        return result

    async def room(self, name: str) -> api.RoomInfo:
        result: api.RoomInfo = await self._call("GET", f"/v1/rooms/{_seg(name)}", api.RoomInfo)
        return result

    async def delete_room(self, name: str) -> None:
        await self._call("DELETE", f"/v1/rooms/{_seg(name)}")

    async def invite(
        self, room: str, expires: timedelta = timedelta(days=7), max_uses: int = 1
    ) -> api.InviteView:
        result: api.InviteView = await self._call(
            "POST",
            f"/v1/rooms/{_seg(room)}/invites",
            api.InviteView,
            json={"expires_in_s": max(1, int(expires.total_seconds())), "max_uses": max_uses},
        )
        return result

    async def join(self, code: str) -> api.RoomView:
        result: api.RoomView = await self._call(
            "POST", "/v1/invites/accept", api.RoomView, json={"code": code}
        )
        return result

    async def workers(
        self,
        room: str,
        min_gpu_memory: int | None = None,
        *,
        statuses: list[str] | None = None,
        limit: int | None = None,
    ) -> list[api.WorkerView]:
        """The room's workers, online first; the filters apply on the server."""
        params: dict[str, Any] = {}
        if min_gpu_memory is not None:
            params["min_gpu_memory"] = min_gpu_memory
        if statuses:
            params["status"] = statuses
        if limit is not None:
            params["limit"] = limit
        result: list[api.WorkerView] = await self._call(
            "GET", f"/v1/rooms/{_seg(room)}/workers", list[api.WorkerView], params=params or None
        )
        return result

    async def room_jobs(
        self,
        room: str,
        *,
        states: list[str] | None = None,
        owner: str | None = None,
        worker: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> api.JobPage:
        """A page of the room's job index, newest first (every worker, online or not)."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if states:
            params["state"] = states
        for name, value in (("owner", owner), ("worker", worker), ("kind", kind), ("since", since)):
            if value is not None:
                params[name] = value
        page: api.JobPage = await self._call(
            "GET", f"/v1/rooms/{_seg(room)}/jobs", api.JobPage, params=params
        )
        return page

    async def room_job(self, room: str, job: str) -> api.JobDetail:
        """One job of the room's index by its id or a unique prefix, with its loss points."""
        found: api.JobDetail = await self._call(
            "GET", f"/v1/rooms/{_seg(room)}/jobs/{_seg(job)}", api.JobDetail
        )
        return found

    async def ticket(self, room: str, worker_id: str) -> api.TicketView:
        """A short-lived ticket that lets this user open a channel to ``worker_id``."""
        result: api.TicketView = await self._call(
            "POST",
            f"/v1/rooms/{_seg(room)}/tickets",
            api.TicketView,
            json={"worker_id": worker_id},
        )
        return result

    # -- webhooks ---------------------------------------------------------------------------

    @staticmethod
    def _webhook_path(room: str | None) -> str:
        return "/v1/me/webhook" if room is None else f"/v1/rooms/{_seg(room)}/webhook"

    async def set_webhook(
        self, url: str, *, on_start: bool = False, room: str | None = None
    ) -> api.WebhookView:
        """Set your webhook, or (``room``, owners only) the room's; replaces the one before."""
        try:
            body = api.SetWebhook(url=url, on_start=on_start).model_dump()
        except ValidationError as exc:
            raise ClientError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None
        result: api.WebhookView = await self._call(
            "PUT", self._webhook_path(room), api.WebhookView, json=body
        )
        return result

    async def webhook(self, room: str | None = None) -> api.WebhookView:
        """Your webhook, or whether ``room`` has one (where it goes only for its owners)."""
        result: api.WebhookView = await self._call("GET", self._webhook_path(room), api.WebhookView)
        return result

    async def delete_webhook(self, room: str | None = None) -> bool:
        """Remove your webhook or the room's; False when none was set."""
        try:
            await self._call("DELETE", self._webhook_path(room))
        except ServerError as exc:
            if exc.code == "NO_WEBHOOK":
                return False
            raise
        return True

    async def test_webhook(self, room: str | None = None) -> api.WebhookTest:
        """Have the server post a test message to your webhook (or the room's) now."""
        result: api.WebhookTest = await self._call(
            "POST", self._webhook_path(room) + "/test", api.WebhookTest
        )
        return result

    # -- worker keys ------------------------------------------------------------------------

    async def create_key(self, room: str, name: str | None = None) -> api.NewKey:
        result: api.NewKey = await self._call(
            "POST", f"/v1/rooms/{_seg(room)}/keys", api.NewKey, json={"name": name}
        )
        return result

    async def keys(self, room: str) -> list[api.KeyView]:
        result: list[api.KeyView] = await self._call(
            "GET", f"/v1/rooms/{_seg(room)}/keys", list[api.KeyView]
        )
        return result

    async def revoke_key(self, room: str, key: str) -> api.KeyView:
        result: api.KeyView = await self._call(
            "DELETE", f"/v1/rooms/{_seg(room)}/keys/{_seg(key)}", api.KeyView
        )
        return result

    def websocket_url(self, path: str) -> str:
        base = self.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return base + path
