"""The job protocol's conversation rules, with no I/O: one object per side of a channel.

Like a ``websockets`` connection, a session is fed what arrived
(:meth:`~_Session.receive_data`), says what happened (:meth:`~_Session.events_received`)
and what to transmit (:meth:`~_Session.data_to_send`); it never touches a socket,
a task or a timer. The client's and the worker's I/O loops are thin shells around
:class:`ClientSession` and :class:`WorkerSession`.

What the two objects guarantee:

* **HELLO first.** The worker reads nothing but a ``HELLO`` until it has said
  ``WELCOME``; anything else is answered with ``ERROR UNAUTHORIZED`` and the session
  closes. The client sends no request before ``WELCOME``.
* **Replies by id.** Every request carries a ``request_id``; its reply, or the
  ``ERROR`` refusing it, echoes it, and :data:`REPLIES` says which reply types may
  answer which request. The client matches replies by id only, so an error for
  one request can never be read as the answer to another.
* **Routing.** Job events go to the jobs the client follows, transfer messages to
  the transfers it has open; anything else is dropped (a late message for a
  finished transfer) or reported (an ``ERROR`` answering nothing).
* **Keepalive.** Times come from the ``clock`` each session is given (monotonic
  seconds). The worker sends ``KEEPALIVE`` after ``keepalive_interval`` seconds of
  sending nothing; the client gives up after ``idle_timeout`` seconds of receiving
  nothing, which must be longer than the worker's interval.

Both sides live in this one file (a little over 500 lines) because they share the
state rules, :data:`REPLIES` and the events, and are read against each other.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel

from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.codec import ProtocolError

Clock = Callable[[], float]

#: The replies that may answer each request (an ERROR with its ``request_id`` always may).
REPLIES: Final[dict[type[BaseModel], tuple[type[BaseModel], ...]]] = {
    p.JobSubmit: (p.JobAccepted, p.JobRejected),
    p.JobStatus: (p.JobStatusReply,),
    p.JobCancel: (p.JobStatusReply,),
    p.JobStop: (p.JobStatusReply,),
    p.JobAttach: (p.JobStatusReply,),
    p.JobList: (p.JobListReply,),
    p.Ping: (p.Pong,),
    p.Download: (p.DownloadBegin,),
    p.LaneOpen: (p.LaneOffer,),
    p.FsMounts: (p.FsMountsReply,),
    p.FsList: (p.FsListReply,),
    p.FsStat: (p.FsStatReply,),
    p.FsFind: (p.FsFindReply,),
}
#: Client messages that are part of a transfer (keyed by upload or transfer id), not requests.
TRANSFER_MESSAGES: Final = (
    p.UploadBegin,
    p.UploadChunk,
    p.UploadEnd,
    p.DownloadAck,
    p.TransferResume,
)
#: Longest peer text an ERROR quotes when a message could not be read.
ERROR_ECHO_CHARS = 500
DEFAULT_KEEPALIVE_S = 30.0
DEFAULT_IDLE_TIMEOUT_S = 600.0


class State(enum.Enum):
    """Where a session is. It only moves forward: CONNECTING → HANDSHAKE → OPEN → CLOSED,
    and from any state straight to CLOSED."""

    #: Client: HELLO not sent yet (:meth:`ClientSession.hello` moves on).
    #: Worker: waiting for HELLO (receiving one moves on; anything else closes).
    CONNECTING = 1
    #: Client: HELLO sent; WELCOME opens, ERROR (or anything else) closes.
    #: Worker: HELLO received; the ticket is being checked, and
    #: :meth:`WorkerSession.accept` opens or :meth:`WorkerSession.refuse` closes.
    HANDSHAKE = 2
    #: Requests and replies flow. Only here may either side send anything but the handshake.
    OPEN = 3
    #: Nothing more is sent; what arrives is ignored. ``close_reason`` says why.
    CLOSED = 4


class InvalidState(RuntimeError):
    """A session was asked to do what its state forbids (a bug in the caller, not the peer)."""


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Welcomed:
    """The worker said WELCOME: the session is open."""

    welcome: p.Welcome


@dataclass(frozen=True)
class Refused:
    """The handshake failed; the session is closed. ``error`` is the worker's ERROR when it
    refused the channel, None when it broke the handshake (an invalid or unexpected reply)."""

    code: str
    message: str
    error: p.Error | None = None


@dataclass(frozen=True)
class Answered:
    """The reply to the request ``request_id``: one of :data:`REPLIES`, or an ERROR."""

    request_id: str
    reply: Any


@dataclass(frozen=True)
class JobUpdate:
    """JOB_PROGRESS, JOB_COMPLETE or JOB_FAILED for a job the client follows."""

    job_id: str
    message: p.JobProgress | p.JobComplete | p.JobFailed


@dataclass(frozen=True)
class TransferUpdate:
    """A message of an open transfer (``key``: its upload id or transfer id)."""

    key: str
    message: Any


@dataclass(frozen=True)
class StrayError:
    """An ERROR that answers no open request or transfer (e.g. to a message the worker
    could not read)."""

    error: p.Error


@dataclass(frozen=True)
class BadMessage:
    """The peer sent something that is not a valid message; the session goes on."""

    error: ProtocolError


@dataclass(frozen=True)
class HelloReceived:
    """The client said HELLO; check ``ticket`` and then accept or refuse."""

    ticket: str


@dataclass(frozen=True)
class RequestReceived:
    """A valid client message after WELCOME (PING and a second HELLO are answered already)."""

    message: Any


Event = (
    Welcomed
    | Refused
    | Answered
    | JobUpdate
    | TransferUpdate
    | StrayError
    | BadMessage
    | HelloReceived
    | RequestReceived
)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…[cut]"


class _Session:
    """What both sides share: the state, the outgoing messages and the events."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.state = State.CONNECTING
        self.close_reason: str | None = None
        self._events: list[Event] = []
        self._outgoing: list[str] = []

    def events_received(self) -> list[Event]:
        """What happened since the last call, in order."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[str]:
        """Encoded messages to transmit, in order, since the last call."""
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def close(self, reason: str) -> None:
        """Send nothing more (the channel went away, or this side is done)."""
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self.close_reason = reason

    def _queue(self, message: BaseModel) -> None:
        self._outgoing.append(p.encode(message))

    def _require_open(self, what: str) -> None:
        if self.state is not State.OPEN:
            raise InvalidState(f"can't send {what} in state {self.state.name}")


class ClientSession(_Session):
    """The client's side of one channel."""

    def __init__(
        self, *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S, clock: Clock = time.monotonic
    ) -> None:
        super().__init__(clock)
        self.idle_timeout = idle_timeout
        self.last_received = clock()
        self.welcome: p.Welcome | None = None
        #: Open requests and the reply types that may answer each.
        self._pending: dict[str, tuple[type[BaseModel], ...]] = {}
        self._jobs: set[str] = set()
        self._transfers: set[str] = set()

    # -- sending ----------------------------------------------------------------------------

    def hello(self, ticket: str) -> None:
        if self.state is not State.CONNECTING:
            raise InvalidState(f"HELLO was sent already (state {self.state.name})")
        self._queue(p.Hello(ticket=ticket))
        self.state = State.HANDSHAKE

    def request(self, message: Any) -> str:
        """Send a request; returns its ``request_id``, which its reply will carry.

        A JOB_ATTACH also follows its job, so the replay that comes after the
        reply is routed to it.
        """
        self._require_open(type(message).__name__)
        if type(message) not in REPLIES:
            raise ValueError(f"{type(message).__name__} is not a request")
        if message.request_id in self._pending:
            raise ValueError(f"request {message.request_id} is already waiting for its reply")
        self._queue(message)
        self._pending[message.request_id] = REPLIES[type(message)]
        if isinstance(message, p.JobAttach):
            self._jobs.add(message.job_id)
        return str(message.request_id)

    def send(self, message: Any) -> None:
        """Send a transfer message; UPLOAD_BEGIN opens the upload's transfer."""
        self._require_open(type(message).__name__)
        if not isinstance(message, TRANSFER_MESSAGES):
            raise ValueError(f"{type(message).__name__} is not a transfer message")
        self._queue(message)
        if isinstance(message, p.UploadBegin):
            self._transfers.add(message.upload_id)

    def forget(self, request_id: str) -> None:
        """Stop waiting for a reply (a late one is then dropped)."""
        self._pending.pop(request_id, None)

    def unfollow(self, job_id: str) -> None:
        self._jobs.discard(job_id)

    def end_transfer(self, key: str) -> None:
        """The transfer is over for this side; later messages for it are dropped."""
        self._transfers.discard(key)

    # -- time -------------------------------------------------------------------------------

    @property
    def idle_deadline(self) -> float:
        """When the client gives up if nothing arrives before then."""
        return self.last_received + self.idle_timeout

    def check_idle(self) -> bool:
        """Close (and return True) when nothing has arrived for ``idle_timeout`` seconds."""
        if self.state is not State.CLOSED and self.clock() >= self.idle_deadline:
            self.close(f"no message from the worker for {self.idle_timeout:.0f} s; giving up")
        return self.state is State.CLOSED

    # -- receiving --------------------------------------------------------------------------

    def receive_data(self, data: str | bytes) -> None:
        if self.state is State.CONNECTING:
            raise InvalidState("say HELLO before reading from the worker")
        if self.state is State.CLOSED:
            return
        self.last_received = self.clock()
        try:
            message = p.decode_worker(data)
        except ProtocolError as exc:
            if self.state is State.HANDSHAKE:
                self._refused(exc.code, f"worker sent an invalid message: {exc.message}")
            else:
                self._events.append(BadMessage(exc))
            return
        if self.state is State.HANDSHAKE:
            self._handshake(message)
        else:
            self._route(message)

    def _refused(self, code: str, message: str, error: p.Error | None = None) -> None:
        self._events.append(Refused(code, message, error))
        self.close(message)

    def _handshake(self, message: Any) -> None:
        if isinstance(message, p.Welcome):
            self.welcome = message
            self.state = State.OPEN
            self._events.append(Welcomed(message))
        elif isinstance(message, p.Error):
            self._refused(message.code, f"worker refused the channel: {message.message}", message)
        else:
            self._refused("UNEXPECTED", f"expected WELCOME from the worker, got {message.type}")

    def _route(self, message: Any) -> None:
        if isinstance(message, p.JobProgress | p.JobComplete | p.JobFailed):
            if message.job_id in self._jobs:
                self._events.append(JobUpdate(message.job_id, message))
        elif isinstance(message, p.UploadAck | p.UploadDone):
            self._transfer(message.upload_id, message, ends=isinstance(message, p.UploadDone))
        elif isinstance(message, p.DownloadChunk | p.DownloadEnd):
            self._transfer(message.transfer_id, message, ends=isinstance(message, p.DownloadEnd))
        elif isinstance(message, p.Error):
            self._error(message)
        elif isinstance(message, p.Keepalive | p.Welcome):
            pass  # having arrived is all a keepalive does; a second WELCOME changes nothing
        else:
            self._answer(message)

    def _transfer(self, key: str, message: Any, *, ends: bool) -> None:
        if key in self._transfers:
            self._events.append(TransferUpdate(key, message))
            if ends:
                self._transfers.discard(key)

    def _error(self, error: p.Error) -> None:
        if error.transfer_id is not None and error.transfer_id in self._transfers:
            self._transfer(error.transfer_id, error, ends=True)
        elif error.request_id is not None and error.request_id in self._pending:
            del self._pending[error.request_id]
            self._events.append(Answered(error.request_id, error))
        else:
            self._events.append(StrayError(error))

    def _answer(self, reply: Any) -> None:
        request_id = reply.request_id
        allowed = self._pending.pop(request_id, None)
        if allowed is None:
            return  # a reply to a request given up on
        if not isinstance(reply, allowed):
            names = " or ".join(t.model_fields["type"].default for t in allowed)
            problem = ProtocolError("UNEXPECTED_REPLY", f"expected {names}, got {reply.type}")
            self._events.append(BadMessage(problem))
            reply = p.Error(code=problem.code, message=problem.message, request_id=request_id)
        elif isinstance(reply, p.JobAccepted):
            self._jobs.add(reply.job_id)
        elif isinstance(reply, p.DownloadBegin):
            self._transfers.add(reply.transfer_id)
        self._events.append(Answered(request_id, reply))


class WorkerSession(_Session):
    """The worker's side of one channel.

    Checking a ticket stays with the worker: the session reports
    :class:`HelloReceived` and waits in ``HANDSHAKE`` for :meth:`accept` or
    :meth:`refuse`.
    """

    def __init__(
        self,
        *,
        worker_id: str,
        worker_name: str,
        hello_timeout: float = 10.0,
        keepalive_interval: float = DEFAULT_KEEPALIVE_S,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.worker_id = worker_id
        self.worker_name = worker_name
        self.keepalive_interval = keepalive_interval
        now = clock()
        #: When a client that has not said HELLO is refused.
        self.hello_deadline = now + hello_timeout
        self.last_sent = now
        self.user: str | None = None

    # -- the handshake ----------------------------------------------------------------------

    def accept(self, user: str) -> None:
        """The ticket checked out for ``user``: say WELCOME."""
        if self.state is not State.HANDSHAKE:
            raise InvalidState(f"no HELLO to accept (state {self.state.name})")
        self.user = user
        self.state = State.OPEN
        self._send(p.Welcome(worker_id=self.worker_id, worker_name=self.worker_name, user=user))

    def refuse(self, code: str, message: str) -> None:
        """Say ERROR and close (a bad or missing ticket, a worker not ready)."""
        if self.state is State.CLOSED:
            return
        self._send(p.Error(code=code, message=_cut(message, 4000)))
        self.close(message)

    def hello_timeout(self) -> None:
        """The client did not say HELLO by :attr:`hello_deadline`: refuse it."""
        if self.state is State.CONNECTING:
            self.refuse("UNAUTHORIZED", "send HELLO with a ticket first")

    # -- sending ----------------------------------------------------------------------------

    def send(self, message: BaseModel) -> None:
        """Send a message :meth:`answer` doesn't cover: job events, transfer data, a
        download's announcement and its errors (they follow the request, not answer it
        at once)."""
        self._require_open(type(message).__name__)
        self._send(message)

    def answer(self, request: Any, reply: Any) -> None:
        """Send the reply to ``request``; it must be of a type :data:`REPLIES` allows and
        carry the request's id (ValueError otherwise: the pairing is checked here)."""
        self._require_open(type(reply).__name__)
        allowed = (*REPLIES.get(type(request), ()), p.Error)
        if type(reply) not in allowed:
            raise ValueError(f"{type(reply).__name__} does not answer {type(request).__name__}")
        if reply.request_id != request.request_id:
            raise ValueError("a reply must carry the request_id of its request")
        self._send(reply)

    def fail(self, request: Any, code: str, message: str) -> None:
        """Refuse ``request`` with an ERROR naming its request id (and job, if it has one)."""
        self.answer(
            request,
            p.Error(
                code=code,
                message=_cut(message, 4000),
                request_id=getattr(request, "request_id", None),
                job_id=getattr(request, "job_id", None),
            ),
        )

    def _send(self, message: BaseModel) -> None:
        self._queue(message)
        self.last_sent = self.clock()

    # -- time -------------------------------------------------------------------------------

    @property
    def keepalive_at(self) -> float:
        """When a KEEPALIVE is due if nothing else is sent before then."""
        return self.last_sent + self.keepalive_interval

    def keepalive(self) -> bool:
        """Queue a KEEPALIVE (and return True) if nothing was sent for the interval."""
        if self.state is State.OPEN and self.clock() >= self.keepalive_at:
            self._send(p.Keepalive())
            return True
        return False

    # -- receiving --------------------------------------------------------------------------

    def receive_data(self, data: str | bytes) -> None:
        """Take one message from the client.

        Before WELCOME only HELLO is read: a message of any other type, valid or
        not, is refused with ``UNAUTHORIZED`` (a broken HELLO with its decoding
        error), so a peer not yet known learns nothing about other messages. After
        it, a message that can't be read is answered with ERROR (quoting at most
        :data:`ERROR_ECHO_CHARS` of it, and its request id if one can be found),
        PING with PONG and a second HELLO with ERROR; everything else becomes a
        :class:`RequestReceived`.
        """
        if self.state is State.CLOSED:
            return
        if self.state is State.HANDSHAKE:
            raise InvalidState("accept or refuse the HELLO before reading more")
        try:
            message = p.decode_client(data)
        except ProtocolError as exc:
            if self.state is State.CONNECTING and p.type_of(data) not in (None, "HELLO"):
                self.refuse("UNAUTHORIZED", "send HELLO with a ticket before anything else")
            elif self.state is State.CONNECTING:
                self.refuse(exc.code, _cut(exc.message, ERROR_ECHO_CHARS))
            else:
                self._send(
                    p.Error(
                        code=exc.code,
                        message=_cut(exc.message, ERROR_ECHO_CHARS),
                        request_id=p.request_id_of(data),
                    )
                )
            return
        if self.state is State.CONNECTING:
            if isinstance(message, p.Hello):
                self.state = State.HANDSHAKE
                self._events.append(HelloReceived(message.ticket))
            else:
                self.refuse("UNAUTHORIZED", "send HELLO with a ticket before anything else")
        elif isinstance(message, p.Ping):
            self.answer(message, p.Pong(request_id=message.request_id, nonce=message.nonce))
        elif isinstance(message, p.Hello):
            self._send(p.Error(code="UNEXPECTED", message="HELLO is not expected"))
        else:
            self._events.append(RequestReceived(message))
