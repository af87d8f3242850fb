"""Live events for the dashboard: what changed in a room, in order, with ids to resume from.

Each room keeps its recent events in memory, numbered from 1. An event's id is
``<epoch>-<number>``, the epoch being random per server start. A browser that
reconnects (Server-Sent Events send ``Last-Event-ID`` by themselves) gets every
event after the one it saw, so it misses nothing; when that event is no longer
kept, or the server restarted, it gets ``reset`` and reads the JSON API again.
A page reads its snapshot from the API first: the answer's ``X-Event-Id`` header
says which event the snapshot includes, and the stream starts after it.

An event is encoded once, however many streams send it: a hundred open
dashboards cost a hundred socket writes per event, nothing more.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
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


class StreamLimit(Exception):
    """Too many streams are open (for this login session or in all)."""


class Reset(Exception):
    """The stream can't go on from where it is: the reader must read a snapshot again."""


@dataclass
class _RoomLog:
    seq: int = 0
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=KEEP_PER_ROOM))
    wake: asyncio.Event = field(default_factory=asyncio.Event)

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
            ended = asyncio.ensure_future(self.ended.wait())
            woken = asyncio.ensure_future(wake.wait())
            try:
                done, _ = await asyncio.wait(
                    {ended, woken}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                ended.cancel()
                woken.cancel()
            if not done:
                return []
        return []

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
        text = json.dumps(data, separators=(",", ":"), default=str)
        log.events.append(Event(log.seq, name, job, data, text))
        wake, log.wake = log.wake, asyncio.Event()
        wake.set()

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
            stream.ended.set()
        return len(streams)

    def end_all(self) -> None:
        for streams in list(self._sessions.values()):
            for stream in list(streams):
                stream.ended.set()

    def forget_room(self, room_id: str) -> None:
        """A deleted room's events go; its streams end."""
        self._rooms.pop(room_id, None)
        self._each_stream(lambda s: s.ended.set() if s.room_id == room_id else None)

    def _each_stream(self, action: Callable[[Stream], None]) -> None:
        for streams in list(self._sessions.values()):
            for stream in list(streams):
                action(stream)

    @property
    def open_streams(self) -> int:
        return self._open
