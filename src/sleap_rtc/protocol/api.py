"""Bodies of the server's HTTP API, shared by the server and the client."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from sleap_rtc.protocol.index import IndexedJob, LossPoint
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
        return (
            max(
                (g.memory_free_mb if g.memory_free_mb is not None else g.memory_total_mb)
                for g in self.gpus
            )
            if self.gpus
            else 0
        )


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
    """A job of the room's index, with where it runs and whether that worker is online."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    room: str
    worker_id: str
    worker_name: str
    #: The worker's presence now: a QUEUED or RUNNING job of an offline worker may
    #: have ended meanwhile; the index catches up when the worker is back.
    worker_status: PresenceStatus
    #: When the worker last reported this job (the server's clock).
    reported_at: datetime


class JobPage(_Body):
    jobs: list[JobView]
    total: int
    offset: int
    limit: int


class JobDetail(JobView):
    """A job with its loss points, for ``jobs show`` and the dashboard."""

    points: list[LossPoint] = Field(default_factory=list)
