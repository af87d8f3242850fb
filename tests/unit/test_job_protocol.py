"""The job protocol: typed messages in and out, every way a message is refused, log clipping."""

from __future__ import annotations

import base64
import json
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sleap_rtc.jobs.events import TrackProgress, TrainProgress
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.jobs import (
    CHUNK_BYTES,
    JOB_PROTOCOL_VERSION,
    MAX_JOB_MESSAGE_BYTES,
    MAX_LOG_LINES,
    ClientMessage,
    Download,
    DownloadAck,
    DownloadBegin,
    DownloadChunk,
    DownloadEnd,
    Error,
    FsEntry,
    FsFind,
    FsFindReply,
    FsList,
    FsListReply,
    FsMatch,
    FsMount,
    FsMounts,
    FsMountsReply,
    FsStat,
    FsStatReply,
    Hello,
    JobAccepted,
    JobAttach,
    JobCancel,
    JobComplete,
    JobFailed,
    JobList,
    JobListReply,
    JobProgress,
    JobRejected,
    JobStatus,
    JobStatusReply,
    JobStop,
    JobSubmit,
    JobSummary,
    Keepalive,
    Ping,
    Pong,
    ProblemView,
    RemoteFile,
    UploadAck,
    UploadBegin,
    UploadChunk,
    UploadDone,
    UploadEnd,
    Welcome,
    WorkerMessage,
    chunk_lines,
    clip_lines,
    decode_client,
    decode_worker,
    encode,
    request_id_of,
)
from sleap_rtc.protocol.signaling import ProtocolError

#: Every type each union admits, read from the unions so a new message type must be covered.
CLIENT_TYPES: tuple[type[BaseModel], ...] = get_args(get_args(ClientMessage)[0])
WORKER_TYPES: tuple[type[BaseModel], ...] = get_args(get_args(WorkerMessage)[0])
CLIENT_NAMES = sorted(t.model_fields["type"].default for t in CLIENT_TYPES)
WORKER_NAMES = sorted(t.model_fields["type"].default for t in WORKER_TYPES)

SHA = "0123456789abcdef" * 4
CODES = {"MALFORMED", "UNKNOWN_TYPE", "UNSUPPORTED_VERSION", "MESSAGE_TOO_LARGE", "INVALID_MESSAGE"}


def _summary(**overrides: Any) -> JobSummary:
    fields: dict[str, Any] = {
        "job_id": "j-20240101-abc",
        "kind": "train",
        "state": "RUNNING",
        "created_at": 1_700_000_000.25,
        "updated_at": 1_700_000_100.5,
        "reason": None,
        "exit_code": None,
        "outputs": ["models/run-1/best.ckpt"],
        "progress": TrainProgress(epoch=3, total_epochs=10, loss=0.125, val_loss=0.25),
        "stopped_early": False,
        "owner": "alice",
        "summary": "train configs/centroid.yaml on data/fly.slp",
    }
    fields.update(overrides)
    return JobSummary(**fields)


CLIENT_MESSAGES: list[BaseModel] = [
    Hello(ticket="eyJhbGciOiJFZERTQSJ9.e30.sig"),
    JobSubmit(
        request_id="req-1",
        spec={
            "kind": "train",
            "configs": ["configs/centroid.yaml"],
            "data": {"labels": "mounts/data/fly.slp"},
            "mixed": [1, 2.5, None, True, "é😀"],
        },
    ),
    JobSubmit(request_id="r", spec={}),
    JobCancel(request_id="r", job_id="j-20240101-abc"),
    JobStop(request_id="r", job_id="Ab_c-9"),
    JobStatus(request_id="r", job_id="x" * 64),
    JobList(request_id="r"),
    JobList(request_id="r", limit=200),
    JobAttach(request_id="r", job_id="j1"),
    JobAttach(request_id="r", job_id="j1", log_lines=10_000),
    JobAttach(request_id="r", job_id="j1", log_lines=0),
    Ping(request_id="r"),
    Ping(request_id="r", nonce="n-1"),
    UploadBegin(upload_id="u1", name="fly data (v2).slp", size=123_456, sha256=SHA, unpack=True),
    UploadBegin(upload_id="u2", name="a", size=0, sha256=SHA),
    UploadChunk(
        upload_id="u1", offset=CHUNK_BYTES, data=base64.b64encode(b"\x00" * CHUNK_BYTES).decode()
    ),
    UploadEnd(upload_id="u1"),
    Download(request_id="d1", path="mounts/scratch/models/run-1"),
    DownloadAck(transfer_id="t1", received=262_144),
    p.LaneOpen(request_id="r-lane"),
    p.TransferResume(transfer_id="t1", offset=1 << 30, lane=True),
    FsMounts(request_id="m1"),
    FsList(request_id="l1", path="/data/project", offset=200, limit=100, pattern="*.yaml"),
    FsList(request_id="l2", path="/data", dirs_only=True),
    FsStat(request_id="s1", path="/data/project/labels.slp"),
    FsFind(request_id="f1", query="centroid.yaml", under="/data", limit=10),
]

WORKER_MESSAGES: list[BaseModel] = [
    Welcome(worker_id="w-1", worker_name="lab-gpu-1", user="alice"),
    JobAccepted(request_id="req-1", job_id="j1", state="QUEUED"),
    JobRejected(
        request_id="req-1",
        errors=[
            ProblemView(field="epochs", code="range", message="epochs must be at least 1"),
            ProblemView(
                field="data", path="/data/missing.slp", code="missing", message="no such file"
            ),
        ],
    ),
    JobRejected(request_id="r", job_id="j1", errors=[]),
    JobProgress(
        job_id="j1",
        state="RUNNING",
        progress=TrainProgress(
            model_index=2,
            n_models=2,
            model_name="centered_instance",
            epoch=4,
            total_epochs=100,
            batch=17,
            loss=0.03125,
            val_loss=0.0625,
            eta_s=812.5,
            epoch_done=True,
        ),
        lines=["epoch 4/100", "é😀 unicode", ""],
        replay=True,
    ),
    JobProgress(job_id="j1", progress=TrackProgress(n_processed=10, n_total=100, rate=25.5)),
    JobProgress(job_id="j1"),
    JobComplete(job_id="j1", outputs=["models/run-1/best.ckpt"], stopped_early=True),
    JobComplete(job_id="j1", outputs=[]),
    JobFailed(
        job_id="j1",
        state="CANCELLED",
        exit_code=-15,
        reason="cancelled by alice",
        log_tail=["Traceback (most recent call last):", "KeyboardInterrupt"],
    ),
    JobFailed(job_id="j1"),
    JobStatusReply(request_id="r", job=_summary()),
    JobStatusReply(
        request_id="r",
        job=_summary(
            state="FAILED",
            reason="out of memory",
            exit_code=1,
            progress=TrackProgress(n_processed=5),
            owner=None,
        ),
    ),
    JobListReply(
        request_id="r", jobs=[_summary(), _summary(job_id="j2", progress=None, outputs=[])]
    ),
    JobListReply(request_id="r", jobs=[]),
    Pong(request_id="r"),
    Pong(request_id="r", nonce="n-1"),
    Keepalive(),
    UploadAck(upload_id="u1", received=1024),
    UploadDone(upload_id="u1", path="/uploads/fly.slp"),
    UploadDone(upload_id="u1", path="/uploads/bundle", files=["a.slp", "videos/b.mp4"]),
    DownloadBegin(
        request_id="d1",
        transfer_id="t1",
        name="run-1",
        files=[
            RemoteFile(path="best.ckpt", size=10, sha256=SHA),
            RemoteFile(path="logs/train.log", size=0, sha256=SHA),
        ],
    ),
    DownloadChunk(transfer_id="t1", file_index=999, offset=0, data="AAEC"),
    DownloadEnd(transfer_id="t1"),
    p.LaneOffer(
        request_id="r-lane",
        addresses=["10.0.0.5:7420", "[fd00::5]:7420"],
        fingerprint="ab" * 32,
        token="cd" * 32,
    ),
    Error(code="NOT_FOUND", message="no job 'j9'", job_id="j9"),
    Error(code="TRANSFER_FAILED", message="disk full", request_id="r", transfer_id="t"),
    FsMountsReply(
        request_id="m1",
        mounts=[FsMount(label="data", path="/data", read_only=False, free_bytes=5, total_bytes=9)],
    ),
    FsListReply(
        request_id="l1",
        path="/data/project",
        entries=[
            FsEntry(name="configs", kind="dir", modified=1.5),
            FsEntry(name="labels.slp", kind="file", size=12, modified=2.0),
        ],
        total=2,
        offset=0,
    ),
    FsStatReply(
        request_id="s1",
        entry=FsEntry(name="l.slp", kind="file", size=1, modified=0.0, path="/data/l.slp"),
    ),
    FsFindReply(
        request_id="f1",
        matches=[
            FsMatch(
                entry=FsEntry(name="c.yaml", kind="file", size=3, modified=1.0, path="/d/c.yaml"),
                rank=0,
                score=1.0,
            )
        ],
        scanned=42,
        truncated="time",
    ),
]


def _text(message: str | bytes | dict[str, Any]) -> str | bytes:
    return json.dumps(message) if isinstance(message, dict) else message


def _refused(message: str | bytes | dict[str, Any], code: str, *, worker: bool = False) -> str:
    """Decode with the client (or worker) decoder; expect ``code``; return the message."""
    decode = decode_worker if worker else decode_client
    with pytest.raises(ProtocolError) as caught:
        decode(_text(message))
    assert caught.value.code == code, caught.value.message
    assert str(caught.value) == caught.value.message
    return caught.value.message


def _refused_by_both(message: str | bytes | dict[str, Any], code: str) -> str:
    first = _refused(message, code)
    assert _refused(message, code, worker=True) == first
    return first


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("message", CLIENT_MESSAGES, ids=lambda m: type(m).__name__)
def test_client_message_round_trips(message: BaseModel) -> None:
    text = encode(message)
    assert json.loads(text)["v"] == JOB_PROTOCOL_VERSION
    decoded = decode_client(text)
    assert type(decoded) is type(message)
    assert decoded == message
    assert decode_client(text.encode("utf-8")) == message
    assert encode(decoded) == text


@pytest.mark.parametrize("message", WORKER_MESSAGES, ids=lambda m: type(m).__name__)
def test_worker_message_round_trips(message: BaseModel) -> None:
    text = encode(message)
    assert json.loads(text)["v"] == JOB_PROTOCOL_VERSION
    decoded = decode_worker(text)
    assert type(decoded) is type(message)
    assert decoded == message
    assert decode_worker(text.encode("utf-8")) == message
    assert encode(decoded) == text


def test_every_message_type_is_covered() -> None:
    assert len(CLIENT_TYPES) == 19
    assert len(WORKER_TYPES) == 21
    assert {type(m) for m in CLIENT_MESSAGES} == set(CLIENT_TYPES)
    assert {type(m) for m in WORKER_MESSAGES} == set(WORKER_TYPES)


def test_client_and_worker_type_names_do_not_overlap() -> None:
    assert not set(CLIENT_NAMES) & set(WORKER_NAMES)


def test_progress_keeps_its_kind() -> None:
    train = decode_worker(encode(WORKER_MESSAGES[4]))
    track = decode_worker(encode(WORKER_MESSAGES[5]))
    assert isinstance(train.progress, TrainProgress)
    assert isinstance(track.progress, TrackProgress)
    assert track.progress == TrackProgress(n_processed=10, n_total=100, rate=25.5, eta_s=None)


def test_encode_writes_raw_utf8() -> None:
    text = encode(JobProgress(job_id="j", lines=["é😀"]))
    assert '"lines":["é😀"]' in text


def test_version_may_be_left_out() -> None:
    assert decode_client('{"type": "PING", "request_id": "r"}') == Ping(request_id="r", nonce="")
    assert decode_worker('{"type": "KEEPALIVE"}') == Keepalive()


def test_defaults_are_filled_in() -> None:
    assert decode_client('{"type": "JOB_LIST", "request_id": "r"}') == JobList(
        request_id="r", limit=50
    )
    attach = decode_client('{"type": "JOB_ATTACH", "request_id": "r", "job_id": "j1"}')
    assert attach == JobAttach(request_id="r", job_id="j1", log_lines=50)
    progress = decode_worker('{"type": "JOB_PROGRESS", "job_id": "j1"}')
    assert progress == JobProgress(job_id="j1", state=None, progress=None, lines=[], replay=False)
    failed = decode_worker('{"type": "JOB_FAILED", "job_id": "j1"}')
    assert failed == JobFailed(job_id="j1", state="FAILED", exit_code=None, reason="", log_tail=[])


# ---------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    "text",
    ["", "not json", "{", '{"type": "PING"', b"\xff\xfe\xfd{}", b"", "{'type': 'PING'}"],
)
def test_not_json_is_malformed(text: str | bytes) -> None:
    assert _refused_by_both(text, "MALFORMED").startswith("message is not valid JSON: ")


@pytest.mark.parametrize(
    "text", ["[]", '[{"type": "PING", "request_id": "r"}]', '"PING"', "1", "null", "true"]
)
def test_json_that_is_not_an_object_is_malformed(text: str) -> None:
    assert _refused_by_both(text, "MALFORMED") == "message must be a JSON object"


@pytest.mark.parametrize(
    ("text", "constant"),
    [
        ('{"type": "PING", "request_id": "r", "nonce": NaN}', "NaN"),
        ('{"type": "PING", "request_id": "r", "nonce": Infinity}', "Infinity"),
        ('{"type": "PING", "request_id": "r", "nonce": -Infinity}', "-Infinity"),
        ("NaN", "NaN"),
        ('{"type": "JOB_LIST", "request_id": "r", "limit": Infinity}', "Infinity"),
        (
            '{"type": "JOB_PROGRESS", "job_id": "j", "progress": '
            '{"kind": "train", "epoch": 1, "total_epochs": 2, "loss": NaN}}',
            "NaN",
        ),
    ],
)
def test_nan_and_infinity_are_malformed(text: str, constant: str) -> None:
    message = _refused_by_both(text, "MALFORMED")
    assert message == f"message is not valid JSON: {constant} is not allowed"


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5_000 + "]" * 5_000,
        "[" * 24_000 + "]" * 24_000,
        '{"type":"JOB_SUBMIT","request_id":"r","spec":' + '{"a":' * 3_000 + "1" + "}" * 3_000 + "}",
        '{"type":"JOB_PROGRESS","job_id":"j","lines":' + "[" * 5_000 + "]" * 5_000 + "}",
    ],
    ids=["array", "array-at-limit", "spec", "lines"],
)
def test_deeply_nested_json_is_a_protocol_error(text: str) -> None:
    assert len(text.encode()) <= MAX_JOB_MESSAGE_BYTES
    assert _refused_by_both(text, "MALFORMED") == "message is nested too deeply"
    assert _refused(text.encode(), "MALFORMED") == "message is nested too deeply"


def test_moderately_nested_spec_is_accepted() -> None:
    text = '{"type":"JOB_SUBMIT","request_id":"r","spec":' + '{"a":' * 50 + "1" + "}" * 50 + "}"
    message = decode_client(text)
    assert isinstance(message, JobSubmit)
    assert decode_client(encode(message)) == message


# ---------------------------------------------------------------- unknown types and versions


@pytest.mark.parametrize("kind", ["LAUNCH_MISSILES", "ping", "job_submit", "relay", "register"])
def test_unknown_type(kind: str) -> None:
    assert _refused_by_both({"type": kind, "v": 1}, "UNKNOWN_TYPE") == (
        f"unknown message type {kind!r}"
    )


@pytest.mark.parametrize("kind", WORKER_NAMES)
def test_client_decoder_refuses_worker_only_types(kind: str) -> None:
    assert _refused({"type": kind}, "UNKNOWN_TYPE") == f"unknown message type {kind!r}"


@pytest.mark.parametrize("kind", CLIENT_NAMES)
def test_worker_decoder_refuses_client_only_types(kind: str) -> None:
    message = _refused({"type": kind}, "UNKNOWN_TYPE", worker=True)
    assert message == f"unknown message type {kind!r}"


@pytest.mark.parametrize("message", WORKER_MESSAGES[:3], ids=lambda m: type(m).__name__)
def test_client_decoder_refuses_a_real_worker_message(message: BaseModel) -> None:
    _refused(encode(message), "UNKNOWN_TYPE")


@pytest.mark.parametrize("message", CLIENT_MESSAGES[:3], ids=lambda m: type(m).__name__)
def test_worker_decoder_refuses_a_real_client_message(message: BaseModel) -> None:
    _refused(encode(message), "UNKNOWN_TYPE", worker=True)


def test_missing_type() -> None:
    assert _refused_by_both({"v": 1, "nonce": "x"}, "UNKNOWN_TYPE") == ("unknown message type None")


@pytest.mark.parametrize("kind", [None, 1, [], ["PING"], {}, True])
def test_type_of_the_wrong_kind(kind: object) -> None:
    assert _refused_by_both({"type": kind}, "UNKNOWN_TYPE") == f"unknown message type {kind!r}"


@pytest.mark.parametrize("version", [2, 0, -1, "1", None, 1.5, [1], {}])
def test_unsupported_version(version: object) -> None:
    message = _refused_by_both(
        {"type": "PING", "request_id": "r", "v": version}, "UNSUPPORTED_VERSION"
    )
    assert message == (
        f"job protocol version {version!r} is not supported; this side speaks 1. "
        "Upgrade sleap-rtc on the older side."
    )


def test_version_is_checked_before_the_type() -> None:
    _refused_by_both({"type": "LAUNCH_MISSILES", "v": 2}, "UNSUPPORTED_VERSION")
    _refused({"type": "PONG", "request_id": "r", "v": 2}, "UNSUPPORTED_VERSION")


# ---------------------------------------------------------------- sizes


def _padded(total: int, body: str = '{"type":"PING","request_id":"r"}') -> str:
    return body + " " * (total - len(body.encode("utf-8")))


def test_message_at_the_size_limit_is_accepted() -> None:
    text = _padded(MAX_JOB_MESSAGE_BYTES)
    assert len(text.encode()) == MAX_JOB_MESSAGE_BYTES
    assert decode_client(text) == Ping(request_id="r")
    assert decode_client(text.encode()) == Ping(request_id="r")
    worker_text = _padded(MAX_JOB_MESSAGE_BYTES, '{"type":"KEEPALIVE"}')
    assert decode_worker(worker_text) == Keepalive()
    assert decode_worker(worker_text.encode()) == Keepalive()


@pytest.mark.parametrize("as_bytes", [False, True])
def test_message_one_byte_over_the_size_limit(as_bytes: bool) -> None:
    text = _padded(MAX_JOB_MESSAGE_BYTES + 1)
    message = _refused_by_both(text.encode() if as_bytes else text, "MESSAGE_TOO_LARGE")
    assert message == (
        f"message is {MAX_JOB_MESSAGE_BYTES + 1} bytes; the limit is {MAX_JOB_MESSAGE_BYTES}"
    )


def test_size_is_checked_before_parsing() -> None:
    message = _refused_by_both("x" * (MAX_JOB_MESSAGE_BYTES + 1), "MESSAGE_TOO_LARGE")
    assert message.startswith(f"message is {MAX_JOB_MESSAGE_BYTES + 1} bytes")


def test_size_limit_counts_utf8_bytes_of_text() -> None:
    # 2-byte characters: under the limit in characters, over it in bytes.
    text = '{"type":"PING","request_id":"r","nonce":"x"}' + "\u00a0" * 30_000
    assert len(text) < MAX_JOB_MESSAGE_BYTES < len(text.encode("utf-8"))
    message = _refused(text, "MESSAGE_TOO_LARGE")
    assert message.startswith(f"message is {len(text.encode('utf-8'))} bytes")


def test_multibyte_message_exactly_at_the_limit_is_accepted() -> None:
    prefix = '{"type":"JOB_SUBMIT","request_id":"r","spec":{"x":"'
    suffix = '"}}'
    room = MAX_JOB_MESSAGE_BYTES - len(prefix) - len(suffix)
    value = "é" * (room // 2) + "a" * (room % 2)
    text = prefix + value + suffix
    assert len(text.encode("utf-8")) == MAX_JOB_MESSAGE_BYTES
    assert decode_client(text) == JobSubmit(request_id="r", spec={"x": value})
    one_more = prefix + value + "a" + suffix
    _refused(one_more, "MESSAGE_TOO_LARGE")


def _submit_of_size(size: int, char: str = "a") -> JobSubmit:
    """A JobSubmit whose encoding is exactly ``size`` bytes (``char``: 1 or 2 bytes)."""
    empty = len(encode(JobSubmit(request_id="r", spec={"x": ""})).encode())
    room = size - empty
    width = len(char.encode())
    value = char * (room // width) + "a" * (room % width)
    return JobSubmit(request_id="r", spec={"x": value})


def test_encode_accepts_a_message_exactly_at_the_limit() -> None:
    message = _submit_of_size(MAX_JOB_MESSAGE_BYTES)
    text = encode(message)
    assert len(text.encode()) == MAX_JOB_MESSAGE_BYTES
    assert decode_client(text) == message


@pytest.mark.parametrize("char", ["a", "é"])
def test_encode_refuses_a_message_over_the_limit(char: str) -> None:
    message = _submit_of_size(MAX_JOB_MESSAGE_BYTES + 1, char)
    assert len(message.model_dump_json().encode()) == MAX_JOB_MESSAGE_BYTES + 1
    with pytest.raises(ValueError) as caught:
        encode(message)
    assert not isinstance(caught.value, ProtocolError)
    assert str(caught.value) == f"JobSubmit is over {MAX_JOB_MESSAGE_BYTES} bytes"


def test_encode_counts_utf8_bytes() -> None:
    message = JobSubmit(request_id="r", spec={"x": "é" * 30_000})
    assert len(message.model_dump_json()) < MAX_JOB_MESSAGE_BYTES
    with pytest.raises(ValueError, match="over"):
        encode(message)


# ---------------------------------------------------------------- extra fields


@pytest.mark.parametrize(
    ("message", "field", "worker"),
    [
        ({"type": "PING", "request_id": "r", "nonce": "x", "admin": True}, "admin", False),
        ({"type": "HELLO", "ticket": "t", "user": "root"}, "user", False),
        ({"type": "JOB_SUBMIT", "request_id": "r", "spec": {}, "owner": "bob"}, "owner", False),
        ({"type": "JOB_CANCEL", "request_id": "r", "job_id": "j", "force": True}, "force", False),
        ({"type": "JOB_LIST", "request_id": "r", "all_users": True}, "all_users", False),
        ({"type": "KEEPALIVE", "at": 1}, "at", True),
        (
            {"type": "JOB_ACCEPTED", "request_id": "r", "job_id": "j", "state": "Q", "x": 1},
            "x",
            True,
        ),
        (
            {
                "type": "JOB_REJECTED",
                "request_id": "r",
                "errors": [{"field": "f", "code": "c", "message": "m", "hint": "h"}],
            },
            "errors.0.hint",
            True,
        ),
        (
            {
                "type": "JOB_STATUS_REPLY",
                "request_id": "r",
                "job": {**_summary().model_dump(), "secret": "s"},
            },
            "job.secret",
            True,
        ),
        (
            {
                "type": "DOWNLOAD_BEGIN",
                "request_id": "r",
                "transfer_id": "t",
                "name": "n",
                "files": [{"path": "p", "size": 1, "sha256": SHA, "mode": 0o777}],
            },
            "files.0.mode",
            True,
        ),
    ],
)
def test_extra_fields_are_refused(message: dict[str, Any], field: str, worker: bool) -> None:
    assert _refused(message, "INVALID_MESSAGE", worker=worker) == (
        f"{message['type']} message: {field}: Extra inputs are not permitted"
    )


# ---------------------------------------------------------------- identifiers and limits

REQUESTS = [
    "JOB_SUBMIT",
    "JOB_CANCEL",
    "JOB_STOP",
    "JOB_STATUS",
    "JOB_LIST",
    "JOB_ATTACH",
    "PING",
    "DOWNLOAD",
    "FS_MOUNTS",
    "FS_LIST",
    "FS_STAT",
    "FS_FIND",
]


@pytest.mark.parametrize("kind", REQUESTS)
def test_every_request_needs_a_request_id(kind: str) -> None:
    message = next(m for m in CLIENT_MESSAGES if m.model_dump()["type"] == kind)
    fields = message.model_dump()
    del fields["request_id"]
    assert _refused(fields, "INVALID_MESSAGE") == f"{kind} message: request_id: Field required"


@pytest.mark.parametrize(
    "kind", ["JOB_STATUS_REPLY", "JOB_LIST_REPLY", "PONG", "JOB_ACCEPTED", "FS_STAT_REPLY"]
)
def test_every_reply_carries_a_request_id(kind: str) -> None:
    message = next(m for m in WORKER_MESSAGES if m.model_dump()["type"] == kind)
    fields = message.model_dump()
    del fields["request_id"]
    refusal = _refused(fields, "INVALID_MESSAGE", worker=True)
    assert refusal == f"{kind} message: request_id: Field required"


def test_request_id_of_an_unreadable_message() -> None:
    assert request_id_of('{"type": "JOB_LIST", "request_id": "r-1", "limit": 0}') == "r-1"
    for text in ('{"request_id": "../x"}', '{"request_id": 5}', "not json", "[]", '{"v": 9}'):
        assert request_id_of(text) is None


BAD_JOB_IDS = ["../x", "a/b", "a b", " j1", "j1\n", "", "x" * 65, "jöb", "a\\b", "a:b", "$(id)"]


@pytest.mark.parametrize("kind", ["JOB_CANCEL", "JOB_STOP", "JOB_STATUS", "JOB_ATTACH"])
@pytest.mark.parametrize("job_id", BAD_JOB_IDS)
def test_client_messages_refuse_bad_job_ids(kind: str, job_id: str) -> None:
    message = _refused({"type": kind, "request_id": "r", "job_id": job_id}, "INVALID_MESSAGE")
    assert message.startswith(f"{kind} message: job_id: "), message


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "JOB_ACCEPTED", "request_id": "r", "state": "QUEUED"},
        {"type": "JOB_REJECTED", "request_id": "r", "errors": []},
        {"type": "JOB_PROGRESS"},
        {"type": "JOB_COMPLETE", "outputs": []},
        {"type": "JOB_FAILED"},
        {"type": "ERROR", "code": "C", "message": "m"},
    ],
    ids=lambda f: f["type"],
)
@pytest.mark.parametrize("job_id", ["../x", "a/b", "x" * 65, "", "a.b", ".", "..", "a b"])
def test_worker_messages_refuse_bad_job_ids(fields: dict[str, Any], job_id: str) -> None:
    message = _refused({**fields, "job_id": job_id}, "INVALID_MESSAGE", worker=True)
    assert message.startswith(f"{fields['type']} message: job_id: "), message


@pytest.mark.parametrize("job_id", ["j", "j-1", "Ab_c-9", "x" * 64, "20240101T120000-a1b2"])
def test_valid_job_ids_are_accepted(job_id: str) -> None:
    assert decode_client(
        json.dumps({"type": "JOB_STOP", "request_id": "r", "job_id": job_id})
    ) == JobStop(request_id="r", job_id=job_id)
    progress = decode_worker(json.dumps({"type": "JOB_PROGRESS", "job_id": job_id}))
    assert progress == JobProgress(job_id=job_id)


@pytest.mark.parametrize(
    ("message", "where"),
    [
        ({"type": "JOB_LIST", "request_id": "r", "limit": 201}, "limit"),
        ({"type": "JOB_LIST", "request_id": "r", "limit": 0}, "limit"),
        ({"type": "JOB_LIST", "request_id": "r", "limit": -1}, "limit"),
        ({"type": "JOB_LIST", "request_id": "r", "limit": "many"}, "limit"),
        (
            {"type": "JOB_ATTACH", "request_id": "r", "job_id": "j", "log_lines": 10_001},
            "log_lines",
        ),
        ({"type": "JOB_ATTACH", "request_id": "r", "job_id": "j", "log_lines": -1}, "log_lines"),
        ({"type": "JOB_ATTACH", "request_id": "r", "log_lines": 5}, "job_id"),
        ({"type": "HELLO", "ticket": ""}, "ticket"),
        ({"type": "HELLO", "ticket": "t" * 4097}, "ticket"),
        ({"type": "HELLO"}, "ticket"),
        ({"type": "PING", "request_id": "r", "nonce": "n" * 65}, "nonce"),
        ({"type": "JOB_SUBMIT", "request_id": "r"}, "spec"),
        ({"type": "JOB_SUBMIT", "request_id": "r", "spec": ["train"]}, "spec"),
        ({"type": "JOB_SUBMIT", "request_id": "", "spec": {}}, "request_id"),
        ({"type": "JOB_SUBMIT", "request_id": "r" * 65, "spec": {}}, "request_id"),
        (
            {"type": "UPLOAD_BEGIN", "upload_id": "u", "name": "../x", "size": 1, "sha256": SHA},
            "name",
        ),
        (
            {"type": "UPLOAD_BEGIN", "upload_id": "u", "name": ".env", "size": 1, "sha256": SHA},
            "name",
        ),
        (
            {"type": "UPLOAD_BEGIN", "upload_id": "u", "name": "a/b", "size": 1, "sha256": SHA},
            "name",
        ),
        (
            {"type": "UPLOAD_BEGIN", "upload_id": "u", "name": "a", "size": -1, "sha256": SHA},
            "size",
        ),
        (
            {
                "type": "UPLOAD_BEGIN",
                "upload_id": "u",
                "name": "a",
                "size": (1 << 40) + 1,
                "sha256": SHA,
            },
            "size",
        ),
        (
            {
                "type": "UPLOAD_BEGIN",
                "upload_id": "u",
                "name": "a",
                "size": 1,
                "sha256": SHA.upper(),
            },
            "sha256",
        ),
        (
            {"type": "UPLOAD_CHUNK", "upload_id": "u", "offset": -1, "data": ""},
            "offset",
        ),
        (
            {
                "type": "UPLOAD_CHUNK",
                "upload_id": "u",
                "offset": 0,
                "data": "A" * ((CHUNK_BYTES * 4) // 3 + 9),
            },
            "data",
        ),
        ({"type": "DOWNLOAD", "request_id": "r", "path": ""}, "path"),
        ({"type": "DOWNLOAD_ACK", "transfer_id": "t", "received": -1}, "received"),
    ],
)
def test_client_field_limits(message: dict[str, Any], where: str) -> None:
    refusal = _refused(message, "INVALID_MESSAGE")
    assert refusal.startswith(f"{message['type']} message: {where}: "), refusal


def _problems(count: int) -> list[dict[str, Any]]:
    return [{"field": "f", "code": "c", "message": "m"} for _ in range(count)]


def _summaries(count: int) -> list[dict[str, Any]]:
    return [
        {"job_id": f"j{i}", "kind": "train", "state": "QUEUED", "created_at": 0, "updated_at": 0}
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("message", "where"),
    [
        ({"type": "JOB_REJECTED", "request_id": "r", "errors": _problems(101)}, "errors"),
        ({"type": "JOB_REJECTED", "request_id": "r"}, "errors"),
        ({"type": "JOB_PROGRESS", "job_id": "j", "lines": ["l"] * 201}, "lines"),
        ({"type": "JOB_PROGRESS", "job_id": "j", "lines": ["x" * 2049]}, "lines.0"),
        ({"type": "JOB_PROGRESS", "job_id": "j", "lines": "one line"}, "lines"),
        ({"type": "JOB_FAILED", "job_id": "j", "log_tail": ["l"] * 201}, "log_tail"),
        ({"type": "JOB_FAILED", "job_id": "j", "state": "RUNNING"}, "state"),
        ({"type": "JOB_FAILED", "job_id": "j", "reason": "r" * 4097}, "reason"),
        ({"type": "JOB_COMPLETE", "job_id": "j", "outputs": ["o"] * 65}, "outputs"),
        ({"type": "JOB_COMPLETE", "job_id": "j"}, "outputs"),
        ({"type": "JOB_LIST_REPLY", "request_id": "r", "jobs": _summaries(201)}, "jobs"),
        (
            {"type": "UPLOAD_DONE", "upload_id": "u", "path": "p", "files": ["f"] * 1001},
            "files",
        ),
        (
            {"type": "DOWNLOAD_CHUNK", "transfer_id": "t", "file_index": 1000, "offset": 0},
            "file_index",
        ),
        ({"type": "ERROR", "code": "C" * 65, "message": "m"}, "code"),
        ({"type": "WELCOME", "worker_id": "w", "worker_name": "n"}, "user"),
    ],
)
def test_worker_field_limits(message: dict[str, Any], where: str) -> None:
    refusal = _refused(message, "INVALID_MESSAGE", worker=True)
    assert refusal.startswith(f"{message['type']} message: {where}: "), refusal


@pytest.mark.parametrize(
    ("message", "field", "value"),
    [
        ({"type": "JOB_LIST", "request_id": "r", "limit": 200}, "limit", 200),
        ({"type": "JOB_LIST", "request_id": "r", "limit": 1}, "limit", 1),
        (
            {"type": "JOB_ATTACH", "request_id": "r", "job_id": "j", "log_lines": 10_000},
            "log_lines",
            10_000,
        ),
        ({"type": "JOB_ATTACH", "request_id": "r", "job_id": "j", "log_lines": 0}, "log_lines", 0),
    ],
)
def test_client_limits_are_inclusive(message: dict[str, Any], field: str, value: int) -> None:
    assert getattr(decode_client(json.dumps(message)), field) == value


def test_worker_limits_are_inclusive() -> None:
    rejected = decode_worker(
        json.dumps({"type": "JOB_REJECTED", "request_id": "r", "errors": _problems(100)})
    )
    assert len(rejected.errors) == 100
    lines = ["x" * 2048] + ["l"] * (MAX_LOG_LINES - 1)
    progress = decode_worker(json.dumps({"type": "JOB_PROGRESS", "job_id": "j", "lines": lines}))
    assert progress.lines == lines
    complete = decode_worker(
        json.dumps({"type": "JOB_COMPLETE", "job_id": "j", "outputs": ["o"] * 64})
    )
    assert len(complete.outputs) == 64
    listing = decode_worker(
        json.dumps({"type": "JOB_LIST_REPLY", "request_id": "r", "jobs": _summaries(200)})
    )
    assert len(listing.jobs) == 200


# ---------------------------------------------------------------- clip_lines


def test_chunk_lines_keeps_every_line_in_order_in_messages_that_fit() -> None:
    lines = [f"line {i} " + 'é😀"' * (i % 300) for i in range(2500)] + ["z" * 5000]
    chunks = chunk_lines(lines)
    assert [line for chunk in chunks for line in chunk] == [line[:2000] for line in lines]
    for chunk in chunks:
        assert 0 < len(chunk) <= MAX_LOG_LINES
        message = JobProgress(job_id="abc123", lines=chunk, replay=True)
        assert len(encode(message)) <= MAX_JOB_MESSAGE_BYTES
    assert chunk_lines([]) == []


def test_clip_lines_keeps_short_logs_whole() -> None:
    lines = ["epoch 1", "", "epoch 2 é😀"]
    assert clip_lines(lines) == lines
    assert clip_lines([]) == []


def test_clip_lines_does_not_change_its_input() -> None:
    lines = ["x" * 3000] * 300
    before = list(lines)
    clip_lines(lines)
    assert lines == before


def test_clip_lines_keeps_at_most_the_last_max_log_lines() -> None:
    lines = [f"line {i}" for i in range(1000)]
    assert clip_lines(lines) == lines[-MAX_LOG_LINES:]
    assert len(clip_lines(lines)) == MAX_LOG_LINES


def test_clip_lines_cuts_each_line_to_2000_characters() -> None:
    lines = ["a" * 5000, "é" * 2001, "b" * 2000, "c" * 1999]
    assert clip_lines(lines) == ["a" * 2000, "é" * 2000, "b" * 2000, "c" * 1999]


def _json_cost(line: str) -> int:
    return len(json.dumps(line, ensure_ascii=False).encode()) + 1


def test_clip_lines_budget_is_inclusive_and_counts_the_encoded_size() -> None:
    lines = [f"{i:02d}" + "x" * 90 for i in range(20)]  # 92 bytes, 2 quotes, 1 comma = 95
    assert clip_lines(lines, budget=950) == lines[-10:]
    assert clip_lines(lines, budget=949) == lines[-9:]
    assert clip_lines(lines, budget=95) == lines[-1:]
    assert clip_lines(lines, budget=94) == []
    assert clip_lines(lines, budget=0) == []
    escaped = ["\x1b[31m" + '"quoted" \\ back'] * 10
    assert _json_cost(escaped[0]) > len(escaped[0].encode()) + 8
    kept = clip_lines(escaped, budget=200)
    assert sum(_json_cost(line) for line in kept) <= 200


def test_clip_lines_budget_counts_utf8_bytes() -> None:
    lines = ["é" * 46] * 20  # 92 bytes + 8 = 100 each
    assert clip_lines(lines, budget=500) == lines[-5:]
    assert clip_lines(["😀" * 23] * 20, budget=500) == ["😀" * 23] * 5


def test_clip_lines_keeps_only_a_contiguous_tail() -> None:
    # A long line stops the scan; short lines before it are not picked up out of order.
    assert clip_lines(["a", "b" * 100, "c"], budget=20) == ["c"]
    assert clip_lines(["a", "b" * 100, "c", "d"], budget=20) == ["c", "d"]


def test_clip_lines_default_budget_is_half_a_message() -> None:
    lines = ["x" * 2000] * 100
    kept = clip_lines(lines)
    assert len(kept) == (MAX_JOB_MESSAGE_BYTES // 2) // 2008
    assert kept == lines[-len(kept) :]


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.text(max_size=2500), max_size=300),
    budget=st.integers(min_value=0, max_value=MAX_JOB_MESSAGE_BYTES),
)
def test_clip_lines_is_the_longest_tail_within_budget(lines: list[str], budget: int) -> None:
    kept = clip_lines(lines, budget)
    window = [line[:2000] for line in lines[-MAX_LOG_LINES:]]
    assert len(kept) <= MAX_LOG_LINES
    assert kept == (window[-len(kept) :] if kept else [])
    cost = sum(_json_cost(line) for line in kept)
    assert cost <= budget
    if len(kept) < len(window):
        assert cost + _json_cost(window[-len(kept) - 1]) > budget


def test_progress_with_a_clipped_huge_log_fits() -> None:
    log = ["x" * 5000] * 100_000 + ["y" * 3000, "the last line"]
    message = JobProgress(job_id="j" * 64, state="RUNNING" * 10, lines=clip_lines(log), replay=True)
    text = encode(message)
    assert len(text.encode()) <= MAX_JOB_MESSAGE_BYTES
    assert decode_worker(text) == message
    assert message.lines[-2:] == ["y" * 2000, "the last line"]
    assert message.lines[:-2] == ["x" * 2000] * (len(message.lines) - 2)


def test_progress_with_a_clipped_multibyte_log_fits() -> None:
    log = ["😀é" * 3000] * 1000
    message = JobProgress(job_id="j" * 64, lines=clip_lines(log))
    assert len(encode(message).encode()) <= MAX_JOB_MESSAGE_BYTES


def test_progress_with_many_short_lines_fits() -> None:
    message = JobProgress(job_id="j" * 64, lines=clip_lines(["."] * 100_000))
    assert message.lines == ["."] * MAX_LOG_LINES
    assert len(encode(message).encode()) <= MAX_JOB_MESSAGE_BYTES


_PLAIN_TEXT = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs"), exclude_characters='"\\'),
    max_size=3000,
)


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(_PLAIN_TEXT, max_size=250))
def test_progress_with_clipped_plain_text_always_encodes(lines: list[str]) -> None:
    message = JobProgress(
        job_id="j" * 64,
        state="RUNNING",
        progress=TrainProgress(epoch=1, total_epochs=2, loss=0.5),
        lines=clip_lines(lines),
    )
    assert decode_worker(encode(message)) == message


@pytest.mark.parametrize(
    "message",
    [
        JobProgress(
            job_id="j1", lines=clip_lines(["\x1b[32mepoch 1\x1b[0m\r" + "\x1b[2K" * 50] * 500)
        ),
        JobProgress(job_id="j1", lines=clip_lines(["\x00" * 2000] * 100)),
        JobFailed(
            job_id="j" * 64,
            exit_code=1,
            reason="r" * 4000,
            log_tail=clip_lines(['"\\' * 1000] * 100),
        ),
    ],
    ids=["ansi", "nul", "quotes-backslashes-in-failed"],
)
def test_message_with_clipped_escaped_log_encodes(message: BaseModel) -> None:
    assert len(encode(message).encode()) <= MAX_JOB_MESSAGE_BYTES


# ---------------------------------------------------------------- anything in, typed out


def _check_total(data: str | bytes) -> None:
    for decode, types in ((decode_client, CLIENT_TYPES), (decode_worker, WORKER_TYPES)):
        try:
            message = decode(data)
        except ProtocolError as exc:
            assert exc.code in CODES
            assert isinstance(exc.message, str)
            assert str(exc) == exc.message
            continue
        assert isinstance(message, types)
        assert decode(encode(message)) == message


_FAST = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@_FAST
@given(st.text())
def test_any_text_is_a_message_or_a_protocol_error(text: str) -> None:
    _check_total(text)


@_FAST
@given(st.binary())
def test_any_bytes_are_a_message_or_a_protocol_error(data: bytes) -> None:
    _check_total(data)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["j1", "r", "PENDING", "FAILED", "train", "track", SHA, "../x"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_KEYS = st.sampled_from(
    sorted(
        {name for t in (*CLIENT_TYPES, *WORKER_TYPES) for name in t.model_fields}
        | {"kind", "epoch", "total_epochs", "n_processed", "field", "code", "message", "admin"}
    )
)


@_FAST
@given(
    kind=st.sampled_from([*CLIENT_NAMES, *WORKER_NAMES, "ping", "x"]),
    fields=st.dictionaries(_KEYS, _JSON, max_size=6),
)
def test_any_json_object_is_a_message_or_a_protocol_error(
    kind: str, fields: dict[str, Any]
) -> None:
    _check_total(json.dumps({"type": kind, **fields}))
    _check_total(json.dumps({"type": kind, **fields}).encode())


@_FAST
@given(
    job_id=st.text(max_size=70),
    lines=st.lists(st.text(max_size=50), max_size=5),
    progress=st.none() | st.dictionaries(_KEYS, _JSON, max_size=4),
)
def test_any_job_progress_is_a_message_or_a_protocol_error(
    job_id: str, lines: list[str], progress: dict[str, Any] | None
) -> None:
    _check_total(
        json.dumps({"type": "JOB_PROGRESS", "job_id": job_id, "lines": lines, "progress": progress})
    )


@_FAST
@given(st.sampled_from([*CLIENT_MESSAGES, *WORKER_MESSAGES]), st.data())
def test_any_single_field_change_is_a_message_or_a_protocol_error(
    message: BaseModel, data: st.DataObject
) -> None:
    fields = json.loads(encode(message))
    key = data.draw(st.sampled_from(sorted(fields)))
    fields[key] = data.draw(_JSON)
    _check_total(json.dumps(fields))
