"""The job protocol's session objects, driven against each other with no channel.

A client session and a worker session pass their output to each other by hand;
a small worker answers from a table of jobs. Time is a number the test moves.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.session import (
    REPLIES,
    Answered,
    BadMessage,
    ClientSession,
    HelloReceived,
    InvalidState,
    JobUpdate,
    Refused,
    RequestReceived,
    State,
    StrayError,
    TransferUpdate,
    Welcomed,
    WorkerSession,
)

SHA = "0" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _summary(job_id: str) -> p.JobSummary:
    return p.JobSummary(job_id=job_id, kind="train", state="RUNNING", created_at=0, updated_at=0)


class Pair:
    """A client and a worker session, and the worker's jobs."""

    def __init__(self, *, open_: bool = True) -> None:
        self.clock = Clock()
        self.client = ClientSession(idle_timeout=60, clock=self.clock)
        self.worker = WorkerSession(
            worker_id="w-1", worker_name="lab", keepalive_interval=30, clock=self.clock
        )
        self.jobs = {"real-job": _summary("real-job")}
        #: Requests the worker holds back (to answer out of order).
        self.held: list[Any] = []
        self.hold = False
        if open_:
            self.client.hello("ticket")
            assert self.to_worker() == [HelloReceived("ticket")]
            self.worker.accept("alice")
            assert [type(e) for e in self.to_client()] == [Welcomed]

    def to_worker(self) -> list[Any]:
        """Deliver the client's output; return the worker's events."""
        for text in self.client.data_to_send():
            self.worker.receive_data(text)
        return self.worker.events_received()

    def to_client(self) -> list[Any]:
        for text in self.worker.data_to_send():
            self.client.receive_data(text)
        return self.client.events_received()

    def serve(self) -> list[Any]:
        """The worker answers what arrived; returns the client's events."""
        for event in self.to_worker():
            assert isinstance(event, RequestReceived)
            if self.hold:
                self.held.append(event.message)
            else:
                self.answer(event.message)
        return self.to_client()

    def answer(self, message: Any) -> None:
        if isinstance(message, p.JobStatus | p.JobAttach):
            job = self.jobs.get(message.job_id)
            if job is None:
                self.worker.fail(message, "NO_SUCH_JOB", f"no job {message.job_id!r}")
            else:
                self.worker.answer(
                    message, p.JobStatusReply(request_id=message.request_id, job=job)
                )
        elif isinstance(message, p.JobList):
            reply = p.JobListReply(request_id=message.request_id, jobs=list(self.jobs.values()))
            self.worker.answer(message, reply)
        else:
            raise AssertionError(message)


# -- handshake --------------------------------------------------------------------------------


def test_handshake_opens_both_sides() -> None:
    pair = Pair()
    assert pair.client.state is State.OPEN and pair.worker.state is State.OPEN
    assert pair.client.welcome == p.Welcome(worker_id="w-1", worker_name="lab", user="alice")
    assert pair.worker.user == "alice"


def test_no_request_before_welcome() -> None:
    pair = Pair(open_=False)
    with pytest.raises(InvalidState):
        pair.client.request(p.Ping(request_id="r"))
    pair.client.hello("ticket")
    with pytest.raises(InvalidState):
        pair.client.request(p.Ping(request_id="r"))
    with pytest.raises(InvalidState):
        pair.client.hello("again")
    with pytest.raises(InvalidState):
        pair.worker.send(p.Keepalive())


def test_worker_refuses_anything_before_hello() -> None:
    pair = Pair(open_=False)
    pair.worker.receive_data(p.encode(p.JobList(request_id="r")))
    assert pair.worker.state is State.CLOSED
    [refusal] = [json.loads(t) for t in pair.worker.data_to_send()]
    assert (refusal["type"], refusal["code"]) == ("ERROR", "UNAUTHORIZED")
    # Nothing more is read or sent once closed.
    pair.worker.receive_data(p.encode(p.Hello(ticket="late")))
    assert pair.worker.events_received() == [] and pair.worker.data_to_send() == []


def test_before_hello_other_types_are_unauthorized_even_when_invalid() -> None:
    for text, code in (
        (json.dumps({"type": "JOB_LIST", "limit": 10**9}), "UNAUTHORIZED"),
        (json.dumps({"type": "X" * 40_000}), "UNAUTHORIZED"),
        (json.dumps({"type": "HELLO", "ticket": ""}), "INVALID_MESSAGE"),
        ("not json", "MALFORMED"),
    ):
        worker = WorkerSession(worker_id="w", worker_name="n")
        worker.receive_data(text)
        [refusal] = [json.loads(t) for t in worker.data_to_send()]
        assert refusal["code"] == code, text
        assert worker.state is State.CLOSED


def test_an_unreadable_message_is_answered_with_a_short_echo() -> None:
    pair = Pair()
    pair.worker.receive_data(json.dumps({"type": "X" * 40_000}))
    [error] = [json.loads(t) for t in pair.worker.data_to_send()]
    assert error["code"] == "UNKNOWN_TYPE" and len(error["message"]) < 600
    assert pair.worker.state is State.OPEN


def test_a_refused_ticket_reaches_the_client_as_refused() -> None:
    pair = Pair(open_=False)
    pair.client.hello("forged")
    assert pair.to_worker() == [HelloReceived("forged")]
    with pytest.raises(InvalidState):
        pair.worker.receive_data(p.encode(p.JobList(request_id="r")))  # check the ticket first
    pair.worker.refuse("UNAUTHORIZED", "bad ticket")
    [event] = pair.to_client()
    assert isinstance(event, Refused) and event.code == "UNAUTHORIZED"
    assert event.error is not None and "bad ticket" in event.message
    assert pair.client.state is State.CLOSED and pair.worker.state is State.CLOSED


def test_a_broken_handshake_is_refused_without_a_worker_error() -> None:
    pair = Pair(open_=False)
    pair.client.hello("t")
    pair.client.receive_data(p.encode(p.Keepalive()))
    [event] = pair.client.events_received()
    assert isinstance(event, Refused) and event.error is None
    assert "expected WELCOME" in event.message


def test_hello_timeout_refuses() -> None:
    pair = Pair(open_=False)
    assert pair.worker.hello_deadline == pair.clock.now + 10
    pair.worker.hello_timeout()
    [refusal] = [json.loads(t) for t in pair.worker.data_to_send()]
    assert refusal["code"] == "UNAUTHORIZED" and pair.worker.state is State.CLOSED


# -- replies by request id ----------------------------------------------------------------------


def test_attach_to_an_unknown_job_then_status_of_a_real_one() -> None:
    pair = Pair()
    pair.client.request(p.JobAttach(request_id="attach", job_id="nope"))
    pair.client.request(p.JobStatus(request_id="status", job_id="real-job"))
    answers = {e.request_id: e.reply for e in pair.serve() if isinstance(e, Answered)}
    assert isinstance(answers["attach"], p.Error) and answers["attach"].code == "NO_SUCH_JOB"
    assert answers["attach"].request_id == "attach"
    assert isinstance(answers["status"], p.JobStatusReply)
    assert answers["status"].job.job_id == "real-job"


def test_replies_out_of_order_reach_their_requests() -> None:
    pair = Pair()
    pair.hold = True
    for index in range(3):
        pair.client.request(p.JobStatus(request_id=f"r{index}", job_id="real-job"))
    pair.client.request(p.JobList(request_id="list"))
    pair.serve()
    for message in reversed(pair.held):
        pair.answer(message)
    events = pair.to_client()
    assert [e.request_id for e in events] == ["list", "r2", "r1", "r0"]
    assert isinstance(events[0].reply, p.JobListReply)


def test_every_request_type_has_a_request_id_and_its_reply_echoes_it() -> None:
    for request, replies in REPLIES.items():
        assert "request_id" in request.model_fields, request
        for reply in (*replies, p.Error):
            assert "request_id" in reply.model_fields, reply


def test_a_reply_for_no_open_request_is_dropped() -> None:
    pair = Pair()
    pair.worker.send(p.Pong(request_id="never-asked"))
    assert pair.to_client() == []


def test_a_reply_of_the_wrong_type_fails_its_request() -> None:
    pair = Pair()
    pair.client.request(p.Ping(request_id="r"))
    pair.to_worker()
    pair.worker.data_to_send()  # the worker's own PONG, replaced by a wrong reply below
    pair.worker.send(p.JobListReply(request_id="r", jobs=[]))
    bad, answered = pair.to_client()
    assert isinstance(bad, BadMessage) and bad.error.code == "UNEXPECTED_REPLY"
    assert isinstance(answered, Answered) and answered.reply.code == "UNEXPECTED_REPLY"


def test_an_error_for_no_request_is_stray_and_invalid_messages_are_reported() -> None:
    pair = Pair()
    pair.worker.send(p.Error(code="MESSAGE_TOO_LARGE", message="too big"))
    [stray] = pair.to_client()
    assert isinstance(stray, StrayError) and stray.error.code == "MESSAGE_TOO_LARGE"
    pair.client.receive_data('{"type": "JOB_STATUS_REPLY"}')
    [bad] = pair.client.events_received()
    assert isinstance(bad, BadMessage) and bad.error.code == "INVALID_MESSAGE"
    assert pair.client.state is State.OPEN


def test_a_given_up_request_drops_its_late_reply() -> None:
    pair = Pair()
    pair.client.request(p.JobStatus(request_id="r", job_id="real-job"))
    pair.client.forget("r")
    assert pair.serve() == []


def test_the_same_request_id_twice_is_refused_and_non_requests_too() -> None:
    pair = Pair()
    pair.client.request(p.Ping(request_id="r"))
    with pytest.raises(ValueError, match="already waiting"):
        pair.client.request(p.Ping(request_id="r"))
    with pytest.raises(ValueError, match="not a request"):
        pair.client.request(p.UploadEnd(upload_id="u"))
    with pytest.raises(ValueError, match="not a transfer message"):
        pair.client.send(p.Ping(request_id="x"))


def test_worker_answers_ping_and_a_second_hello_itself() -> None:
    pair = Pair()
    pair.client.request(p.Ping(request_id="p1", nonce="n"))
    assert pair.to_worker() == []
    [answered] = pair.to_client()
    assert answered == Answered("p1", p.Pong(request_id="p1", nonce="n"))
    pair.worker.receive_data(p.encode(p.Hello(ticket="t")))
    [error] = [json.loads(t) for t in pair.worker.data_to_send()]
    assert error["code"] == "UNEXPECTED" and pair.worker.state is State.OPEN


def test_worker_echoes_the_request_id_of_a_message_it_cannot_read() -> None:
    pair = Pair()
    pair.worker.receive_data(json.dumps({"type": "JOB_LIST", "request_id": "r9", "limit": 10**9}))
    pair.worker.receive_data(json.dumps({"type": "JOB_LIST", "request_id": "../x", "limit": 0}))
    first, second = (json.loads(t) for t in pair.worker.data_to_send())
    assert (first["code"], first["request_id"]) == ("INVALID_MESSAGE", "r9")
    assert second["request_id"] is None


def test_worker_checks_that_a_reply_fits_its_request() -> None:
    pair = Pair()
    status = p.JobStatus(request_id="r", job_id="j")
    with pytest.raises(ValueError, match="does not answer"):
        pair.worker.answer(status, p.Pong(request_id="r"))
    with pytest.raises(ValueError, match="request_id"):
        pair.worker.answer(status, p.JobStatusReply(request_id="other", job=_summary("j")))
    pair.worker.fail(status, "NO_SUCH_JOB", "x" * 10_000)
    [error] = [json.loads(t) for t in pair.worker.data_to_send()]
    assert error["request_id"] == "r" and error["job_id"] == "j"
    assert len(error["message"]) <= 4096


# -- routing ----------------------------------------------------------------------------------


def test_job_events_reach_only_followed_jobs() -> None:
    pair = Pair()
    pair.client.request(p.JobSubmit(request_id="s", spec={}))
    [submit] = pair.to_worker()
    pair.worker.answer(
        submit.message, p.JobAccepted(request_id="s", job_id="new-job", state="QUEUED")
    )
    pair.worker.send(p.JobProgress(job_id="new-job", lines=["a"]))
    pair.worker.send(p.JobProgress(job_id="someone-else", lines=["b"]))
    events = pair.to_client()
    assert [type(e) for e in events] == [Answered, JobUpdate]
    assert events[1].job_id == "new-job"

    # An attach follows its job before the reply comes, so the replay lands.
    pair.client.request(p.JobAttach(request_id="a", job_id="real-job"))
    pair.serve()
    pair.worker.send(p.JobComplete(job_id="real-job", outputs=[]))
    [done] = pair.to_client()
    assert isinstance(done, JobUpdate) and isinstance(done.message, p.JobComplete)
    pair.client.unfollow("real-job")
    pair.worker.send(p.JobProgress(job_id="real-job"))
    assert pair.to_client() == []


def test_transfer_messages_reach_open_transfers_only() -> None:
    pair = Pair()
    pair.client.send(p.UploadBegin(upload_id="u1", name="a.slp", size=1, sha256=SHA))
    assert [type(e.message) for e in pair.to_worker()] == [p.UploadBegin]
    pair.worker.send(p.UploadAck(upload_id="u1", received=0))
    pair.worker.send(p.UploadAck(upload_id="u2", received=0))
    pair.worker.send(p.UploadDone(upload_id="u1", path="/up/a.slp"))
    pair.worker.send(p.UploadAck(upload_id="u1", received=1))  # after the end: dropped
    assert [(e.key, type(e.message)) for e in pair.to_client()] == [
        ("u1", p.UploadAck),
        ("u1", p.UploadDone),
    ]

    pair.client.request(p.Download(request_id="d", path="/data/x"))
    [download] = pair.to_worker()
    begin = p.DownloadBegin(
        request_id="d",
        transfer_id="t1",
        name="x",
        files=[p.RemoteFile(path="x", size=1, sha256=SHA)],
    )
    pair.worker.answer(download.message, begin)
    pair.worker.send(p.DownloadChunk(transfer_id="t1", file_index=0, offset=0, data="YQ=="))
    pair.worker.send(p.Error(code="CHANGED", message="m", request_id="d", transfer_id="t1"))
    pair.worker.send(p.DownloadEnd(transfer_id="t1"))  # the error ended it: dropped
    events = pair.to_client()
    assert isinstance(events[0], Answered) and events[0].reply == begin
    assert [type(e) for e in events[1:]] == [TransferUpdate, TransferUpdate]
    assert isinstance(events[2].message, p.Error) and events[2].key == "t1"


def test_a_failed_download_request_is_answered_by_its_error() -> None:
    pair = Pair()
    pair.client.request(p.Download(request_id="d", path="/etc/passwd"))
    [download] = pair.to_worker()
    pair.worker.fail(download.message, "ACCESS_DENIED", "outside the mounts")
    [answered] = pair.to_client()
    assert isinstance(answered, Answered) and answered.reply.code == "ACCESS_DENIED"


# -- time -------------------------------------------------------------------------------------


def test_worker_keepalive_is_due_after_a_quiet_interval() -> None:
    pair = Pair()
    assert pair.worker.keepalive_at == pair.clock.now + 30
    pair.clock.now += 29
    assert not pair.worker.keepalive()
    pair.worker.send(p.JobProgress(job_id="j"))  # sending resets the interval
    pair.clock.now += 29
    assert not pair.worker.keepalive()
    pair.clock.now += 1
    assert pair.worker.keepalive()
    assert json.loads(pair.worker.data_to_send()[-1])["type"] == "KEEPALIVE"
    assert not pair.worker.keepalive()


def test_client_gives_up_after_idle_timeout_and_a_keepalive_resets_it() -> None:
    pair = Pair()
    pair.clock.now += 59
    assert not pair.client.check_idle()
    pair.clock.now += 30
    assert pair.worker.keepalive()
    assert pair.to_client() == []  # a keepalive is no event, but it counts
    pair.clock.now += 59
    assert not pair.client.check_idle()
    pair.clock.now += 1
    assert pair.client.check_idle()
    assert pair.client.state is State.CLOSED and "giving up" in (pair.client.close_reason or "")
    with pytest.raises(InvalidState):
        pair.client.request(p.Ping(request_id="late"))
