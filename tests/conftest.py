"""Shared test set-up: nothing a test writes may land in the repo or the real home."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
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


# -- the checkout stays clean ----------------------------------------------------------------

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: What running Python and pytest may leave in a checkout (all ignored by git).
_TOOL_LEFTOVERS = ("__pycache__", ".pytest_cache", ".venv", ".egg-info", "_cache")


def _checkout_leftovers() -> set[str] | None:
    """Untracked and ignored paths in the checkout, less the tools' own caches."""
    try:
        out = subprocess.run(
            ["git", "-C", _REPO, "status", "--porcelain=v1", "--ignored", "-z"],
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout (an installed copy): nothing to compare
    paths = {entry[3:] for entry in out.split("\0") if entry[:2] in ("??", "!!")}
    return {p for p in paths if not any(part in p for part in _TOOL_LEFTOVERS)}


_BEFORE = _checkout_leftovers()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a test wrote into the checkout (it must use tmp_path)."""
    if _BEFORE is None or hasattr(session.config, "workerinput"):
        return
    after = _checkout_leftovers() or set()
    new = sorted(after - _BEFORE)
    if new:
        session.config.get_terminal_writer().line(
            "tests wrote into the checkout (use tmp_path instead): " + ", ".join(new), red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
