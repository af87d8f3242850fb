"""A client-only install stays light: no ML stack and no server stack on the import path."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

HEAVY = ("torch", "sleap_nn", "sleap_io", "zmq", "lightning", "numpy")
SERVER = ("fastapi", "sqlalchemy", "uvicorn", "alembic", "argon2", "psycopg", "limits")


def _meta() -> dict:
    return tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())


def test_core_dependencies_exclude_the_ml_and_server_stacks() -> None:
    meta = _meta()
    core = " ".join(meta["project"]["dependencies"]).lower()
    assert not any(name.replace("_", "-") in core for name in HEAVY + SERVER)
    extras = meta["project"]["optional-dependencies"]
    worker = " ".join(extras["worker"]).lower()
    assert "sleap-nn" in worker and "pyzmq" in worker
    server = " ".join(extras["server"]).lower()
    assert all(name in server for name in ("fastapi", "sqlalchemy", "alembic", "psycopg"))


def test_cli_client_and_jobs_import_without_heavy_modules() -> None:
    code = (
        "import sys, sleap_rtc, sleap_rtc.jobs, sleap_rtc.jobs.validation, sleap_rtc.cli, "
        "sleap_rtc.client, sleap_rtc.worker, sleap_rtc.worker.presence, "
        "sleap_rtc.engine.backends.local.backend;"
        f"print([m for m in {HEAVY + SERVER!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
