"""What one server process holds while it runs, shared by every route and socket.

One :class:`ServerState` is built per process (:func:`sleap_rtc.server.app.build_state`)
and kept on ``app.state.server``; routes and sockets reach it through the
dependencies in :mod:`sleap_rtc.server.deps`, never through module globals, so two
apps in one process (tests, the demo) never share presence or limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sleap_rtc.server.auth import TokenSigner
from sleap_rtc.server.batch import GroupCommit
from sleap_rtc.server.db import Database
from sleap_rtc.server.directory import RoomDirectory
from sleap_rtc.server.errors import ApiError
from sleap_rtc.server.events import EventBus
from sleap_rtc.server.heap import HeapPolicy
from sleap_rtc.server.hub import Hub
from sleap_rtc.server.keycache import WorkerKeyCache
from sleap_rtc.server.limits import LoginLimiter
from sleap_rtc.server.notify import Notifier
from sleap_rtc.server.service.lanes import LaneBoard
from sleap_rtc.server.service.relay import RelayBudget
from sleap_rtc.server.service.workers import Registration
from sleap_rtc.server.settings import ServerSettings


@dataclass
class ServerState:
    settings: ServerSettings
    database: Database
    signer: TokenSigner
    #: Who is connected right now (memory only; one server process).
    hub: Hub
    logins: LoginLimiter
    relay_budget: RelayBudget
    #: Relay lanes: worker halves waiting for their client, pairs, their budgets.
    lanes: LaneBoard
    #: Job notifications by webhook (its sender task runs with the app).
    notifier: Notifier
    #: Worker keys recently checked (revoking a key or deleting a room forgets them).
    worker_keys: WorkerKeyCache
    #: Worker registrations, written in shared transactions (many reconnect at once).
    registrations: GroupCommit[Registration, float | ApiError | None]
    #: What changed in each room, for the dashboard's live pages.
    events: EventBus = field(default_factory=EventBus)
    #: Each listed room's workers as the listing shows them (memory only, like the hub).
    directory: RoomDirectory = field(default_factory=RoomDirectory)
    #: Keeps connections out of the collector's full passes (run by the sweep).
    heap: HeapPolicy = field(default_factory=HeapPolicy)
