"""Server settings, from ``sleap-rtc server`` flags."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str
    #: Names this server in the tokens it signs.
    issuer: str = "sleap-rtc"
    access_token_ttl_s: float = Field(default=15 * 60, gt=0)
    refresh_token_ttl_s: float = Field(default=30 * 86400, gt=0)
    #: How long a peer ticket (to open a channel to a worker) stays valid.
    ticket_ttl_s: float = Field(default=120.0, gt=0)
    #: Workers send a heartbeat this often ...
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    #: ... and are marked offline (and disconnected) after this long without one.
    heartbeat_timeout_s: float = Field(default=15.0, gt=0)
    #: Failed logins allowed per minute, per client address and username.
    login_failures_per_minute: int = Field(default=5, ge=1)
    #: Failed logins allowed per minute from one address over all usernames: a loose
    #: backstop against guessing many accounts, so that one person's typos (or one
    #: attacker) behind a shared address don't lock out everyone else there.
    #: Default: 20 times ``login_failures_per_minute``.
    login_failures_per_address_per_minute: int | None = Field(default=None, ge=1)
    #: How long a new connection has to authenticate and (workers) register.
    register_timeout_s: float = Field(default=10.0, gt=0)
    #: Messages queued for one slow connection before it is dropped.
    send_queue_limit: int = Field(default=256, ge=1)
    #: What one sender (a user, over all their sessions, or a worker) may send in relayed
    #: messages, in KiB per second; beyond it the server reads from them more slowly. Set
    #: well above what one channel moves, so only a flood meets it (a full receiver
    #: queue is what stops a flood first: the sender gets PEER_BUSY).
    relay_kib_per_second: int = Field(default=128 * 1024, ge=64)
    #: Relay lanes (bulk file bytes through the server, when a client can't reach its
    #: worker directly): what one user's lanes may move, in MiB per second, and what all
    #: lanes on this server may. 0 for either turns relay lanes off (files then go over
    #: the peer channel).
    lane_mib_per_second_per_user: int = Field(default=200, ge=0)
    lane_mib_per_second: int = Field(default=1000, ge=0)
    #: Largest HTTP request body accepted (the API's bodies are small JSON objects).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Post notifications to webhooks on loopback, private and link-local addresses
    #: too (a chat server inside the lab); off, only public addresses are posted to,
    #: so a webhook can't make the server reach its own network.
    allow_private_webhooks: bool = False
    #: How long a dashboard login lasts (its cookie), unless the user logs out.
    web_session_ttl_s: float = Field(default=7 * 86400, gt=0)
    #: Mark the dashboard's cookie ``Secure``: None decides per request (set when the
    #: request came over https, as behind a TLS proxy that says so).
    cookie_secure: bool | None = None

    @property
    def web_session_ttl(self) -> timedelta:
        return timedelta(seconds=self.web_session_ttl_s)

    @property
    def address_login_failures(self) -> int:
        return self.login_failures_per_address_per_minute or 20 * self.login_failures_per_minute

    @property
    def access_ttl(self) -> timedelta:
        return timedelta(seconds=self.access_token_ttl_s)

    @property
    def refresh_ttl(self) -> timedelta:
        return timedelta(seconds=self.refresh_token_ttl_s)
