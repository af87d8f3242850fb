"""``sleap-rtc doctor``'s checks: worker machines from real worker.toml files, the verdicts.

Worker-machine checks run against real folders under tmp_path and this machine's
own sandbox probe; the client checks that need no server run for real too (no
server configured, a closed port). The server flow is in tests/e2e/test_doctor.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from sleap_rtc.cli import cli
from sleap_rtc.client.doctor import check_client, clip, describe_worker
from sleap_rtc.engine import sandbox
from sleap_rtc.engine.gpus import GpuInfo
from sleap_rtc.protocol import api
from sleap_rtc.protocol.signaling import Gpu
from sleap_rtc.worker.doctor import (
    MIN_FREE_BYTES,
    Check,
    check_worker_machine,
    free_space_check,
    gpu_check,
    worker_config_path,
)

#: What this machine gives: the sandbox setting a healthy worker.toml here has.
SANDBOX = "landlock" if sandbox.unavailable_reason() is None else "off"
NOW = datetime(2030, 1, 1, tzinfo=UTC)
A100 = GpuInfo(index=0, name="NVIDIA A100", memory_total_mb=81_920, memory_free_mb=80_000)


def write_config(tmp_path: Path, *mounts: str, extra: str = "") -> Path:
    """A CPU worker.toml with a models folder under tmp_path and these mount tables."""
    path = tmp_path / "etc" / "worker.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        'name = "box"\ndevice = "cpu"\n'
        f'sandbox = "{SANDBOX}"\n'
        f'models_dir = "{tmp_path / "models"}"\n'
        f'state_dir = "{tmp_path / "state"}"\n{extra}\n'
    )
    path.write_text(text + "\n".join(mounts), encoding="utf-8")
    return path


def mount(path: Path, label: str, read_only: bool = False) -> str:
    ro = "\nread_only = true" if read_only else ""
    return f'[[mounts]]\npath = "{path}"\nlabel = "{label}"{ro}\n'


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


# -- free space ----------------------------------------------------------------------------


def test_free_space_below_the_threshold_is_a_problem_at_it_is_not(tmp_path: Path) -> None:
    assert MIN_FREE_BYTES == 1 << 30
    enough = free_space_check(tmp_path, MIN_FREE_BYTES)
    assert enough.ok and "1.0 GiB free" in enough.detail and enough.fix is None
    short = free_space_check(tmp_path, MIN_FREE_BYTES - 1)
    assert not short.ok
    assert str(tmp_path) in short.detail and "at least 1.0 GiB" in short.detail
    assert short.fix is not None and "models_dir" in short.fix
    assert not free_space_check(tmp_path, 10 << 30, minimum=20 << 30).ok


# -- GPUs ----------------------------------------------------------------------------------


def test_cpu_configured_is_ok_whatever_the_machine_has() -> None:
    for torch in (None, ([], "cpu"), ([A100], "cuda")):
        check = gpu_check("cpu", None, torch)
        assert check.ok and "cpu configured" in check.detail


def test_gpu_verdicts_from_what_nvidia_smi_and_torch_see() -> None:
    seen = gpu_check("auto", [A100], ([A100], "cuda"))
    assert seen.ok and "cuda:0 NVIDIA A100 (81,920 MB)" in seen.detail

    no_torch = gpu_check("auto", [A100], None)
    assert not no_torch.ok and "PyTorch can't be imported" in no_torch.detail
    assert no_torch.fix is not None and "sleap-rtc[worker]" in no_torch.fix

    cpu_build = gpu_check("cuda", [A100], ([], "cpu"))
    assert not cpu_build.ok and "nvidia-smi lists NVIDIA A100" in cpu_build.detail
    assert cpu_build.fix is not None and "CUDA build of PyTorch" in cpu_build.fix

    nothing = gpu_check("auto", None, ([], "cpu"))
    assert not nothing.ok and "no GPU visible to torch" in nothing.detail
    assert nothing.fix is not None and 'device = "cpu"' in nothing.fix

    missing_index = gpu_check("cuda:1", [A100], ([A100], "cuda"))
    assert not missing_index.ok and "cuda:1" in missing_index.detail

    assert gpu_check("auto", None, ([], "mps")).ok
    assert not gpu_check("mps", None, ([], "cpu")).ok


# -- worker machines -----------------------------------------------------------------------


def test_a_healthy_cpu_worker_config_passes_every_check(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    raw = tmp_path / "raw"
    raw.mkdir()
    path = write_config(tmp_path, mount(data, "data"), mount(raw, "raw", read_only=True))
    machine = check_worker_machine(path)
    assert machine.config is not None and machine.config.name == "box"
    checks = by_name(machine.checks)
    assert [c for c in machine.checks if not c.ok] == []
    assert list(checks) == [
        "worker config",
        "sleap-nn",
        "GPU",
        "models folder",
        "disk space",
        "mount data",
        "mount raw",
        "sandbox",
    ]
    assert "cpu configured" in checks["GPU"].detail
    assert "created when the worker starts" in checks["models folder"].detail
    assert not (tmp_path / "models").exists()  # the doctor creates nothing
    assert checks["mount raw"].detail == f"{raw.resolve()} (read-only)"


def test_a_missing_mount_folder_is_named_with_the_fix(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    gone = tmp_path / "not there"
    path = write_config(tmp_path, mount(data, "data"), mount(gone, "raw"))
    checks = by_name(check_worker_machine(path).checks)
    assert checks["mount data"].ok
    problem = checks["mount raw"]
    assert not problem.ok and problem.detail == f"{gone} does not exist"
    assert problem.fix == f"create the folder, or fix or remove mounts[1] in {path}"
    assert checks["sandbox"].ok  # the other checks still run


def test_a_mount_that_is_a_file_and_a_models_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "models").write_text("not a folder")
    afile = tmp_path / "labels.slp"
    afile.write_text("")
    checks = by_name(check_worker_machine(write_config(tmp_path, mount(afile, "lab"))).checks)
    assert not checks["mount lab"].ok and "is not a folder" in checks["mount lab"].detail
    assert not checks["models folder"].ok and "is not a folder" in checks["models folder"].detail


def test_an_invalid_worker_config_says_what_is_wrong(tmp_path: Path) -> None:
    path = write_config(tmp_path, extra='devise = "cpu"')
    machine = check_worker_machine(path)
    assert machine.config is None
    first = machine.checks[0]
    assert first.name == "worker config" and not first.ok
    assert "devise" in first.detail and first.fix is not None and str(path) in first.fix
    # What doesn't need the config is still checked.
    assert [c.name for c in machine.checks] == ["worker config", "sleap-nn"]

    missing = check_worker_machine(tmp_path / "nowhere.toml")
    assert not missing.checks[0].ok and "does not exist" in missing.checks[0].detail


@pytest.mark.skipif(SANDBOX == "off", reason="needs Landlock")
def test_sandbox_off_where_landlock_works_is_a_problem(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('"landlock"', '"off"'))
    check = by_name(check_worker_machine(path).checks)["sandbox"]
    assert not check.ok and "can sandbox jobs" in check.detail
    assert check.fix is not None and 'remove sandbox = "off"' in check.fix


@pytest.mark.skipif(SANDBOX == "off", reason="needs Landlock")
def test_a_mount_holding_the_worker_state_is_a_sandbox_problem(tmp_path: Path) -> None:
    path = write_config(tmp_path, mount(tmp_path, "everything"))
    check = by_name(check_worker_machine(path).checks)["sandbox"]
    assert not check.ok and "jobs would reach it" in check.detail
    assert check.fix is not None and "out of the mounts" in check.fix


def test_the_default_worker_config_is_used_only_when_it_exists(tmp_path: Path) -> None:
    from sleap_rtc.worker.config import default_config_path

    given = tmp_path / "w.toml"
    assert worker_config_path(given) == given  # given: checked even if missing
    assert worker_config_path(None) is None
    default = default_config_path()
    default.parent.mkdir(parents=True, exist_ok=True)
    default.write_text('device = "cpu"\n')
    assert worker_config_path(None) == default


# -- client side ---------------------------------------------------------------------------


def worker_view(**changes: object) -> api.WorkerView:
    fields: dict[str, object] = {
        "id": "worker-abc123",
        "name": "lab-gpu-1",
        "room": "lab",
        "status": "online",
        "hostname": "h",
        "accelerator": "cuda",
        "gpus": [Gpu(index=0, name="NVIDIA A5000", memory_total_mb=24_564, memory_free_mb=23_870)],
        "running_jobs": 0,
        "max_concurrent_jobs": 1,
        "sleap_nn_version": "0.3.5",
        "backends": ["local"],
        "mounts": ["data", "models"],
        "sandbox": "landlock",
        "last_seen": NOW,
        "connected_since": NOW,
    }
    fields.update(changes)
    return api.WorkerView.model_validate(fields)


def test_an_online_worker_is_described_by_sleap_nn_gpus_and_mounts() -> None:
    check = describe_worker(worker_view())
    assert check.ok and check.name == "worker lab-gpu-1"
    assert check.detail == (
        "online; sleap-nn 0.3.5; NVIDIA A5000 (23,870 MB free); mounts data, models; jobs 0/1"
    )
    bare = describe_worker(worker_view(sleap_nn_version=None, sandbox="off", gpus=[]))
    assert not bare.ok and "no sleap-nn" in bare.detail and "without a sandbox" in bare.detail
    assert bare.fix is not None and "sleap-rtc[worker]" in bare.fix
    long = describe_worker(worker_view(name="w" * 64, mounts=[f"m{i}" for i in range(20)]))
    assert "and 12 more" in long.detail


def test_clip_bounds_others_text() -> None:
    assert clip("short") == "short"
    assert clip("x" * 100, 10) == "x" * 9 + "…"


def test_no_server_configured_is_a_problem_with_the_fix() -> None:
    checks = asyncio.run(check_client())
    assert len(checks) == 1 and checks[0].name == "server" and not checks[0].ok
    assert checks[0].fix is not None and "sleap-rtc login --server URL" in checks[0].fix


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_server_nothing_answers_at_ends_the_client_checks() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    checks = asyncio.run(check_client(url, "lab"))
    assert [c.name for c in checks] == ["server"]
    assert not checks[0].ok and f"can't reach the sleap-rtc server at {url}" in checks[0].detail
    assert checks[0].fix is not None and "--server URL" in checks[0].fix


# -- the command ---------------------------------------------------------------------------


def test_the_command_prints_a_line_per_check_and_exits_2_on_a_problem(tmp_path: Path) -> None:
    odd = tmp_path / "[red]data [bold]x"
    odd.mkdir()
    path = write_config(tmp_path, mount(odd, "data"), mount(tmp_path / "gone", "raw"))
    server = f"http://127.0.0.1:{closed_port()}"
    args = ["doctor", "--worker-config", str(path), "--server", server]
    result = CliRunner().invoke(cli, args, env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("problem  server ") and "→ fix: start the server" in lines[0]
    assert any(line.startswith("ok       mount data") and str(odd) in line for line in lines)
    raw = [line for line in lines if line.startswith("problem  mount raw")]
    assert len(raw) == 1 and "does not exist → fix: create the folder" in raw[0]
    assert lines[-1] == f"2 problem(s) in {len(lines) - 1} checks"

    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 2
    listed = json.loads(result.output)
    assert {tuple(sorted(c)) for c in listed} == {("detail", "fix", "name", "ok")}
    assert [c["name"] for c in listed if not c["ok"]] == ["server", "mount raw"]
