"""Fixtures for end-to-end tests: real sleap-nn on generated data, real processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sleap_nn", reason="end-to-end tests need the worker extra")

from sleap_rtc.engine.backends.local.backend import LocalBackend
from sleap_rtc.worker.config import MountConfig, WorkerConfig
from sleap_rtc.worker.runner import JobRunner
from tests.servers import Room

#: A folder name sleap-nn's Hydra overrides would break on without quoting.
AWKWARD_DIR = "lab data, v=1 (it's ${HOME})"


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mount root holding the demo data in an awkwardly named folder."""
    from sleap_rtc.demo.data import make_demo_data

    root = tmp_path_factory.mktemp("mount")
    make_demo_data(root / AWKWARD_DIR)
    return root


@pytest.fixture(scope="session")
def demo_dir(demo_root: Path) -> Path:
    return demo_root / AWKWARD_DIR


def worker_config(root: Path, state: Path, **kw: object) -> WorkerConfig:
    return WorkerConfig(
        name="test-worker",
        mounts=[MountConfig(path=str(root), label="lab")],
        models_dir=root / "models",
        state_dir=state,
        device="cpu",
        cancel_grace_s=3.0,
        **kw,
    )  # type: ignore[arg-type]


@pytest.fixture()
async def runner(demo_root: Path, tmp_path: Path) -> AsyncIterator[JobRunner]:
    job_runner = JobRunner(worker_config(demo_root, tmp_path / "state"), LocalBackend())
    await job_runner.start()
    try:
        yield job_runner
    finally:
        await job_runner.close()


@pytest.fixture
def loopback_candidates() -> Iterator[None]:
    """Offer only 127.0.0.1 as a WebRTC host candidate (tests talk over loopback)."""
    from sleap_rtc.transport.webrtc import pin_host_addresses

    pin_host_addresses(["127.0.0.1"])
    yield
    pin_host_addresses(None)


@pytest.fixture
async def alice(room: Room) -> AsyncIterator[Any]:
    """alice's client session with the module's ``room`` server."""
    async with room.client("alice") as client:
        yield client
