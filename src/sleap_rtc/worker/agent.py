"""A whole worker in one event loop: job runner, job service, peer endpoint, presence.

``sleap-rtc worker`` and the demo both run one of these; the caller owns the
runner (it opens the job store) and decides how to report what happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sleap_rtc.protocol.signaling import Capabilities, Gpu, Registered, WorkerStatus
from sleap_rtc.transport.lane import LaneServer
from sleap_rtc.worker.control import answer_server
from sleap_rtc.worker.endpoint import PeerEndpoint
from sleap_rtc.worker.lanes import RelayDialer
from sleap_rtc.worker.presence import PresenceLink
from sleap_rtc.worker.reports import IndexReporter
from sleap_rtc.worker.runner import JobRunner
from sleap_rtc.worker.service import JobService
from sleap_rtc.worker.tickets import SeenTickets, TicketVerifier

log = logging.getLogger("sleap_rtc.worker")


class WorkerAgent:
    def __init__(
        self,
        runner: JobRunner,
        server_url: str,
        key: str,
        worker_id: str,
        capabilities: Capabilities,
        *,
        expected_room: str | None = None,
        refresh_gpus: Callable[[list[Gpu]], list[Gpu]] | None = None,
        max_backoff_s: float = 30.0,
    ) -> None:
        config = runner.config
        self.runner = runner
        self.worker_id = worker_id
        self.service = JobService(
            runner, worker_id=worker_id, worker_name=capabilities.name, verifier=None
        )
        if config.relay_transfers:
            self.service.relay_lanes = RelayDialer(server_url, key, worker_id)
        self.seen_tickets = SeenTickets()
        self.endpoint = PeerEndpoint(
            self.service, self._send, ice_servers=config.ice_servers, webrtc=config.webrtc
        )
        self.link = PresenceLink(
            server_url,
            key,
            worker_id,
            capabilities,
            status=self.status,
            refresh_gpus=refresh_gpus,
            on_relay=self.endpoint.on_relay,
            on_registered=self._registered,
            on_control=lambda message: answer_server(runner, message),
            expected_room=expected_room,
            max_backoff_s=max_backoff_s,
        )
        runner.state_listeners.append(lambda _record: self.link.status_changed())
        self.reporter = IndexReporter(runner.store, self.link.send, drained=self.link.drained)
        runner.store.listeners.append(self.reporter.changed)

    def status(self) -> tuple[WorkerStatus, int]:
        """Busy when every job slot is taken; and how many jobs are running."""
        busy = self.runner.active_jobs >= self.runner.config.max_concurrent_jobs
        return ("busy" if busy else "idle", self.runner.running_jobs)

    def _registered(self, info: Registered) -> None:
        self.reporter.registered(info.index_since)
        # Tickets are checked with the key of the server this worker registered with.
        if info.ticket_public_key and info.issuer and info.room_id:
            self.service.verifier = TicketVerifier(
                info.ticket_public_key,
                info.issuer,
                info.room,
                info.room_id,
                self.worker_id,
                seen=self.seen_tickets,
            )

    async def _send(self, to: str, payload: dict[str, Any]) -> bool:
        return await self.link.relay(to, payload)

    async def start_lanes(self) -> LaneServer | None:
        """Listen for direct lanes (bulk transfers), as ``direct_transfers`` says.

        A port that can't be had costs a log line, never the worker: files then go
        over the peer channel.
        """
        config = self.runner.config
        if not config.direct_transfers or self.service.lanes is not None:
            return self.service.lanes
        try:
            self.service.lanes = await LaneServer(
                config.direct_listen, config.direct_addresses
            ).start()
        except OSError as exc:
            log.warning("direct transfers off: can't listen on %s: %s", config.direct_listen, exc)
        return self.service.lanes

    async def run(self) -> None:
        """Stay registered until cancelled; raises WorkerRefused if the server refuses."""
        await self.start_lanes()
        reporting = asyncio.create_task(self.reporter.run(), name="index-reporter")
        try:
            await self.link.run()
        finally:
            reporting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporting

    async def close(self) -> None:
        await self.endpoint.close()
        if self.service.lanes is not None:
            await self.service.lanes.close()
            self.service.lanes = None
