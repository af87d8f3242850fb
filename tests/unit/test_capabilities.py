from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from sleap_rtc.engine import gpus
from sleap_rtc.engine.gpus import (
    GpuInfo,
    detect_gpus,
    parse_nvidia_smi,
    parse_usage,
    query_nvidia_smi,
    query_torch,
    refresh_free_memory,
    sleap_nn_version,
)
from sleap_rtc.worker.capabilities import advertised

posix_only = pytest.mark.skipif(os.name != "posix", reason="fake executables are shell scripts")

FOUR_GPUS = (
    "0, NVIDIA H100 80GB HBM3, 81559, 80994\n"
    "1, NVIDIA H100 80GB HBM3, 81559, [N/A]\n"
    "\n"
    "No devices were found\n"
    "2, Tesla K80, 11441, [Not Supported]\n"
    "x, broken, 1, 2\n"
    "3, NVIDIA GeForce RTX 4090, [N/A], 100\n"
    "4, NVIDIA RTX A6000, 49140, 1024\n"
)


def _script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_parse_nvidia_smi_multi_gpu() -> None:
    assert parse_nvidia_smi(FOUR_GPUS) == [
        GpuInfo(index=0, name="NVIDIA H100 80GB HBM3", memory_total_mb=81559, memory_free_mb=80994),
        GpuInfo(index=1, name="NVIDIA H100 80GB HBM3", memory_total_mb=81559, memory_free_mb=None),
        GpuInfo(index=2, name="Tesla K80", memory_total_mb=11441, memory_free_mb=None),
        GpuInfo(index=4, name="NVIDIA RTX A6000", memory_total_mb=49140, memory_free_mb=1024),
    ]


def test_parse_nvidia_smi_name_with_commas_and_odd_input() -> None:
    gpus = parse_nvidia_smi("7 , Weird, Inc. GPU, 2048 , 1000\r\n")
    assert gpus == [
        GpuInfo(index=7, name="Weird, Inc. GPU", memory_total_mb=2048, memory_free_mb=1000)
    ]
    for junk in (
        "",
        "\n\n",
        "0, , 1, 2",
        "0, a, b",
        "-1, GPU, 10, 5",
        "0, GPU, 1.5, 1",
        "１, GPU, 1, 1",
    ):
        assert parse_nvidia_smi(junk) == []


def test_gpu_info_forbids_extra_fields() -> None:
    with pytest.raises(ValidationError):
        GpuInfo.model_validate({"index": 0, "name": "g", "memory_total_mb": 1, "vendor": "x"})
    assert GpuInfo(index=0, name="g", memory_total_mb=1).memory_free_mb is None


@posix_only
def test_query_nvidia_smi_fake_executable(tmp_path: Path) -> None:
    args_file = tmp_path / "args"
    smi = _script(
        tmp_path,
        "fake-smi",
        f'printf "%s\\n" "$@" > "{args_file}"\n'
        "echo '0, NVIDIA A100-SXM4-40GB, 40960, 39000'\n"
        "echo '1, NVIDIA A100-SXM4-40GB, 40960, [N/A]'\n",
    )
    assert query_nvidia_smi(executable=str(smi)) == [
        GpuInfo(index=0, name="NVIDIA A100-SXM4-40GB", memory_total_mb=40960, memory_free_mb=39000),
        GpuInfo(index=1, name="NVIDIA A100-SXM4-40GB", memory_total_mb=40960, memory_free_mb=None),
    ]
    assert args_file.read_text().splitlines() == [
        "--query-gpu=index,name,memory.total,memory.free",
        "--format=csv,noheader,nounits",
    ]


@posix_only
def test_query_nvidia_smi_failure_and_missing(tmp_path: Path) -> None:
    failing = _script(tmp_path, "failing-smi", "echo '0, GPU, 1, 1'\nexit 1\n")
    assert query_nvidia_smi(executable=str(failing)) is None
    assert query_nvidia_smi(executable=str(tmp_path / "no-such-smi")) is None
    assert query_nvidia_smi(executable="sleap-rtc-no-such-nvidia-smi") is None


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@posix_only
def test_query_nvidia_smi_timeout_kills_child_and_grandchildren(tmp_path: Path) -> None:
    # `sleep` runs as a grandchild holding stdout open; the timeout must return promptly
    # and leave no process behind.
    pid_file = tmp_path / "sleep.pid"
    slow = _script(
        tmp_path, "slow-smi", f"echo '0, GPU, 1, 1'\nsleep 30 &\necho $! > \"{pid_file}\"\nwait\n"
    )
    started = time.monotonic()
    assert query_nvidia_smi(timeout=1.0, executable=str(slow)) is None
    assert time.monotonic() - started < 5
    pid = int(pid_file.read_text())
    try:
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@posix_only
def test_detect_gpus_without_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert detect_gpus(use_torch=False) == ([], "cpu")


@posix_only
def test_detect_gpus_and_refresh_with_nvidia_smi_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free_file = tmp_path / "free"
    free_file.write_text("80994")
    _script(
        tmp_path,
        "nvidia-smi",
        f'read free < "{free_file}"\n'
        'case "$1" in\n'
        '  *utilization*) echo "0, $free, 37" ;;\n'
        '  *) echo "0, NVIDIA H100 80GB HBM3, 81559, $free" ;;\n'
        "esac\n",
    )
    monkeypatch.setenv("PATH", str(tmp_path))
    gpus, accelerator = detect_gpus()
    h100 = GpuInfo(index=0, name="NVIDIA H100 80GB HBM3", memory_total_mb=81559)
    assert accelerator == "cuda"
    assert gpus == [h100.model_copy(update={"memory_free_mb": 80994})]

    free_file.write_text("[N/A]")
    other = GpuInfo(index=5, name="gone", memory_total_mb=10, memory_free_mb=3)
    refreshed = refresh_free_memory([*gpus, other])
    assert refreshed == [h100.model_copy(update={"utilization_pct": 37}), other]
    assert gpus[0].memory_free_mb == 80994  # the input is not modified

    free_file.write_text("512")
    assert refresh_free_memory(gpus)[0].memory_free_mb == 512


def test_parse_usage_reads_free_memory_and_utilization() -> None:
    text = "0, 30112, 37\n1, [N/A], [N/A]\nbroken line\n2, 10, 250\n"
    assert parse_usage(text) == {0: (30112, 37), 1: (None, None), 2: (10, None)}


@posix_only
def test_refresh_without_nvidia_smi_returns_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    gpus = [GpuInfo(index=0, name="g", memory_total_mb=100, memory_free_mb=7)]
    assert refresh_free_memory(gpus) == gpus


def test_parse_torch_answer() -> None:
    parse = gpus._parse_torch_answer
    marker = gpus._TORCH_MARKER
    cuda = (
        '{"torch": true, "mps": false, "cuda": [{"index": 0, "name": "NVIDIA L4", '
        '"total": 23580639232, "free": 23000000000}, {"index": 1, "name": "NVIDIA L4", '
        '"total": 23580639232, "free": null}]}'
    )
    assert parse(f"noise\n{marker}{cuda}\n") == (
        [
            GpuInfo(index=0, name="NVIDIA L4", memory_total_mb=22488, memory_free_mb=21934),
            GpuInfo(index=1, name="NVIDIA L4", memory_total_mb=22488, memory_free_mb=None),
        ],
        "cuda",
    )
    assert parse(f'{marker}{{"torch": true, "mps": true, "cuda": []}}') == ([], "mps")
    assert parse(f'{marker}{{"torch": true, "mps": false, "cuda": []}}') == ([], "cpu")
    assert parse(f'{marker}{{"torch": false}}') is None
    assert parse(f"{marker}not json") is None
    assert parse('{"torch": true, "mps": false, "cuda": []}') is None


@pytest.mark.slow
def test_query_torch_cpu_only_machine() -> None:
    assert query_torch() == ([], "cpu")


@posix_only
def test_query_torch_without_torch(tmp_path: Path) -> None:
    python = _script(tmp_path, "python-no-site", '/usr/bin/env python3 -I -S "$@"\n')
    assert query_torch(python=str(python)) is None


@posix_only
def test_query_torch_failing_or_missing_python(tmp_path: Path) -> None:
    failing = _script(tmp_path, "python-fails", "exit 3\n")
    assert query_torch(python=str(failing)) is None
    assert query_torch(python=str(tmp_path / "no-such-python")) is None
    slow = _script(tmp_path, "python-slow", "sleep 30\n")
    assert query_torch(python=str(slow), timeout=0.5) is None


def test_sleap_nn_version() -> None:
    assert sleap_nn_version() == "0.3.5"


def test_sleap_nn_version_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert sleap_nn_version() is None


def test_module_imports_nothing_heavy() -> None:
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('caps', {gpus.__file__!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "module.sleap_nn_version()\n"
        "print(sorted(m for m in ('torch', 'numpy', 'sleap_nn') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


@posix_only
@pytest.mark.parametrize(
    ("backend", "device", "announced"),
    [("local", "auto", ["NVIDIA H100 80GB HBM3"]), ("local", "cpu", []), ("slurm", "auto", [])],
)
def test_local_gpus_are_announced_only_where_they_run_the_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, device: str, announced: list
) -> None:
    from sleap_rtc.worker.config import DeclaredGpu, WorkerConfig

    _script(tmp_path, "nvidia-smi", 'echo "0, NVIDIA H100 80GB HBM3, 81559, 80994"\n')
    monkeypatch.setenv("PATH", str(tmp_path))
    folders = {"models_dir": tmp_path / "models", "state_dir": tmp_path / "state"}
    config = WorkerConfig(backend=backend, device=device, **folders)
    caps, _ = advertised(config)
    assert [g.name for g in caps.gpus] == announced and caps.backends == [backend]
    assert caps.accelerator == ("cuda" if announced else "cpu")

    # A login node declares its partition's GPUs instead; they are never re-measured.
    declared = [DeclaredGpu(name="A100", memory_total_mb=40960)]
    caps, refresh = advertised(
        WorkerConfig(backend=backend, device=device, gpus=declared, **folders)
    )
    assert [g.name for g in caps.gpus] == ["A100"] and caps.accelerator == "cuda"
    assert refresh(caps.gpus) == caps.gpus
