"""The job protocol between a client and a worker, over any channel (sans-I/O).

A channel opens with ``HELLO`` carrying a ticket the server signed for this user,
room and worker; the worker answers ``WELCOME``, or ``ERROR`` and closes. Then::

    JOB_SUBMIT → JOB_ACCEPTED | JOB_REJECTED → JOB_PROGRESS* → JOB_COMPLETE | JOB_FAILED

plus ``JOB_CANCEL``, ``JOB_STOP`` (stop early, keep the model), ``JOB_STATUS``,
``JOB_LIST``, ``JOB_ATTACH`` (replay log and progress, then follow), ``PING``/``PONG``
and ``ERROR``. Every request a client sends carries a ``request_id`` that its
reply (or the ``ERROR`` refusing it) echoes, so replies are matched by id, never by
order; uploads are keyed by their ``upload_id`` and downloads by the ``transfer_id``
the worker announces. Every message after a submit names its job. Messages are
single JSON objects of at most :data:`MAX_JOB_MESSAGE_BYTES`; an unknown type or
version is a :class:`~sleap_rtc.protocol.signaling.ProtocolError`, never a crash.
The rules of a conversation (HELLO first, which reply answers which request,
keepalives) are in :mod:`sleap_rtc.protocol.session`; transfer windows in
:mod:`sleap_rtc.protocol.transfer`.

Every message type of the job protocol is declared here, so the two codecs see one
union (the reason this file is over 500 lines).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from sleap_rtc.jobs.events import TrackProgress, TrainProgress
from sleap_rtc.jobs.results import StepResult
from sleap_rtc.protocol.codec import ProtocolError, load_object, validate
from sleap_rtc.protocol.names import plain_name

JOB_PROTOCOL_VERSION: Final = 1
#: Largest message on a job channel: fits a WebRTC data channel message and a relay payload.
MAX_JOB_MESSAGE_BYTES = 48 * 1024
#: Most log lines in one JOB_PROGRESS or JOB_FAILED.
MAX_LOG_LINES = 200
#: Raw bytes per file chunk (base64 in JSON: 32 KiB on the wire).
CHUNK_BYTES = 24 * 1024
#: Bytes a sender may have unacknowledged; receivers acknowledge every ACK_EVERY bytes.
TRANSFER_WINDOW = 1024 * 1024
ACK_EVERY = 256 * 1024
_SHA256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
_B64 = Annotated[str, Field(max_length=(CHUNK_BYTES * 4) // 3 + 8)]
_FILE_NAME = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(plain_name)]

#: Every id a peer sends (jobs, requests, uploads, transfers): letters, digits, ``_`` and
#: ``-`` only, so an id can never name a path, even by accident. The worker makes its
#: own file names; ids only key its tables.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_JOB_ID = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
_REQUEST_ID = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
_TEXT = Annotated[str, Field(max_length=4096)]
_LINE = Annotated[str, Field(max_length=2048)]


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1


# -- client → worker ------------------------------------------------------------------------


class Hello(_Msg):
    type: Literal["HELLO"] = "HELLO"
    ticket: Annotated[str, Field(min_length=1, max_length=4096)]


class JobSubmit(_Msg):
    type: Literal["JOB_SUBMIT"] = "JOB_SUBMIT"
    request_id: _REQUEST_ID
    #: A TrainSpec or TrackSpec as JSON; the worker parses and validates it.
    spec: dict[str, Any]


class JobCancel(_Msg):
    """Cancel a job; answered with JOB_STATUS_REPLY (the job as it is after the cancel)."""

    type: Literal["JOB_CANCEL"] = "JOB_CANCEL"
    request_id: _REQUEST_ID
    job_id: _JOB_ID


class JobStop(_Msg):
    """Stop training early and keep the model; answered with JOB_STATUS_REPLY."""

    type: Literal["JOB_STOP"] = "JOB_STOP"
    request_id: _REQUEST_ID
    job_id: _JOB_ID


class JobStatus(_Msg):
    type: Literal["JOB_STATUS"] = "JOB_STATUS"
    request_id: _REQUEST_ID
    job_id: _JOB_ID


class JobList(_Msg):
    """One page of the worker's jobs, newest first."""

    type: Literal["JOB_LIST"] = "JOB_LIST"
    request_id: _REQUEST_ID
    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0, le=10_000_000)


class JobAttach(_Msg):
    """Replay the job's state, progress and the last ``log_lines`` lines, then follow it.

    Answered first with JOB_STATUS_REPLY (the job as it is now: the attach worked),
    then the replayed JOB_PROGRESS; a job the worker doesn't have is answered with
    ERROR ``NO_SUCH_JOB`` carrying the same ``request_id``.
    """

    type: Literal["JOB_ATTACH"] = "JOB_ATTACH"
    request_id: _REQUEST_ID
    job_id: _JOB_ID
    log_lines: int = Field(default=50, ge=0, le=10_000)


class Ping(_Msg):
    type: Literal["PING"] = "PING"
    request_id: _REQUEST_ID
    nonce: Annotated[str, Field(max_length=64)] = ""


class UploadBegin(_Msg):
    """Send a file to the worker's upload folder (``unpack``: a zip to extract there), or
    with ``dest`` into that folder of a writable mount, under its own name (never over
    a file that is there already)."""

    type: Literal["UPLOAD_BEGIN"] = "UPLOAD_BEGIN"
    upload_id: _REQUEST_ID
    name: _FILE_NAME
    size: int = Field(ge=0, le=1 << 40)
    sha256: _SHA256
    unpack: bool = False
    dest: Annotated[str, Field(min_length=1, max_length=4096)] | None = None


class UploadChunk(_Msg):
    type: Literal["UPLOAD_CHUNK"] = "UPLOAD_CHUNK"
    upload_id: _REQUEST_ID
    offset: int = Field(ge=0)
    data: _B64


class UploadEnd(_Msg):
    type: Literal["UPLOAD_END"] = "UPLOAD_END"
    upload_id: _REQUEST_ID


class Download(_Msg):
    """Ask for a file or a folder (every file under it) inside the worker's mounts."""

    type: Literal["DOWNLOAD"] = "DOWNLOAD"
    request_id: _REQUEST_ID
    path: Annotated[str, Field(min_length=1, max_length=4096)]


class LaneOpen(_Msg):
    """Ask for a lane for bulk bytes; answered with LANE_OFFER or ERROR ``UNAVAILABLE``.

    ``via``: ``direct`` (TLS straight to the worker), ``relay`` (through the server,
    for a client that can't reach the worker; the worker's half waits there first), or
    ``webrtc`` (a second data channel on this channel's WebRTC connection).
    """

    type: Literal["LANE_OPEN"] = "LANE_OPEN"
    request_id: _REQUEST_ID
    via: Literal["direct", "relay", "webrtc"] = "direct"


class TransferResume(_Msg):
    """Go on with a transfer after its lane dropped.

    For a download: send again from ``offset`` (of all its files together), over the
    lane when ``lane`` is true, else as DOWNLOAD_CHUNK on this channel. For an upload:
    answered with UPLOAD_ACK saying how many bytes the worker holds.
    """

    type: Literal["TRANSFER_RESUME"] = "TRANSFER_RESUME"
    transfer_id: _REQUEST_ID
    offset: int = Field(default=0, ge=0)
    lane: bool = False


class DownloadAck(_Msg):
    """Bytes of a download the client holds. In-channel: within the window. Over a
    lane: ``0`` says "ready for frames", the download's total says "all arrived"
    (the worker keeps the download open until then, so it can resume)."""

    type: Literal["DOWNLOAD_ACK"] = "DOWNLOAD_ACK"
    transfer_id: _REQUEST_ID
    received: int = Field(ge=0)


class FsMounts(_Msg):
    """The worker's mounts (label, path, free space)."""

    type: Literal["FS_MOUNTS"] = "FS_MOUNTS"
    request_id: _REQUEST_ID


class FsList(_Msg):
    """One page of a folder inside the mounts: folders first, then files."""

    type: Literal["FS_LIST"] = "FS_LIST"
    request_id: _REQUEST_ID
    path: Annotated[str, Field(min_length=1, max_length=4096)]
    offset: int = Field(default=0, ge=0, le=10_000_000)
    limit: int = Field(default=200, ge=1, le=500)
    pattern: Annotated[str, Field(max_length=255)] | None = None
    dirs_only: bool = False


class FsStat(_Msg):
    type: Literal["FS_STAT"] = "FS_STAT"
    request_id: _REQUEST_ID
    path: Annotated[str, Field(min_length=1, max_length=4096)]


class FsFind(_Msg):
    """Files named like ``query`` (a name or a glob) across the mounts, best first."""

    type: Literal["FS_FIND"] = "FS_FIND"
    request_id: _REQUEST_ID
    query: Annotated[str, Field(min_length=1, max_length=255)]
    under: Annotated[str, Field(max_length=4096)] | None = None
    limit: int = Field(default=50, ge=1, le=100)


ClientMessage = Annotated[
    FsMounts
    | FsList
    | FsStat
    | FsFind
    | Hello
    | JobSubmit
    | JobCancel
    | JobStop
    | JobStatus
    | JobList
    | JobAttach
    | Ping
    | UploadBegin
    | UploadChunk
    | UploadEnd
    | Download
    | DownloadAck
    | LaneOpen
    | TransferResume,
    Field(discriminator="type"),
]


# -- worker → client ------------------------------------------------------------------------


class Welcome(_Msg):
    type: Literal["WELCOME"] = "WELCOME"
    worker_id: str
    worker_name: str
    user: str


class ProblemView(BaseModel):
    """One reason a job was rejected: the field, the offending path or value, a code, a sentence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: _TEXT
    path: Annotated[str, Field(max_length=4096)] | None = None
    code: Annotated[str, Field(max_length=64)]
    message: _TEXT


class JobAccepted(_Msg):
    type: Literal["JOB_ACCEPTED"] = "JOB_ACCEPTED"
    request_id: _REQUEST_ID
    job_id: _JOB_ID
    state: str


class JobRejected(_Msg):
    type: Literal["JOB_REJECTED"] = "JOB_REJECTED"
    request_id: _REQUEST_ID
    job_id: _JOB_ID | None = None
    errors: list[ProblemView] = Field(max_length=100)


class JobProgress(_Msg):
    """Something happened in a running job: a state change, progress, or log lines."""

    type: Literal["JOB_PROGRESS"] = "JOB_PROGRESS"
    job_id: _JOB_ID
    state: str | None = None
    progress: TrainProgress | TrackProgress | None = None
    lines: list[_LINE] = Field(default_factory=list, max_length=MAX_LOG_LINES)
    #: True while an attach is replaying what happened before it.
    replay: bool = False
    #: A queued job's place in the line for a slot on its worker (1: next).
    queue_position: int | None = Field(default=None, ge=1, le=1_000_000)


class JobComplete(_Msg):
    type: Literal["JOB_COMPLETE"] = "JOB_COMPLETE"
    job_id: _JOB_ID
    outputs: list[Annotated[str, Field(max_length=4096)]] = Field(max_length=64)
    stopped_early: bool = False
    #: Seconds from the job's start to its end.
    elapsed_s: float | None = None
    #: What each output holds: epochs, best validation loss, evaluation metrics, frames.
    results: list[StepResult] = Field(default_factory=list, max_length=64)


class JobFailed(_Msg):
    type: Literal["JOB_FAILED"] = "JOB_FAILED"
    job_id: _JOB_ID
    #: FAILED, or CANCELLED when someone cancelled it.
    state: Literal["FAILED", "CANCELLED"] = "FAILED"
    exit_code: int | None = None
    elapsed_s: float | None = None
    reason: _TEXT = ""
    log_tail: list[_LINE] = Field(default_factory=list, max_length=MAX_LOG_LINES)


class JobSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: _JOB_ID
    kind: str
    state: str
    created_at: float
    updated_at: float
    reason: _TEXT | None = None
    exit_code: int | None = None
    outputs: list[str] = Field(default_factory=list, max_length=64)
    progress: TrainProgress | TrackProgress | None = None
    stopped_early: bool = False
    owner: Annotated[str, Field(max_length=64)] | None = None
    #: What the job was asked to do (config paths, data path, ...), for listings.
    summary: _TEXT = ""


class JobStatusReply(_Msg):
    """The answer to JOB_STATUS, JOB_CANCEL, JOB_STOP and JOB_ATTACH."""

    type: Literal["JOB_STATUS_REPLY"] = "JOB_STATUS_REPLY"
    request_id: _REQUEST_ID
    job: JobSummary


class JobListReply(_Msg):
    """A page of jobs. A page may hold fewer than asked (it must fit one message);
    ``next_offset`` is where the next page starts, None after the last job."""

    type: Literal["JOB_LIST_REPLY"] = "JOB_LIST_REPLY"
    request_id: _REQUEST_ID
    jobs: list[JobSummary] = Field(max_length=200)
    offset: int = Field(default=0, ge=0)
    next_offset: int | None = Field(default=None, ge=0)


class Pong(_Msg):
    type: Literal["PONG"] = "PONG"
    request_id: _REQUEST_ID
    nonce: Annotated[str, Field(max_length=64)] = ""


class UploadAck(_Msg):
    type: Literal["UPLOAD_ACK"] = "UPLOAD_ACK"
    upload_id: _REQUEST_ID
    received: int = Field(ge=0)


class UploadDone(_Msg):
    """Where the upload landed; ``files`` lists what an unpacked zip held."""

    type: Literal["UPLOAD_DONE"] = "UPLOAD_DONE"
    upload_id: _REQUEST_ID
    path: Annotated[str, Field(max_length=4096)]
    files: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=1000
    )


class RemoteFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Relative to the folder asked for (the file's own name for a single file).
    path: Annotated[str, Field(min_length=1, max_length=4096)]
    size: int = Field(ge=0)
    sha256: _SHA256


class DownloadBegin(_Msg):
    type: Literal["DOWNLOAD_BEGIN"] = "DOWNLOAD_BEGIN"
    request_id: _REQUEST_ID
    transfer_id: _REQUEST_ID
    name: _FILE_NAME
    #: True when the path asked for is a folder: ``files`` are relative to it and
    #: arrive as a folder called ``name``; otherwise ``files`` is the one file itself.
    folder: bool = False
    files: list[RemoteFile] = Field(max_length=1000)


class LaneOffer(_Msg):
    """Where the worker takes a lane, and the ``token`` that claims it.

    ``direct``: TLS to one of ``addresses`` ("host:port"), whose certificate has
    SHA-256 ``fingerprint``. The offer travels over this authenticated channel, so a
    client that checks the fingerprint before saying the token talks to this worker
    and nobody else (as WebRTC checks its DTLS fingerprint from the signaling).
    ``relay``: the worker's half waits at the server's ``/v1/lane`` for that token.
    ``webrtc``: the worker takes the next bulk data channel the client opens on this
    channel's connection (already authenticated: no token).
    """

    type: Literal["LANE_OFFER"] = "LANE_OFFER"
    request_id: _REQUEST_ID
    via: Literal["direct", "relay", "webrtc"] = "direct"
    addresses: list[Annotated[str, Field(min_length=3, max_length=80)]] = Field(
        default_factory=list, max_length=16
    )
    fingerprint: _SHA256 | None = None
    token: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None

    @model_validator(mode="after")
    def _says_where_and_how(self) -> LaneOffer:
        if self.via == "direct" and (not self.addresses or self.fingerprint is None):
            raise ValueError("a direct lane offer needs addresses and a fingerprint")
        if self.via != "webrtc" and self.token is None:
            raise ValueError(f"a {self.via} lane offer needs a token")
        return self


class DownloadChunk(_Msg):
    type: Literal["DOWNLOAD_CHUNK"] = "DOWNLOAD_CHUNK"
    transfer_id: _REQUEST_ID
    file_index: int = Field(ge=0, lt=1000)
    offset: int = Field(ge=0)
    data: _B64


class DownloadEnd(_Msg):
    type: Literal["DOWNLOAD_END"] = "DOWNLOAD_END"
    transfer_id: _REQUEST_ID


class FsMount(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: Annotated[str, Field(max_length=64)]
    path: Annotated[str, Field(max_length=4096)]
    read_only: bool
    free_bytes: int | None = None
    total_bytes: int | None = None


class FsEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(max_length=1024)]
    kind: Literal["dir", "file", "other"]
    size: int | None = None
    modified: float
    #: Full path; left out of folder listings (it is the folder's path plus the name).
    path: Annotated[str, Field(max_length=4096)] | None = None


class FsMatch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    entry: FsEntry
    #: 0 exact name, 1 same extension, 2 a close name, 3 a glob match.
    rank: int = Field(ge=0, le=3)
    score: float


class FsMountsReply(_Msg):
    type: Literal["FS_MOUNTS_REPLY"] = "FS_MOUNTS_REPLY"
    request_id: _REQUEST_ID
    mounts: list[FsMount] = Field(max_length=64)


class FsListReply(_Msg):
    type: Literal["FS_LIST_REPLY"] = "FS_LIST_REPLY"
    request_id: _REQUEST_ID
    path: Annotated[str, Field(max_length=4096)]
    entries: list[FsEntry] = Field(max_length=500)
    total: int = Field(ge=0)
    offset: int = Field(ge=0)


class FsStatReply(_Msg):
    type: Literal["FS_STAT_REPLY"] = "FS_STAT_REPLY"
    request_id: _REQUEST_ID
    entry: FsEntry


class FsFindReply(_Msg):
    type: Literal["FS_FIND_REPLY"] = "FS_FIND_REPLY"
    request_id: _REQUEST_ID
    matches: list[FsMatch] = Field(max_length=100)
    scanned: int = Field(ge=0)
    #: Why the search stopped early ("time", "entries", "results"), if it did.
    truncated: Annotated[str, Field(max_length=32)] | None = None


class Keepalive(_Msg):
    """Sent by the worker when a channel has been quiet, so long jobs never time out."""

    type: Literal["KEEPALIVE"] = "KEEPALIVE"


class Error(_Msg):
    """A refusal. It echoes the ``request_id`` of the request it answers; only an ERROR
    for a message the worker could not read at all (no valid ``request_id`` in it)
    has none."""

    type: Literal["ERROR"] = "ERROR"
    code: Annotated[str, Field(max_length=64)]
    message: _TEXT
    job_id: _JOB_ID | None = None
    request_id: _REQUEST_ID | None = None
    #: The upload or download this error ends, if any.
    transfer_id: _REQUEST_ID | None = None


WorkerMessage = Annotated[
    FsMountsReply
    | FsListReply
    | FsStatReply
    | FsFindReply
    | Welcome
    | JobAccepted
    | JobRejected
    | JobProgress
    | JobComplete
    | JobFailed
    | JobStatusReply
    | JobListReply
    | Pong
    | Keepalive
    | UploadAck
    | UploadDone
    | DownloadBegin
    | DownloadChunk
    | DownloadEnd
    | LaneOffer
    | Error,
    Field(discriminator="type"),
]

_CLIENT: TypeAdapter[Any] = TypeAdapter(ClientMessage)
_WORKER: TypeAdapter[Any] = TypeAdapter(WorkerMessage)


def _load(data: str | bytes) -> dict[str, Any]:
    return load_object(
        data, max_bytes=MAX_JOB_MESSAGE_BYTES, version=JOB_PROTOCOL_VERSION, name="job protocol"
    )


def decode_client(data: str | bytes) -> Any:
    """A message a client sent, typed; raises ProtocolError."""
    return validate(_CLIENT, _load(data))


def decode_worker(data: str | bytes) -> Any:
    """A message a worker sent, typed; raises ProtocolError."""
    return validate(_WORKER, _load(data))


def _peek(data: str | bytes, field: str) -> Any:
    try:
        return _load(data).get(field)
    except ProtocolError:
        return None


def request_id_of(data: str | bytes) -> str | None:
    """The ``request_id`` a client message that failed to decode still carries, if it is
    a well-formed id, so the ERROR refusing it can name the request it refuses."""
    value = _peek(data, "request_id")
    if isinstance(value, str) and re.fullmatch(ID_PATTERN, value):
        return value
    return None


def type_of(data: str | bytes) -> str | None:
    """The ``type`` a message that failed to decode claims, if it is readable JSON."""
    value = _peek(data, "type")
    return value if isinstance(value, str) else None


def encode(message: BaseModel) -> str:
    text = message.model_dump_json()
    if len(text.encode("utf-8")) > MAX_JOB_MESSAGE_BYTES:
        raise ValueError(f"{type(message).__name__} is over {MAX_JOB_MESSAGE_BYTES} bytes")
    return text


def fits(message: BaseModel) -> bool:
    """True if ``message`` encodes within :data:`MAX_JOB_MESSAGE_BYTES`."""
    try:
        encode(message)
    except ValueError:
        return False
    return True


def clip_lines(lines: list[str], budget: int = MAX_JOB_MESSAGE_BYTES // 2) -> list[str]:
    """The last lines whose JSON encoding fits in ``budget`` bytes, each cut to 2,000
    characters."""
    kept: list[str] = []
    used = 0
    for line in reversed(lines[-MAX_LOG_LINES:]):
        line = line[:2000]
        # What the line costs once JSON-encoded: escapes (control characters, quotes,
        # backslashes) take up to six bytes each.
        cost = len(json.dumps(line, ensure_ascii=False).encode("utf-8")) + 1
        if used + cost > budget:
            break
        kept.append(line)
        used += cost
    kept.reverse()
    return kept


def chunk_lines(lines: list[str], budget: int = MAX_JOB_MESSAGE_BYTES // 2) -> list[list[str]]:
    """All of ``lines``, in order, split into chunks that each fit one message (at most
    ``MAX_LOG_LINES`` lines and ``budget`` bytes once JSON-encoded; each line cut to
    2,000 characters)."""
    chunks: list[list[str]] = []
    current: list[str] = []
    used = 0
    for line in lines:
        line = line[:2000]
        cost = len(json.dumps(line, ensure_ascii=False).encode("utf-8")) + 1
        if current and (used + cost > budget or len(current) >= MAX_LOG_LINES):
            chunks.append(current)
            current, used = [], 0
        current.append(line)
        used += cost
    if current:
        chunks.append(current)
    return chunks
