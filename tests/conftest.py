"""Shared test set-up: nothing a test writes may land in the repo or the real home."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

from tests.postgres import database_url, postgres_cluster  # noqa: F401
from tests.servers import procs, server_factory  # noqa: F401
from tests.slurm import slurm  # noqa: F401

# sleap-nn on a busy 2-core machine slows ~10x with more than one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

# Hypothesis keeps no example database and caches outside the repo: nothing a test
# writes lands in the checkout.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="sleap-rtc-hypothesis-")
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, True)
set_hypothesis_home_dir(_HYPOTHESIS_HOME)
settings.register_profile("sleap-rtc", database=None)
settings.load_profile("sleap-rtc")


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path_factory.mktemp("sleap-rtc-home")
    monkeypatch.setenv("SLEAP_RTC_HOME", str(home))
    for name in (
        "SLEAP_RTC_SERVER",
        "SLEAP_RTC_ROOM",
        "SLEAP_RTC_WORKER_KEY",
        "SLEAP_RTC_DATABASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
