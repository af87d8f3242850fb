"""The dashboard's pure parts: the event log and its resume rules, the session cookie's
CSRF and origin checks, the command line a job is shown with, the log tail a worker
reports and the server keeps, and the worker's answer to a stop/cancel from the server."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from starlette.requests import Request

from sleap_rtc.engine.backends.local.backend import LocalBackend
from sleap_rtc.jobs.commandline import command_line, option_args
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.jobs.states import JobState
from sleap_rtc.protocol.index import LogLine
from sleap_rtc.protocol.signaling import JobControl
from sleap_rtc.server import websession
from sleap_rtc.server.events import EventBus, Reset, StreamLimit
from sleap_rtc.server.service.jobindex import merge_log
from sleap_rtc.worker.config import MountConfig, WorkerConfig
from sleap_rtc.worker.control import answer_server
from sleap_rtc.worker.runner import JobRunner
from sleap_rtc.worker.store import JobStore, LogPosition
from tests.configs import MODEL_CONFIG
from tests.labels import write_labels

# -- the event log ------------------------------------------------------------------------


async def test_a_stream_gets_what_came_after_its_id_and_resumes_without_gaps() -> None:
    bus = EventBus(keep=10)
    bus.publish("r1", "job", {"n": 1})
    start = bus.last_id("r1")
    stream = bus.open("r1", start, "s1")
    bus.publish("r1", "job", {"n": 2})
    bus.publish("r2", "job", {"other": True})  # another room's
    bus.publish("r1", "points", {"n": 3}, ("w", "j"))
    got = await stream.next(1.0)
    assert [e.data for e in got] == [{"n": 2}, {"n": 3}]
    assert got[1].job == ("w", "j") and got[1].text == '{"n":3}'
    seen = stream.event_id(got[0])
    stream.close()

    again = bus.open("r1", seen, "s1")  # as a reconnect with Last-Event-ID does
    assert [e.data for e in await again.next(1.0)] == [{"n": 3}]
    assert await again.next(0.05) == []  # nothing new: back after the timeout


async def test_a_waiting_stream_wakes_on_publish() -> None:
    bus = EventBus()
    stream = bus.open("r", None, "s")
    waiting = asyncio.create_task(stream.next(10.0))
    await asyncio.sleep(0.05)
    bus.publish("r", "worker", {"id": "w"})
    assert [e.name for e in await asyncio.wait_for(waiting, 2)] == ["worker"]


def test_ids_that_cant_be_resumed_from_reset() -> None:
    bus = EventBus(keep=3)
    for n in range(5):
        bus.publish("r", "job", {"n": n})
    with pytest.raises(Reset):
        bus.open("r", bus.event_id(1), "s")  # events after it were dropped
    with pytest.raises(Reset):
        bus.open("r", "other-2", "s")  # another server start
    with pytest.raises(Reset):
        bus.open("r", bus.event_id(99), "s")  # from the future
    with pytest.raises(Reset):
        bus.open("r", f"{bus.epoch}-x", "s")
    assert bus.open("r", bus.event_id(2), "s").seq == 2  # the oldest still kept follows it


async def test_logging_out_ends_the_sessions_streams_and_their_number_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sleap_rtc.server import events

    monkeypatch.setattr(events, "MAX_STREAMS_PER_SESSION", 2)
    bus = EventBus()
    first, second = bus.open("r", None, "s"), bus.open("r", None, "s")
    with pytest.raises(StreamLimit):
        bus.open("r", None, "s")
    other = bus.open("r", None, "t")
    waiting = asyncio.create_task(first.next(10.0))
    assert bus.end_session("s") == 2
    assert await asyncio.wait_for(waiting, 2) == []
    assert first.ended.is_set() and second.ended.is_set() and not other.ended.is_set()
    for stream in (first, second, other):
        stream.close()
    assert bus.open_streams == 0


# -- the session cookie ---------------------------------------------------------------------


def _request(method: str, headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in {"host": "lab:8000", **headers}.items()]
    return Request(
        {"type": "http", "method": method, "path": "/", "headers": raw, "scheme": "http"}
    )


def test_changes_need_the_csrf_token_and_no_request_may_come_from_another_site() -> None:
    claims = websession.WebClaims(access=None, csrf_token="tok")  # type: ignore[arg-type]
    assert websession.check_request(_request("GET", {}), claims) is None
    assert websession.check_request(_request("POST", {"x-csrf-token": "tok"}), claims) is None
    for headers in ({}, {"x-csrf-token": "wrong"}, {"x-csrf-token": ""}):
        refused = websession.check_request(_request("POST", headers), claims)
        assert refused is not None and "X-CSRF-Token" in refused
    same = {"x-csrf-token": "tok", "origin": "https://lab:8000"}  # a TLS proxy in front
    assert websession.check_request(_request("DELETE", same), claims) is None
    for method in ("GET", "POST"):
        evil = {"x-csrf-token": "tok", "origin": "http://evil.example"}
        assert "another site" in str(websession.check_request(_request(method, evil), claims))


def test_a_session_cookie_names_its_login_session_and_csrf_token() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sleap_rtc.server.auth import AuthError, TokenSigner
    from sleap_rtc.server.models import User

    signer = TokenSigner("k1", Ed25519PrivateKey.generate(), "test")
    user = User(id=7, username="alice", is_admin=False)
    token, csrf, _ = websession.issue(signer, user, "s-abc", timedelta(hours=1))
    claims = websession.verify(signer, token)
    assert claims.csrf_token == csrf and claims.access.session_id == "s-abc"
    assert claims.access.username == "alice" and claims.access.user_id == 7
    access, _ = signer.issue_access(user, "s-abc", timedelta(hours=1))
    with pytest.raises(AuthError):
        websession.verify(signer, access)  # a CLI token is no cookie
    with pytest.raises(AuthError):
        signer.verify_access(token)  # nor a cookie a CLI token


# -- the command that reruns a job ----------------------------------------------------------


def test_a_jobs_options_become_the_flags_that_ask_for_it_again() -> None:
    spec = TrainSpec(
        config_paths=["/data/a b.yaml", "/data/c.yaml"],
        max_epochs=5,
        path_map=[("C:/lab", "/data/lab")],
        notify=False,
        wandb=False,
    )
    assert option_args(spec.model_dump()) == [
        "--config",
        "/data/a b.yaml",
        "--config",
        "/data/c.yaml",
        "--path-map",
        "C:/lab",
        "/data/lab",
        "--max-epochs",
        "5",
        "--no-notify",
    ]
    track = TrackSpec(data_path="/d/v.mp4", model_paths=["/m"], tracking=True, max_tracks=2)
    args = option_args(track.model_dump())
    assert "--tracking" in args and "--max-tracks" in args and "--output-path" not in args
    line = command_line("train", "lab", "gpu 1", option_args(spec.model_dump()))
    assert line.startswith(
        "sleap-rtc train --room lab --worker-id 'gpu 1' --config '/data/a b.yaml'"
    )


# -- the log tail ---------------------------------------------------------------------------


def test_the_log_is_followed_by_offset_and_a_partial_line_waits(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.create("j", "train", {}, JobState.QUEUED)
    for n in range(1, 6):
        store.append_log("j", f"line {n}")
    lines, at = store.log_since("j", None, limit=3)
    assert lines == [(3, "line 3"), (4, "line 4"), (5, "line 5")]
    assert at.lines == 5
    with open(store.log_path("j"), "a", encoding="utf-8") as handle:
        handle.write("half a li")
    store.append_log("j", "ne")  # completes it
    store.append_log("j", "line 7")
    lines, later = store.log_since("j", at, limit=100)
    assert lines == [(6, "half a line"), (7, "line 7")]
    assert store.log_since("j", later, limit=100) == ([], later)
    assert store.log_since("missing", None, limit=5) == ([], LogPosition())
    store.close()


def test_the_index_keeps_the_newest_lines_in_order_and_a_repeat_replaces() -> None:
    tail = merge_log([], [LogLine(n=n, text=f"l{n}") for n in (3, 1, 2)])
    assert tail == [[1, "l1"], [2, "l2"], [3, "l3"]]
    tail = merge_log(tail, [LogLine(n=3, text="again"), LogLine(n=500, text="far")])
    assert tail[-2:] == [[3, "again"], [500, "far"]]
    big = merge_log([], [LogLine(n=n, text="x") for n in range(1, 101)])
    big = merge_log(big, [LogLine(n=n, text="y") for n in range(101, 301)])
    assert len(big) == 200 and big[0][0] == 101 and big[-1][0] == 300


# -- the worker's answer to the server's stop/cancel ----------------------------------------


async def test_the_worker_answers_a_stop_or_cancel_from_its_own_record(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    config_yaml = (
        "data_config:\n  train_labels_path: [l.slp]\n" + MODEL_CONFIG + "trainer_config: {}\n"
    )
    (tmp_path / "m" / "c.yaml").write_text(config_yaml)
    write_labels(tmp_path / "m" / "l.slp")
    config = WorkerConfig(
        mounts=[MountConfig(path=str(tmp_path / "m"))],
        models_dir=tmp_path / "models",
        state_dir=tmp_path / "state",
        sleap_nn_command=[sys.executable, "-c", "import time; time.sleep(120)"],
        cancel_grace_s=2.0,
        max_concurrent_jobs=1,
    )
    runner = JobRunner(config, LocalBackend(cancel_grace_s=2.0))
    spec = TrainSpec(config_paths=[str(tmp_path / "m" / "c.yaml")])
    try:
        running = runner.submit(spec, owner="alice")
        queued = runner.submit(spec, owner="alice")

        def ask(job_id: str, action: str, user: str) -> JobControl:
            return JobControl(request_id="r1", job_id=job_id, action=action, user=user)  # type: ignore[arg-type]

        refused = await answer_server(runner, ask(queued.id, "cancel", "mallory"))
        assert not refused.ok and refused.code == "FORBIDDEN" and "alice" in refused.message
        missing = await answer_server(runner, ask("nope", "cancel", "alice"))
        assert missing.code == "NO_SUCH_JOB"

        done = await answer_server(runner, ask(queued.id, "cancel", "alice"))
        assert done.ok and done.request_id == "r1", done
        assert runner.store.get(queued.id).state.value == "CANCELLED"  # type: ignore[union-attr]
        again = await answer_server(runner, ask(queued.id, "cancel", "alice"))
        assert not again.ok and again.code == "JOB_FINISHED"
        assert runner.store.get(running.id).state.value in ("QUEUED", "RUNNING")  # type: ignore[union-attr]
    finally:
        await runner.close()


def test_the_cookie_is_secure_over_https_or_when_told() -> None:
    from sleap_rtc.server.settings import ServerSettings

    def request(scheme: str) -> Request:
        headers = [(b"host", b"lab:8000")]
        return Request(
            {"type": "http", "method": "GET", "path": "/", "headers": headers, "scheme": scheme}
        )

    auto = ServerSettings(database_url="sqlite://")
    assert websession.secure(request("https"), auto) and not websession.secure(
        request("http"), auto
    )
    always = ServerSettings(database_url="sqlite://", cookie_secure=True)
    assert websession.secure(request("http"), always)
    never = ServerSettings(database_url="sqlite://", cookie_secure=False)
    assert not websession.secure(request("https"), never)
