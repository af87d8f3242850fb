"""Live events for the dashboard: what changed in a room, in order, with ids to resume from.

Each room keeps its recent events in memory, numbered from 1. An event's id is
``<epoch>-<number>``, the epoch being random per server start. A browser that
reconnects (Server-Sent Events send ``Last-Event-ID`` by themselves) gets every
event after the one it saw, so it misses nothing; when that event is no longer
kept, or the server restarted, it gets ``reset`` and reads the JSON API again.
A page reads its snapshot from the API first: the answer's ``X-Event-Id`` header
says which event the snapshot includes, and the stream starts after it.

An event is encoded once (a job event twice: as its owner reads it and as others
do), however many streams send it: a hundred open dashboards cost a hundred
socket writes per event. Every event of a room wakes each of the room's streams,
which then skip what isn't theirs.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from itertools import islice
from typing import Any, Literal

#: The header of a snapshot's answer naming the newest event it includes.
EVENT_ID_HEADER = "X-Event-Id"

EventName = Literal["worker", "job", "points", "log"]
#: A job as the index names it: (worker id, job id).
JobKey = tuple[str, str]

#: Events kept per room for streams that reconnect.
KEEP_PER_ROOM = 4096
#: Most streams one login session may hold open at once (tabs, reconnects).
MAX_STREAMS_PER_SESSION = 128
#: Most streams the server holds open in all.
MAX_STREAMS = 5000


@dataclass(frozen=True)
class Event:
    seq: int
    name: EventName
    job: JobKey | None
    data: dict[str, Any]
    #: ``data`` as JSON, encoded once.
    text: str

    def text_with(self, **changes: Any) -> str:
        """``data`` with ``changes`` as JSON, encoded once per distinct change (a job as
        its owner reads it differs from how everyone else does)."""
        key = tuple(sorted(changes.items()))
        cached = self._variants.get(key)
        if cached is None:
            cached = self._variants[key] = _encode({**self.data, **changes})
        return cached

    @cached_property
    def _variants(self) -> dict[tuple[tuple[str, Any], ...], str]:
        return {}


def _encode(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), default=str)


class StreamLimit(Exception):
    """Too many streams are open (for this login session or in all)."""


class Reset(Exception):
    """The stream can't go on from where it is: the reader must read a snapshot again."""


@dataclass
class _RoomLog:
    seq: int = 0
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=KEEP_PER_ROOM))
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def wake_all(self) -> None:
        wake, self.wake = self.wake, asyncio.Event()
        wake.set()

    def after(self, seq: int) -> list[Event]:
        """The events after number ``seq``; raises :class:`Reset` if some were dropped."""
        if seq >= self.seq:
            return []
        first = self.events[0].seq if self.events else self.seq + 1
        if seq < first - 1:
            raise Reset
        return list(islice(self.events, seq - first + 1, None))


class Stream:
    """One reader of one room's events, from a point on."""

    def __init__(
        self, bus: EventBus, room_id: str, log: _RoomLog, seq: int, session_id: str
    ) -> None:
        self._bus = bus
        self.room_id = room_id
        self._log = log
        self.seq = seq
        self.session_id = session_id
        self.ended = asyncio.Event()

    def event_id(self, event: Event) -> str:
        return self._bus.event_id(event.seq)

    async def next(self, timeout_s: float) -> list[Event]:
        """The next events (an empty list after ``timeout_s`` without any, or when the
        stream was ended). Raises :class:`Reset`."""
        while not self.ended.is_set():
            wake = self._log.wake
            events = self._log.after(self.seq)
            if events:
                self.seq = events[-1].seq
                return events
            try:
                async with asyncio.timeout(timeout_s):
                    await wake.wait()  # also set when the stream is ended
            except TimeoutError:
                return []
        return []

    def end(self) -> None:
        """End the stream: a reader waiting in :meth:`next` returns at once."""
        self.ended.set()
        self._log.wake_all()

    def close(self) -> None:
        self._bus._forget(self)


class EventBus:
    def __init__(self, keep: int = KEEP_PER_ROOM) -> None:
        self.epoch = secrets.token_hex(4)
        self._keep = keep
        self._rooms: dict[str, _RoomLog] = {}
        self._sessions: dict[str, set[Stream]] = {}
        self._open = 0

    def _room(self, room_id: str) -> _RoomLog:
        log = self._rooms.get(room_id)
        if log is None:
            log = self._rooms[room_id] = _RoomLog(events=deque(maxlen=self._keep))
        return log

    def event_id(self, seq: int) -> str:
        return f"{self.epoch}-{seq}"

    def last_id(self, room_id: str) -> str:
        """The id of the room's newest event: a snapshot read now includes it."""
        log = self._rooms.get(room_id)
        return self.event_id(log.seq if log else 0)

    def publish(
        self,
        room_id: str,
        name: EventName,
        data: dict[str, Any],
        job: JobKey | None = None,
    ) -> None:
        log = self._room(room_id)
        log.seq += 1
        text = _encode(data)
        log.events.append(Event(log.seq, name, job, data, text))
        log.wake_all()

    def open(self, room_id: str, after: str | None, session_id: str) -> Stream:
        """A stream of the room's events after event id ``after`` (None or empty: after
        the newest). Raises :class:`Reset` when ``after`` can't be resumed from, and
        :class:`StreamLimit` when too many are open."""
        log = self._room(room_id)
        seq = log.seq if not after else self._resume_point(log, after)
        streams = self._sessions.setdefault(session_id, set())
        if len(streams) >= MAX_STREAMS_PER_SESSION or self._open >= MAX_STREAMS:
            if not streams:
                del self._sessions[session_id]
            raise StreamLimit
        stream = Stream(self, room_id, log, seq, session_id)
        streams.add(stream)
        self._open += 1
        return stream

    def _resume_point(self, log: _RoomLog, after: str) -> int:
        epoch, _, number = after.partition("-")
        if epoch != self.epoch or not number.isdigit() or int(number) > log.seq:
            raise Reset
        seq = int(number)
        log.after(seq)  # raises Reset if events after it were dropped
        return seq

    def _forget(self, stream: Stream) -> None:
        streams = self._sessions.get(stream.session_id)
        if streams is not None and stream in streams:
            streams.discard(stream)
            self._open -= 1
            if not streams:
                del self._sessions[stream.session_id]

    def end_session(self, session_id: str) -> int:
        """End every stream of a login session (it logged out); how many there were."""
        streams = self._sessions.get(session_id, set())
        for stream in list(streams):
            stream.end()
        return len(streams)

    def end_all(self) -> None:
        self._each_stream(Stream.end)

    def forget_room(self, room_id: str) -> None:
        """A deleted room's events go; its streams end."""
        self._each_stream(lambda s: s.end() if s.room_id == room_id else None)
        self._rooms.pop(room_id, None)

    def _each_stream(self, action: Callable[[Stream], None]) -> None:
        for streams in list(self._sessions.values()):
            for stream in list(streams):
                action(stream)

    @property
    def open_streams(self) -> int:
        return self._open
