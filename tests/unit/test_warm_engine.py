"""The warm engine with a real zygote that forks a small probe command instead of sleap-nn.

The zygote here preloads only the probe (``tests.warm_probe``), so it is ready in a
fraction of a second; everything else is the real thing: the socket protocol, the
fork, the session, the sandbox, the job environment, the exit status, a dead or stale
zygote replaced, and the local backend's cancel path. The same engine forking real
sleap-nn is in ``tests/e2e/test_warm_engine.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from sleap_rtc.engine import sandbox, warm_client
from sleap_rtc.engine.backend import EngineJob, Finished, LogLine, Step, StepStarted
from sleap_rtc.engine.backends.local.backend import LocalBackend
from sleap_rtc.engine.warm import MAX_MESSAGE, decode, send
from sleap_rtc.engine.warm_client import WarmEngine, WarmProcess, WarmUnavailable
from sleap_rtc.jobs.states import JobState

REPO = Path(__file__).resolve().parents[2]
PROBE_SCRIPT = str(REPO / "tests" / "warm_probe.py")


def engine(tmp_path: Path, *, path: tuple[Path, ...] = (), **kw: Any) -> WarmEngine:
    python_path = os.pathsep.join(str(p) for p in (REPO, *path))
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": python_path, "SLEAP_RTC_SECRET_X": "no"}
    return WarmEngine(
        env,
        script=kw.pop("script", PROBE_SCRIPT),
        entry=kw.pop("entry", "tests.warm_probe:probe"),
        preload=kw.pop("preload", ()),
        folder=tmp_path,
        **kw,
    )


@pytest.fixture
async def warm(tmp_path: Path) -> AsyncIterator[WarmEngine]:
    started = engine(tmp_path)
    try:
        yield started
    finally:
        await started.close()


async def gone(pid: int, within: float = 5.0) -> bool:
    """Whether process ``pid`` ends (or is a zombie) within ``within`` seconds."""
    for _ in range(int(within / 0.05)):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        await asyncio.sleep(0.05)
    return False


async def run(process: WarmProcess) -> tuple[int, list[str]]:
    out = await process.stdout.read()
    return await process.wait(), out.decode().splitlines()


def job_env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "ONLY_THIS": "1"}


async def test_a_forked_step_is_a_session_of_its_own_with_only_the_job_env(
    warm: WarmEngine, tmp_path: Path
) -> None:
    process = await warm.spawn(
        [PROBE_SCRIPT, "--exit-code", "3"], env=job_env(tmp_path), cwd=tmp_path, policy=None
    )
    code, lines = await run(process)
    report = json.loads(lines[0])
    assert code == 3
    assert report["pid"] == report["pgid"] == report["sid"] == process.pid
    assert report["ppid"] == warm.pid != os.getpid()
    assert report["cwd"] == str(tmp_path)
    assert report["argv0"] == PROBE_SCRIPT
    assert report["env"] == job_env(tmp_path)  # nothing of the zygote's, no secrets
    assert report["stdin"] == ""  # /dev/null
    assert lines[1] == "probe: to stderr"  # stderr and stdout share the pipe


async def test_steps_start_fast_and_report_a_signal_as_a_negative_code(
    warm: WarmEngine, tmp_path: Path
) -> None:
    await warm.ready()
    started = asyncio.get_running_loop().time()
    process = await warm.spawn(
        [PROBE_SCRIPT, "--sleep", "30"], env=job_env(tmp_path), cwd=None, policy=None
    )
    assert asyncio.get_running_loop().time() - started < 2
    await process.stdout.readline()
    os.killpg(process.pid, signal.SIGTERM)
    assert await process.wait() == -signal.SIGTERM
    assert process.returncode == -signal.SIGTERM


@pytest.mark.skipif(sandbox.unavailable_reason() is not None, reason="needs Landlock")
async def test_a_warm_step_runs_inside_its_sandbox(warm: WarmEngine, tmp_path: Path) -> None:
    readable, writable, outside = tmp_path / "in", tmp_path / "out", tmp_path / "secret"
    for folder in (readable, writable, outside):
        folder.mkdir()
    (readable / "a.txt").write_text("a")
    (outside / "key").write_text("k")
    policy = sandbox.SandboxPolicy(read=(str(readable),), write=(str(writable),))
    argv = [PROBE_SCRIPT, "--read", str(readable / "a.txt"), "--read", str(outside / "key")]
    argv += ["--write", str(writable / "w.txt"), "--write", str(readable / "no.txt")]
    zygote = (await warm.ready()).popen.pid
    for pid in (zygote, os.getpid()):  # the zygote's and the worker's secrets
        argv += ["--read", f"/proc/{pid}/environ", "--read", f"/proc/{pid}/mem"]
    code, lines = await run(
        await warm.spawn(argv, env=job_env(writable), cwd=writable, policy=policy)
    )
    report = json.loads(lines[0])
    assert code == 0, lines
    assert report["reads"] == {
        str(readable / "a.txt"): "allowed",
        str(outside / "key"): "PermissionError",
        **{
            f"/proc/{pid}/{name}": "PermissionError"
            for pid in (zygote, os.getpid())
            for name in ("environ", "mem")
        },
    }
    # Without exec, root's capabilities must be cleared by hand: none are left.
    assert report["caps"]["CapEff"] == report["caps"]["CapPrm"] == 0, report["caps"]
    assert report["caps"]["CapBnd"] == 0 or os.geteuid() != 0
    assert report["writes"] == {
        str(writable / "w.txt"): "allowed",
        str(readable / "no.txt"): "PermissionError",
    }


async def test_a_killed_zygote_ends_its_steps_and_is_replaced(
    warm: WarmEngine, tmp_path: Path
) -> None:
    process = await warm.spawn(
        [PROBE_SCRIPT, "--sleep", "60", "--grandchild"],
        env=job_env(tmp_path),
        cwd=None,
        policy=None,
    )
    report = json.loads(await process.stdout.readline())
    first = warm.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert await asyncio.wait_for(process.wait(), 10) == -signal.SIGKILL
    assert process.lost is not None and "warm engine" in process.lost
    for pid in (process.pid, report["grandchild"]):
        assert await gone(pid), pid
    again = await warm.spawn([PROBE_SCRIPT], env=job_env(tmp_path), cwd=None, policy=None)
    code, lines = await run(again)
    assert code == 0 and json.loads(lines[0])["ppid"] == warm.pid != first


async def test_a_stale_zygote_is_replaced_after_its_running_steps(
    warm: WarmEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = await warm.spawn(
        [PROBE_SCRIPT, "--sleep", "1.5"], env=job_env(tmp_path), cwd=None, policy=None
    )
    old = warm.pid
    assert old is not None
    real = warm_client._fingerprint()
    monkeypatch.setattr(warm_client, "_fingerprint", lambda: (*real, ("upgraded", 1, 1, 1)))
    fresh = await warm.spawn([PROBE_SCRIPT], env=job_env(tmp_path), cwd=None, policy=None)
    assert json.loads((await run(fresh))[1][0])["ppid"] == warm.pid != old
    assert psutil.pid_exists(old)  # still serving the step it started
    assert (await run(running))[0] == 0
    assert await gone(old), "the stale zygote outlived its last step"


async def test_bad_messages_are_refused_and_the_zygote_goes_on(
    warm: WarmEngine, tmp_path: Path
) -> None:
    zygote = await warm.ready()
    assert decode(b'{"op":"x"}') == {"op": "x"}
    for bad in (b"[1]", b'{"no":"op"}', b"\xff"):
        with pytest.raises(ValueError):
            decode(bad)
    with pytest.raises(ValueError, match="over"):
        send(zygote.sock, {"op": "spawn", "pad": "x" * MAX_MESSAGE})
    # A spawn with no pipe, one with a bad argv: each answered, nothing forked.
    loop = asyncio.get_running_loop()
    for request_id, message in enumerate(
        (
            {"op": "spawn", "argv": [PROBE_SCRIPT], "env": {}, "cwd": None},
            {"op": "spawn", "argv": "rm -rf /", "env": {}, "cwd": None},
        ),
        start=1000,
    ):
        future = loop.create_future()
        zygote.pending[request_id] = future
        r, w = os.pipe()
        send(zygote.sock, {**message, "id": request_id}, [w] if request_id == 1001 else None)
        os.close(w)
        os.close(r)
        with pytest.raises(WarmUnavailable):
            await asyncio.wait_for(future, 5)
    code, _ = await run(
        await warm.spawn([PROBE_SCRIPT], env=job_env(tmp_path), cwd=None, policy=None)
    )
    assert code == 0 and zygote.alive


async def test_a_zygote_that_cannot_start_says_why_once(tmp_path: Path) -> None:
    broken = engine(tmp_path, entry="no_such_module_here:cli")
    try:
        with pytest.raises(WarmUnavailable, match="no_such_module_here"):
            await broken.ready()
        started = asyncio.get_running_loop().time()
        with pytest.raises(WarmUnavailable, match="no_such_module_here"):
            await broken.ready()  # not tried again for a while: no second slow failure
        assert asyncio.get_running_loop().time() - started < 0.5
    finally:
        await broken.close()
    assert list(tmp_path.iterdir()) == []  # its private folder is gone


# ------------------------------------------------------------------ through the local backend


def probe_job(tmp_path: Path, *args: str) -> EngineJob:
    step = Step(name="probe", kind="track", argv=[PROBE_SCRIPT, *args], index=1, total=1)
    return EngineJob(job_id="j1", kind="track", steps=[step], cwd=tmp_path)


async def events_of(job: Any) -> list[Any]:
    return [event async for event in job.events()]


async def backend_with(tmp_path: Path, **kw: Any) -> LocalBackend:
    backend = LocalBackend(cancel_grace_s=0.5)
    backend.warm = engine(tmp_path / "engine", **kw)
    (tmp_path / "engine").mkdir()
    await backend.start()
    return backend


async def test_cancel_while_the_engine_is_still_importing(tmp_path: Path) -> None:
    (tmp_path / "slow_import_probe.py").write_text("import time\ntime.sleep(30)\n")
    backend = await backend_with(tmp_path, preload=("slow_import_probe",), path=(tmp_path,))
    try:
        job = await backend.submit(probe_job(tmp_path))
        await asyncio.sleep(0.5)
        started = asyncio.get_running_loop().time()
        await job.cancel()
        events = await asyncio.wait_for(events_of(job), 10)
        assert asyncio.get_running_loop().time() - started < 5
        assert not any(isinstance(e, StepStarted) for e in events)
        assert isinstance(events[-1], Finished) and events[-1].state is JobState.CANCELLED
    finally:
        await backend.close()


async def test_cancel_escalates_to_kill_for_a_warm_step_and_its_group(tmp_path: Path) -> None:
    backend = await backend_with(tmp_path)
    try:
        job = await backend.submit(
            probe_job(tmp_path, "--sleep", "60", "--ignore-signals", "--grandchild")
        )
        seen: list[Any] = []
        async for event in job.events():
            seen.append(event)
            if isinstance(event, LogLine) and event.text.startswith("{"):
                break
        report = json.loads(seen[-1].text)
        await job.cancel()  # INT and TERM are ignored: KILL after 2 × 0.5 s
        events = await asyncio.wait_for(events_of(job), 10)
        assert isinstance(events[-1], Finished) and events[-1].state is JobState.CANCELLED
        for pid in (report["pid"], report["grandchild"]):
            assert await gone(pid), pid
        assert report["ppid"] == backend.warm.pid  # type: ignore[union-attr]
    finally:
        await backend.close()


async def test_no_warm_start_means_a_cold_start_with_a_note(tmp_path: Path) -> None:
    script = tmp_path / "cold-sleap-nn"
    script.write_text('#!/bin/sh\necho "ran cold: $*"\n')
    script.chmod(0o755)
    backend = await backend_with(tmp_path, entry="no_such_module_here:cli", script=str(script))
    try:
        step = Step(name="probe", kind="track", argv=[str(script), "a b"], index=1, total=1)
        job = await backend.submit(EngineJob(job_id="j1", kind="track", steps=[step]))
        events = await events_of(job)
        lines = [e.text for e in events if isinstance(e, LogLine)]
        notes = [line for line in lines if "starts cold" in line]
        assert len(notes) == 1 and "no_such_module_here" in notes[0], lines
        assert "ran cold: a b" in lines
        assert isinstance(events[-1], Finished) and events[-1].state is JobState.COMPLETE
    finally:
        await backend.close()
