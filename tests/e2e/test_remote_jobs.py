"""Jobs across a room: real server, real worker process, real aiortc, real sleap-nn.

The client side is the async API (`WorkerSession`); the database is SQLite (the
server tests cover PostgreSQL; jobs never touch the server's database).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sleap_rtc.client import ClientError, ServerClient
from sleap_rtc.client.jobs import JobRejectedError, WorkerError, WorkerSession
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.protocol import jobs as p
from sleap_rtc.transport.envelope import Data, Open
from sleap_rtc.transport.relay import ServerSocket, new_channel_id
from tests.servers import Proc, Room, cli_env, open_room, start_worker, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("loopback_candidates")]


@pytest.fixture(scope="module")
def room(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    with open_room(tmp_path_factory.mktemp("remote"), demo_root) as opened:
        yield opened


def config(demo_dir: Path, name: str = "single_instance") -> str:
    return str(demo_dir / "configs" / f"{name}.yaml")


async def test_train_over_webrtc_then_track_over_the_relay(
    room: Room, alice: ServerClient, demo_dir: Path
) -> None:
    async with await WorkerSession.open(alice, "lab", room.worker_id, transport="webrtc") as s:
        assert s.transport == "webrtc" and s.user == "alice" and s.worker_name == "lab-cpu"
        job = await s.submit(
            TrainSpec(config_paths=[config(demo_dir)], max_epochs=3, run_name="remote-si")
        )
        epochs: list[int] = []
        lines = 0
        async for event in job.events():
            if isinstance(event, p.JobProgress):
                lines += len(event.lines)
                if event.progress is not None and event.progress.kind == "train":
                    epochs.append(event.progress.epoch)
        result = job.result
    assert isinstance(result, p.JobComplete), result
    assert epochs and epochs == sorted(epochs) and max(epochs) == 3, epochs
    assert lines > 0
    model = Path(result.outputs[0])
    assert (model / "best.ckpt").is_file() and model.name == "remote-si"

    async with await WorkerSession.open(alice, "lab", room.worker_id, transport="relay") as s:
        assert s.transport == "relay"
        output = demo_dir / "remote-predictions.slp"
        job = await s.submit(
            TrackSpec(
                data_path=str(demo_dir / "demo.pkg.slp"),
                model_paths=[str(model)],
                output_path=str(output),
                frames="0-9",
            )
        )
        frames = [
            e.progress.n_processed
            async for e in job.events()
            if isinstance(e, p.JobProgress) and e.progress is not None
        ]
        assert isinstance(job.result, p.JobComplete), job.result
        assert output.is_file() and str(output) in job.result.outputs
        assert frames and frames[-1] >= 1
        # The job list shows both jobs with their owner.
        listed = {j.job_id: j for j in await s.jobs()}
        assert listed[job.job_id].owner == "alice" and listed[job.job_id].state == "COMPLETE"


async def test_two_bad_paths_are_rejected_together(
    room: Room, alice: ServerClient, demo_dir: Path
) -> None:
    async with await WorkerSession.open(alice, "lab", room.worker_id, transport="relay") as s:
        with pytest.raises(JobRejectedError) as caught:
            await s.submit(
                TrainSpec(
                    config_paths=[str(demo_dir / "configs" / "missing.yaml")],
                    labels_path="/etc/passwd.slp",
                )
            )
    errors = {(e.field, e.code) for e in caught.value.errors}
    assert ("config_path", "PATH_NOT_FOUND") in errors
    assert ("labels_path", "ACCESS_DENIED") in errors
    assert all(e.message for e in caught.value.errors)


async def test_disconnect_mid_training_then_attach_replays_and_follows(
    room: Room, alice: ServerClient, demo_dir: Path
) -> None:
    s = await WorkerSession.open(alice, "lab", room.worker_id, transport="webrtc")
    job = await s.submit(TrainSpec(config_paths=[config(demo_dir)], max_epochs=4))
    async for event in job.events():
        if isinstance(event, p.JobProgress) and event.progress is not None:
            break  # training has started
    await s.close()  # the client goes away; the job must not

    async with await WorkerSession.open(alice, "lab", room.worker_id) as again:
        status = await again.status(job.job_id)
        assert status.state in ("RUNNING", "COMPLETE")
        attached = await again.attach(job.job_id, log_lines=20)
        replayed = []
        async for event in attached.events():
            if isinstance(event, p.JobProgress) and event.replay:
                replayed.append(event)
        assert replayed and replayed[0].lines, "attach replays the log so far"
        assert isinstance(attached.result, p.JobComplete), attached.result
        assert not attached.result.stopped_early

    # bob (a member, not the owner) may watch but not cancel alice's jobs.
    async with (
        room.client("bob") as bob,
        await WorkerSession.open(bob, "lab", room.worker_id, transport="relay") as theirs,
    ):
        assert (await theirs.status(job.job_id)).owner == "alice"
        with pytest.raises(WorkerError) as denied:
            await theirs.cancel(job.job_id)
        assert denied.value.code == "FORBIDDEN"


async def test_a_channel_needs_a_valid_ticket_and_survives_garbage(
    room: Room, alice: ServerClient
) -> None:
    socket = await ServerSocket(
        alice.websocket_url("/v1/client"), await alice.access_token()
    ).connect()
    inbox: asyncio.Queue[dict] = asyncio.Queue()

    def open_channel() -> str:
        ch = new_channel_id()
        socket.subscribe(ch, lambda sender, payload: inbox.put_nowait(payload), lambda c, m: None)
        return ch

    async def send(ch: str, message: dict) -> None:
        await socket.relay("lab", room.worker_id, Data(ch=ch, msg=message).model_dump())

    async def reply() -> dict:
        payload = await asyncio.wait_for(inbox.get(), 15)
        return payload

    try:
        # No HELLO first: refused and closed, nothing listed.
        ch = open_channel()
        await socket.relay("lab", room.worker_id, Open(ch=ch, transport="relay").model_dump())
        await send(ch, {"type": "JOB_LIST", "v": 1})
        answer = await reply()
        assert answer["msg"]["type"] == "ERROR" and answer["msg"]["code"] == "UNAUTHORIZED"
        assert (await reply())["op"] == "close"

        # A forged ticket: refused.
        ch = open_channel()
        await socket.relay("lab", room.worker_id, Open(ch=ch, transport="relay").model_dump())
        await send(ch, {"type": "HELLO", "v": 1, "ticket": "eyJhbGciOiJub25lIn0.e30."})
        answer = await reply()
        assert answer["msg"]["code"] == "UNAUTHORIZED"
        assert (await reply())["op"] == "close"

        # A real ticket, then garbage: ERROR replies and the channel keeps serving.
        ticket = await alice.ticket("lab", room.worker_id)
        ch = open_channel()
        await socket.relay("lab", room.worker_id, Open(ch=ch, transport="relay").model_dump())
        await send(ch, {"type": "HELLO", "v": 1, "ticket": ticket.ticket})
        assert (await reply())["msg"]["type"] == "WELCOME"
        for bad, code in (
            ({"type": "JOB_EXPLODE", "v": 1}, "UNKNOWN_TYPE"),
            ({"type": "JOB_LIST", "v": 7}, "UNSUPPORTED_VERSION"),
            ({"type": "JOB_SUBMIT", "v": 1, "request_id": "r", "spec": {"kind": "nope"}}, None),
            ({"type": "JOB_LIST", "v": 1, "limit": 10**9}, "INVALID_MESSAGE"),
            ({"type": "JOB_CANCEL", "v": 1, "job_id": "../../etc"}, "INVALID_MESSAGE"),
        ):
            await send(ch, bad)
            msg = (await reply())["msg"]
            if code is None:
                assert msg["type"] == "JOB_REJECTED" and msg["errors"], msg
            else:
                assert (msg["type"], msg["code"]) == ("ERROR", code), (bad, msg)
        await send(ch, {"type": "PING", "v": 1, "request_id": "p1", "nonce": "still-here"})
        assert (await reply())["msg"] == {
            "type": "PONG",
            "v": 1,
            "request_id": "p1",
            "nonce": "still-here",
        }
    finally:
        await socket.close()
    # The worker is still online and serving.
    listed = room.users.json("alice", "rooms", "workers", "--room", "lab")
    assert listed[0]["status"] == "online"
    wait_for(lambda: room.worker.process.poll() is None, 1, "the worker to be alive")
    assert json.dumps(listed)


# -- the command line, as a user types it ------------------------------------------------------

ICE = {"SLEAP_RTC_ICE_HOSTS": "127.0.0.1"}


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_cli_train_then_track_over_the_relay(room: Room, demo_dir: Path) -> None:
    configs = [config(demo_dir, "centroid"), config(demo_dir, "centered_instance")]
    args = ["train", "--room", "lab", "--json", "--max-epochs", "3", "--run-name", "cli-td"]
    for path in configs:
        args += ["--config", path]
    result = room.users.run("alice", *args, timeout=600, **ICE)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = events(result.stdout)
    assert seen[0]["type"] == "JOB_ACCEPTED" and seen[0]["transport"] == "webrtc"
    assert seen[-1]["type"] == "JOB_COMPLETE"
    progress = [e["progress"] for e in seen if e["type"] == "JOB_PROGRESS" and "progress" in e]
    per_model: dict[int, list[int]] = {}
    for item in progress:
        per_model.setdefault(item["model_index"], []).append(item["epoch"])
    assert sorted(per_model) == [1, 2], "both models of the top-down pair trained"
    for epochs in per_model.values():
        assert epochs == sorted(epochs) and max(epochs) == 3
    models = seen[-1]["outputs"]
    assert len(models) == 2 and all((Path(m) / "best.ckpt").is_file() for m in models)

    output = demo_dir / "cli-topdown.slp"
    track = ["track", "--room", "lab", "--json", "--transport", "relay"]
    track += ["-d", str(demo_dir / "demo.pkg.slp"), "-o", str(output), "--frames", "0-4"]
    for model in models:
        track += ["-m", model]
    result = room.users.run("alice", *track, timeout=600, **ICE)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = events(result.stdout)
    assert seen[0]["transport"] == "relay" and seen[-1]["type"] == "JOB_COMPLETE"
    assert output.is_file()


def test_cli_rejection_prints_every_problem_and_exits_2(room: Room, demo_dir: Path) -> None:
    result = room.users.run(
        "alice",
        "train",
        "--room",
        "lab",
        "--config",
        str(demo_dir / "configs" / "nope.yaml"),
        "--labels",
        "/etc/labels.slp",
        **ICE,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    out = result.stdout
    assert "Job rejected by worker:" in out
    assert "- config_path: Path not found:" in out
    assert "- labels_path: Access denied:" in out


def test_cli_auto_select_and_min_gpu_memory(room: Room, tmp_path: Path, demo_dir: Path) -> None:
    key = room.users.json("alice", "keys", "create", "--room", "lab")["secret"]
    started = []
    try:
        for name, memory in (("gpu-small", 8000), ("gpu-big", 24000)):
            toml = tmp_path / f"{name}.toml"
            toml.write_text(
                f'[[gpus]]\nname = "Test GPU"\nmemory_total_mb = {memory}\n'
                f"memory_free_mb = {memory}\n"
            )
            worker = start_worker(
                tmp_path / name,
                room.server.url,
                key,
                "lab",
                name,
                demo_dir,
                "--worker-config",
                str(toml),
                env=ICE,
            )
            started.append(worker)
        for worker in started:
            worker.wait_line(r"online in room lab", timeout=90)
        bad = ["--config", str(demo_dir / "configs" / "nope.yaml")]
        result = room.users.run(
            "alice", "train", "--room", "lab", "--auto-select", "--json", *bad, **ICE
        )
        assert result.returncode == 2
        rejected = events(result.stdout)[-1]
        listed = {
            w["name"]: w["id"]
            for w in room.users.json("alice", "rooms", "workers", "--room", "lab")
        }
        assert rejected["type"] == "JOB_REJECTED" and rejected["worker_id"] == listed["gpu-big"]

        result = room.users.run(
            "alice",
            "train",
            "--room",
            "lab",
            "--auto-select",
            "--min-gpu-memory",
            "32000",
            *bad,
            **ICE,
        )
        assert result.returncode == 2
        assert "no online worker in room lab has 32,000 MB of free GPU memory" in result.stderr
        assert "24,000 MB free on gpu-big" in result.stderr

        # Several fit and nothing says which: without a terminal that is an error.
        result = room.users.run("alice", "train", "--room", "lab", *bad, **ICE)
        assert result.returncode == 2 and "pass --worker-id or --auto-select" in result.stderr
    finally:
        for worker in started:
            worker.stop()


def test_cli_killed_mid_training_then_jobs_attach_follows(room: Room, demo_dir: Path) -> None:
    argv = [
        sys.executable,
        "-m",
        "sleap_rtc",
        "train",
        "--room",
        "lab",
        "--json",
        "--worker-id",
        room.worker_id,
        "--config",
        config(demo_dir),
        "--max-epochs",
        "4",
    ]
    client = Proc(argv, cli_env(room.users.home("alice"), **ICE), "train client")
    try:
        job_id = json.loads(client.wait_line(r'"JOB_ACCEPTED"', timeout=120).string)["job_id"]
        client.wait_line(r'"progress"', timeout=180)
        client.signal(signal.SIGKILL)
    finally:
        client.stop()
    result = room.users.run("alice", "jobs", "attach", job_id, "--room", "lab", "--json", **ICE)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = events(result.stdout)
    assert seen[0]["type"] == "JOB_PROGRESS" and seen[0]["replay"] is True and seen[0]["lines"]
    assert seen[-1]["type"] == "JOB_COMPLETE" and seen[-1]["job_id"] == job_id
    status = room.users.json("alice", "jobs", "status", job_id, "--room", "lab")
    assert status["state"] == "COMPLETE" and status["owner"] == "alice"
    listed = room.users.json("alice", "jobs", "list", "--room", "lab")
    assert job_id in {j["job_id"] for j in listed}
    logs = room.users.run("alice", "jobs", "logs", job_id, "--room", "lab", "--tail", "5", **ICE)
    assert logs.returncode == 0 and 0 < len(logs.stdout.splitlines()) <= 5


def test_cli_pkg_path_uploads_trains_and_downloads(
    room: Room, demo_dir: Path, tmp_path: Path
) -> None:
    package = tmp_path / "training_package.zip"
    with zipfile.ZipFile(package, "w") as zf:
        zf.write(demo_dir / "configs" / "single_instance.yaml", "config.yaml")
        zf.write(demo_dir / "demo.pkg.slp", "labels.pkg.slp")
    local = tmp_path / "downloads"
    result = room.users.run(
        "alice",
        "train",
        "--room",
        "lab",
        "--pkg-path",
        str(package),
        "--max-epochs",
        "2",
        "--transport",
        "relay",
        "--download",
        str(local),
        "--json",
        timeout=600,
        **ICE,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--pkg-path is deprecated" in result.stderr
    assert "--config /shared/project/config.yaml" in result.stderr
    seen = events(result.stdout)
    complete = next(e for e in seen if e["type"] == "JOB_COMPLETE")
    downloaded = [e for e in seen if e["type"] == "DOWNLOADED"]
    assert [d["remote"] for d in downloaded] == complete["outputs"]
    model = Path(downloaded[0]["local"])
    assert model.parent == local and (model / "best.ckpt").is_file()
    remote_ckpt = Path(complete["outputs"][0]) / "best.ckpt"
    assert (model / "best.ckpt").read_bytes() == remote_ckpt.read_bytes()

    # The same download again refuses to overwrite what is there.
    async def again() -> None:
        async with (
            room.client() as client,
            await WorkerSession.open(client, "lab", room.worker_id) as session,
        ):
            with pytest.raises(ClientError, match="exists already"):
                await session.download(complete["outputs"][0], local)
            with pytest.raises(WorkerError) as denied:
                await session.download("/etc/passwd", local)
            assert denied.value.code == "ACCESS_DENIED"

    asyncio.run(again())


async def test_oversize_and_binary_frames_on_a_webrtc_channel(
    room: Room, alice: ServerClient
) -> None:
    async with await WorkerSession.open(alice, "lab", room.worker_id, transport="webrtc") as s:
        await s.channel.send("x" * (200 * 1024))  # one 200 KiB message, over the limit
        reply = await asyncio.wait_for(s.stray_errors.get(), 30)
        assert isinstance(reply, p.Error) and reply.code == "MESSAGE_TOO_LARGE"
        await s.channel.send(json.dumps({"type": "PING", "v": 1, "pad": "x"}))
        reply = await asyncio.wait_for(s.stray_errors.get(), 30)
        assert isinstance(reply, p.Error) and reply.code == "INVALID_MESSAGE"
        await s.ping()  # the channel still serves
        assert (await s.jobs(limit=1)) is not None


def test_cli_ctrl_c_without_a_terminal_cancels_the_job(room: Room, demo_dir: Path) -> None:
    argv = [
        sys.executable,
        "-m",
        "sleap_rtc",
        "train",
        "--room",
        "lab",
        "--json",
        "--worker-id",
        room.worker_id,
        "--config",
        config(demo_dir),
        "--max-epochs",
        "50",
    ]
    client = Proc(argv, cli_env(room.users.home("alice"), **ICE), "train client")
    try:
        job_id = json.loads(client.wait_line(r'"JOB_ACCEPTED"', timeout=120).string)["job_id"]
        client.wait_line(r'"progress"', timeout=180)
        client.signal(signal.SIGINT)
        assert client.process.wait(timeout=60) == 130, client.output()
    finally:
        client.stop()
    status = room.users.json("alice", "jobs", "status", job_id, "--room", "lab")
    assert status["state"] == "CANCELLED"
    assert json.loads(client.stdout[-1])["type"] == "JOB_FAILED"


async def test_file_service_over_the_channel_stays_inside_the_mounts(
    room: Room, alice: ServerClient, demo_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "single_instance.yaml").write_text("secret: 1\n")
    link = room.data / "link-out"
    link.symlink_to(outside)
    try:
        async with await WorkerSession.open(alice, "lab", room.worker_id, transport="relay") as s:
            labels = {m.label for m in await s.fs_mounts()}
            assert {"data", "models", "uploads"} <= labels
            page = await s.fs_list(str(demo_dir), pattern="*.slp")
            names = [(e.name, e.kind) for e in page.entries]
            assert ("configs", "dir") in names and ("demo.pkg.slp", "file") in names
            assert all(kind == "dir" or name.endswith(".slp") for name, kind in names)
            top = await s.fs_list(str(room.data))
            assert "link-out" not in {e.name for e in top.entries}
            found = await s.fs_find("single_instance.yaml")
            paths = [m.entry.path for m in found.matches]
            assert paths[0] == str(demo_dir / "configs" / "single_instance.yaml")
            assert not any(str(outside) in path or "link-out" in path for path in paths)
            for attempt in (
                s.fs_list(str(link)),
                s.fs_stat(str(link / "single_instance.yaml")),
                s.fs_list("/etc"),
            ):
                with pytest.raises(WorkerError) as denied:
                    await attempt
                assert denied.value.code == "ACCESS_DENIED"
                assert "Access denied: outside the worker's mounts" in denied.value.message
            with pytest.raises(WorkerError) as broad:
                await s.fs_find("*.*")
            assert broad.value.code == "PATTERN_TOO_BROAD"
    finally:
        link.unlink()
