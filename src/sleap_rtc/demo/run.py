"""The demo, end to end, through the path a networked job takes.

In one process it starts a server (SQLite in the demo folder; its dashboard shows
the jobs as they run) on a loopback port, a worker whose only mount is the demo
data folder (its state, the server's database and the credentials stay outside
it), and a client. The client
logs in, creates a room and a worker key through the server's API, the worker
registers with that key, and the client opens a peer channel to it (WebRTC on
loopback, else the relay), submits a :class:`~sleap_rtc.jobs.specs.TrainSpec`
and then a :class:`~sleap_rtc.jobs.specs.TrackSpec`, and follows them live.
Finally it scores the predictions against the ground truth generated with the
data. Nothing here prints: events go to ``on_event`` and the CLI renders them.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.protocol import jobs as p
from sleap_rtc.worker.config import MountConfig, WorkerConfig

JobMessage = p.JobProgress | p.JobComplete | p.JobFailed
ROOM = "demo"
USER = "demo"


class DemoFailed(RuntimeError):
    def __init__(self, what: str, result: p.JobFailed) -> None:
        super().__init__(f"{what} job {result.job_id} ended {result.state}: {result.reason}")
        self.result = result
        self.log_tail = list(result.log_tail)


@dataclass(frozen=True)
class Dashboard:
    """Where the demo's jobs can be watched, and the login that shows them."""

    url: str
    user: str
    password: str


@dataclass(frozen=True)
class DemoResult:
    workdir: Path
    model_dir: Path
    predictions: Path
    train_s: float
    track_s: float
    mean_error_px: float
    n_frames_scored: int
    transport: str
    worker_id: str


@contextlib.asynccontextmanager
async def _server(workdir: Path) -> AsyncIterator[str]:
    """A real server on 127.0.0.1 (any free port), in this event loop."""
    import uvicorn

    from sleap_rtc.server.app import WS_MAX_SIZE, build_state, create_app
    from sleap_rtc.server.db import sqlite_url
    from sleap_rtc.server.settings import ServerSettings

    settings = ServerSettings(database_url=sqlite_url(workdir / "server"))
    state = await asyncio.to_thread(build_state, settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = uvicorn.Config(
        create_app(settings, state),
        log_config=None,
        log_level="warning",
        access_log=False,
        ws_max_size=WS_MAX_SIZE,
        lifespan="on",
        # An open dashboard's live stream must not hold up the end of the demo.
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        sock.close()


def _add_user(workdir: Path, password: str) -> None:
    from sleap_rtc.server.db import create_engine, session_factory, sqlite_url, upgrade
    from sleap_rtc.server.service import accounts

    engine = create_engine(sqlite_url(workdir / "server"))
    upgrade(engine)
    with session_factory(engine)() as session:
        accounts.create_user(session, USER, password)
    engine.dispose()


@contextlib.asynccontextmanager
async def _worker(config: WorkerConfig, url: str, key: str) -> AsyncIterator[str]:
    """A worker in this event loop: runner, job service, peer endpoint, presence."""
    from sleap_rtc.engine.backends.local.backend import LocalBackend
    from sleap_rtc.engine.gpus import sleap_nn_version
    from sleap_rtc.protocol.signaling import Capabilities
    from sleap_rtc.worker.agent import WorkerAgent
    from sleap_rtc.worker.presence import load_worker_id
    from sleap_rtc.worker.runner import JobRunner

    backend = LocalBackend(cancel_grace_s=config.cancel_grace_s, warm_engine=config.warm_engine)
    runner = JobRunner(config, backend)
    await runner.start()
    worker_id = load_worker_id(config.resolved_state_dir())
    caps = Capabilities(
        name=config.name,
        hostname=socket.gethostname(),
        sleap_nn_version=sleap_nn_version(),
        backends=["local"],
        mounts=[m.label for m in runner.mounts],
        max_concurrent_jobs=config.max_concurrent_jobs,
    )
    agent = WorkerAgent(runner, url, key, worker_id, caps, expected_room=ROOM, max_backoff_s=2.0)
    link = agent.link
    task = asyncio.create_task(agent.run())
    try:
        waiter = asyncio.create_task(link.registered.wait())
        done, _ = await asyncio.wait({task, waiter}, timeout=30, return_when="FIRST_COMPLETED")
        if task in done:
            task.result()
        if waiter not in done:
            waiter.cancel()
            raise RuntimeError("the demo worker did not register with the demo server")
        yield worker_id
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await agent.close()
        await runner.close()


async def run_demo(
    workdir: Path,
    *,
    config_name: str = "single_instance",
    on_event: Callable[[str, JobMessage], None] | None = None,
    device: str = "auto",
    transport: str = "auto",
    on_ready: Callable[[Dashboard], None] | None = None,
    keep: Callable[[DemoResult], Awaitable[None]] | None = None,
) -> DemoResult:
    """Run the demo; ``on_ready`` hears the dashboard's address once the server is up,
    and ``keep`` (given the result) is awaited before the server and worker stop."""
    from sleap_rtc.client.credentials import CredentialStore
    from sleap_rtc.client.jobs import WorkerSession
    from sleap_rtc.client.session import ServerClient
    from sleap_rtc.demo.data import make_demo_data, mean_error_px
    from sleap_rtc.transport.webrtc import pin_host_addresses

    workdir.mkdir(parents=True, exist_ok=True)
    data = make_demo_data(workdir / "data")
    config = WorkerConfig(
        name="demo-worker",
        # Only the data is shared; the server, credentials and worker state stay private.
        mounts=[MountConfig(path=str(workdir / "data"), label="demo")],
        models_dir=workdir / "models",
        state_dir=workdir / "worker-state",
        device=device,
    )
    emit = on_event or (lambda _stage, _message: None)
    password = secrets.token_urlsafe(16)
    await asyncio.to_thread(_add_user, workdir, password)
    # Everything is on this machine: offer loopback as the WebRTC host candidate.
    pin_host_addresses(["127.0.0.1"])
    predictions = workdir / "data" / "predictions.slp"
    try:
        async with _server(workdir) as url:
            store = CredentialStore(workdir / "credentials.json")
            async with ServerClient(url, store=store) as client:
                await client.login(USER, password)
                await client.create_room(ROOM)
                if on_ready is not None:  # once the room is there to be shown
                    on_ready(Dashboard(f"{url}/rooms/{ROOM}/jobs", USER, password))
                key = (await client.create_key(ROOM, "demo-worker")).secret
                async with (
                    _worker(config, url, key) as worker_id,
                    await WorkerSession.open(
                        client,
                        ROOM,
                        worker_id,
                        transport=transport,  # type: ignore[arg-type]
                    ) as session,
                ):

                    async def run(stage: str, spec: TrainSpec | TrackSpec) -> tuple[Any, float]:
                        started = time.monotonic()
                        handle = await session.submit(spec)
                        async for message in handle.events():
                            emit(stage, message)
                        result = handle.result
                        if not isinstance(result, p.JobComplete):
                            assert isinstance(result, p.JobFailed)
                            raise DemoFailed(stage, result)
                        return result, time.monotonic() - started

                    train = TrainSpec(
                        config_paths=[str(data.configs[config_name])], run_name="demo"
                    )
                    trained, train_s = await run("train", train)
                    model_dir = Path(trained.outputs[0])
                    track = TrackSpec(
                        data_path=str(data.labels_path),
                        model_paths=[str(model_dir)],
                        output_path=str(predictions),
                        only_suggested_frames=True,
                        overwrite=True,
                    )
                    _, track_s = await run("track", track)
                    report = await asyncio.to_thread(
                        mean_error_px, predictions, data.ground_truth_path
                    )
                    result = DemoResult(
                        workdir=workdir,
                        model_dir=model_dir,
                        predictions=predictions,
                        train_s=train_s,
                        track_s=track_s,
                        mean_error_px=report.mean_px,
                        n_frames_scored=report.n_frames_scored,
                        transport=session.transport,
                        worker_id=worker_id,
                    )
                    if keep is not None:
                        await keep(result)
    finally:
        pin_host_addresses(None)
    return result
