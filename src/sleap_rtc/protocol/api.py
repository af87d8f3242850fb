"""Bodies of the server's HTTP API, shared by the server and the client."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, computed_field

from sleap_rtc.protocol.index import IndexedJob, LogLine, LossPoint
from sleap_rtc.protocol.signaling import Gpu

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Role = Literal["owner", "member"]
#: What discovery reports: online (idle), busy, or offline.
PresenceStatus = Literal["online", "busy", "offline"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Body):
    code: str
    message: str


class ErrorResponse(_Body):
    error: ErrorBody


class LoginRequest(_Body):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class WebSession(_Body):
    """A browser's login: who, and the token its state-changing requests must send
    back in the ``X-CSRF-Token`` header (the session itself is an HttpOnly cookie)."""

    user: UserView
    csrf_token: str
    expires_at: datetime


class RefreshRequest(_Body):
    refresh_token: Annotated[str, Field(min_length=1, max_length=256)]


class UserView(_Body):
    username: str
    is_admin: bool


class TokenPair(_Body):
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime
    token_type: Literal["bearer"] = "bearer"
    user: UserView


class PublicKey(_Body):
    kid: str
    alg: Literal["EdDSA"] = "EdDSA"
    public_key_pem: str


class PublicKeys(_Body):
    issuer: str
    keys: list[PublicKey]


class CreateRoom(_Body):
    name: Name
    #: Seconds until the room expires; None keeps it until deleted.
    expires_in_s: Annotated[int, Field(gt=0, le=10 * 365 * 86400)] | None = None


class RoomView(_Body):
    id: str
    name: str
    role: Role
    created_at: datetime
    expires_at: datetime | None
    members: int
    workers_online: int


class MemberView(_Body):
    username: str
    role: Role
    joined_at: datetime


class RoomInfo(RoomView):
    owner: str | None
    member_list: list[MemberView]
    keys_active: int
    workers_known: int


class CreateInvite(_Body):
    expires_in_s: Annotated[int, Field(gt=0, le=365 * 86400)] = 7 * 86400
    max_uses: Annotated[int, Field(ge=1, le=10_000)] = 1


class InviteView(_Body):
    code: str
    room: str
    expires_at: datetime
    max_uses: int


class AcceptInvite(_Body):
    code: Annotated[str, Field(min_length=1, max_length=128)]


class CreateKey(_Body):
    name: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class KeyView(_Body):
    id: str
    name: str
    room: str
    created_by: str | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class NewKey(KeyView):
    #: Shown once; the server keeps only a digest.
    secret: str


class WorkerView(_Body):
    id: str
    name: str
    room: str
    status: PresenceStatus
    hostname: str
    accelerator: str
    gpus: list[Gpu]
    running_jobs: int
    max_concurrent_jobs: int
    sleap_nn_version: str | None
    backends: list[str]
    mounts: list[str]
    #: "landlock" when jobs run sandboxed, "off" when they run with the worker's access.
    sandbox: str = "off"
    last_seen: datetime
    connected_since: datetime | None

    @property
    def best_gpu_memory_mb(self) -> int:
        """Free memory of the roomiest GPU (total when free is unknown); 0 without a GPU."""
        return best_gpu_memory_mb((g.memory_free_mb, g.memory_total_mb) for g in self.gpus)


def best_gpu_memory_mb(gpus: Iterable[tuple[int | None, int]]) -> int:
    """The MiB one GPU offers, from each GPU's (free, total): free where known, else
    total; 0 without a GPU. The server filters listings by it, clients pick by it."""
    return max((total if free is None else free for free, total in gpus), default=0)


class CreateTicket(_Body):
    worker_id: Annotated[str, Field(min_length=1, max_length=64)]


class TicketView(_Body):
    """Proof, signed by the server, that this user may open a channel to this worker."""

    ticket: str
    worker_id: str
    room: str
    expires_at: datetime


class HealthView(_Body):
    status: Literal["ok"]
    version: str
    database: str
    schema_revision: str | None


class JobView(IndexedJob):
    """A job of the room's index, with where it runs and whether that worker is online.

    Fields this version doesn't know are ignored (not refused), so a client keeps
    reading a newer server's listings; ``best_val_loss`` is always recomputed.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    room: str
    worker_id: str
    worker_name: str
    #: The worker's presence now: a QUEUED or RUNNING job of an offline worker may
    #: have ended meanwhile; the index catches up when the worker is back.
    worker_status: PresenceStatus
    #: When the worker last reported this job (the server's clock).
    reported_at: datetime
    #: The ``sleap-rtc`` command that submits the same job to the same worker again.
    command: str = ""
    #: Whether the user asking owns the job and so may stop or cancel it.
    can_control: bool = False

    @computed_field  # type: ignore[prop-decorator]
    @property
    def best_val_loss(self) -> float | None:
        """The best validation loss of the models it made (None before it completed)."""
        return IndexedJob.best_val_loss.fget(self)  # type: ignore[attr-defined]


class JobPage(_Body):
    jobs: list[JobView]
    total: int
    offset: int
    limit: int


class JobDetail(JobView):
    """A job with its loss points, for ``jobs show`` and the dashboard."""

    points: list[LossPoint] = Field(default_factory=list)
    #: The newest lines of the job's log, oldest first.
    log_tail: list[LogLine] = Field(default_factory=list)


class JobControlView(_Body):
    """What a stop or cancel asked of the job's worker came to."""

    job_id: str
    action: Literal["stop", "cancel"]
    message: str


# -- notifications ------------------------------------------------------------------------

#: Longest webhook URL accepted.
MAX_WEBHOOK_URL = 2048
#: Where a webhook URL's problems show it, cut to this many characters.
SHOWN_URL_CHARS = 40
WEBHOOK_EXAMPLE = "e.g. https://hooks.slack.com/services/T000/B000/XXXX"


def _shown_url(url: str) -> str:
    text = url if url.isprintable() else url.encode("unicode_escape").decode("ascii")
    return repr(text if len(text) <= SHOWN_URL_CHARS else text[:SHOWN_URL_CHARS] + "…")


def check_webhook_url(url: str) -> str:
    """``url`` if it is a usable webhook address (http or https, a host, at most
    :data:`MAX_WEBHOOK_URL` characters); else ValueError naming the field, the value
    (cut short: the URL is a secret) and what to do."""
    text = url.strip()
    shown = _shown_url(text)
    if not text:
        raise ValueError(
            f"url is empty; give the webhook URL your chat service made, {WEBHOOK_EXAMPLE}"
        )
    if len(text) > MAX_WEBHOOK_URL:
        raise ValueError(
            f"url {shown} is {len(text)} characters; a webhook URL may have at most "
            f"{MAX_WEBHOOK_URL}: check that you pasted only the URL"
        )
    if not text.isprintable() or any(c.isspace() for c in text):
        raise ValueError(
            f"url {shown} holds spaces or control characters; paste the URL alone, "
            + WEBHOOK_EXAMPLE
        )
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url {shown} is not a URL ({exc}); {WEBHOOK_EXAMPLE}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(
            f"url {shown} must start with https:// (or http://), not "
            f"{(parts.scheme or 'nothing')[:16]!r}; {WEBHOOK_EXAMPLE}"
        )
    if not parts.hostname:
        raise ValueError(f"url {shown} names no host; {WEBHOOK_EXAMPLE}")
    if port == 0:
        raise ValueError(f"url {shown} names port 0; leave the port out or give the real one")
    return text


def webhook_hint(url: str) -> str:
    """What a webhook URL may show of itself: scheme, host and port, never the path
    or the user info that hold its secret (``https://hooks.slack.com``)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme.lower()}://{host}{port}"


WebhookUrl = Annotated[
    str, Field(max_length=8 * MAX_WEBHOOK_URL), AfterValidator(check_webhook_url)
]


class SetWebhook(_Body):
    url: WebhookUrl
    #: Also post when a job starts running (every hook hears when a job ends).
    on_start: bool = False


class WebhookView(_Body):
    """A user's or a room's webhook. Its URL is a secret: only where it goes is shown
    (``hint``), and to room members that aren't owners not even that."""

    scope: Literal["user", "room"]
    #: The user (scope user) or the room (scope room) it belongs to.
    name: str
    set: bool
    on_start: bool = False
    hint: str | None = None
    created_at: datetime | None = None


class WebhookTest(_Body):
    """What a test post to a webhook got."""

    delivered: bool
    #: The hook's HTTP status, when it answered.
    status: int | None = None
    attempts: int = 0
    message: str
