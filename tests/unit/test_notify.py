"""Notifications by webhook: who hears of what, the address check, the message, the API's
checks and the sender against a real HTTP receiver, each without a worker."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("sqlalchemy", reason="the server extra")

from pydantic import ValidationError

from sleap_rtc.jobs.results import StepResult
from sleap_rtc.protocol import api
from sleap_rtc.protocol import index as ix
from sleap_rtc.server import db
from sleap_rtc.server.app import create_app
from sleap_rtc.server.notify import (
    JobEvent,
    Notifier,
    RoomRef,
    WorkerRef,
    announced,
    message_text,
    payload,
    pinned,
    recipients,
    refusal,
)
from sleap_rtc.server.service import accounts
from sleap_rtc.server.service.jobindex import Recorded
from sleap_rtc.server.service.webhooks import Hook, JobHooks, hooks_for_job, set_hook
from sleap_rtc.server.settings import ServerSettings
from tests.hooks import SECRET_PATH, Receiver, receiver

PASSWORD = "correct horse battery"
MINE = Hook("user", "alice", "https://hooks.example.org/alice", on_start=False)
ROOMS = Hook("room", "lab", "https://hooks.example.org/lab", on_start=True)


def job(state: str = "COMPLETE", **fields: Any) -> ix.IndexedJob:
    now = time.time()
    base: dict[str, Any] = {
        "job_id": "3f9a1c2b",
        "kind": "train",
        "owner": "alice",
        "state": state,
        "created_at": now - 90,
        "updated_at": now,
    }
    return ix.IndexedJob.model_validate({**base, **fields})


# ------------------------------------------------------------------------ who hears what


def test_a_job_that_ends_goes_to_its_owner_and_the_room() -> None:
    hooks = JobHooks(MINE, True, ROOMS)
    for state in ("COMPLETE", "FAILED", "CANCELLED"):
        assert recipients(job(state), hooks) == [MINE, ROOMS]
        assert recipients(job(state, notify=True), hooks) == [MINE, ROOMS]
    assert recipients(job(), JobHooks(MINE, True, None)) == [MINE]
    assert recipients(job(), JobHooks(None, False, ROOMS)) == [ROOMS]


def test_an_owner_outside_the_room_hears_nothing_but_the_room_does() -> None:
    assert recipients(job(), JobHooks(MINE, False, ROOMS)) == [ROOMS]
    assert recipients(job(), JobHooks(MINE, False, None)) == []


def test_no_notify_silences_every_hook_of_the_job() -> None:
    assert recipients(job(notify=False), JobHooks(MINE, True, ROOMS)) == []
    assert recipients(job("RUNNING", notify=False), JobHooks(MINE, True, ROOMS)) == []


def test_a_start_goes_only_to_hooks_that_asked_for_starts() -> None:
    hooks = JobHooks(MINE, True, ROOMS)
    assert recipients(job("RUNNING"), hooks) == [ROOMS]
    assert recipients(job("QUEUED"), hooks) == []
    assert recipients(job("REJECTED"), hooks) == []


def test_one_post_per_address() -> None:
    same = Hook("room", "lab", MINE.url, on_start=False)
    assert recipients(job(), JobHooks(MINE, True, same)) == [MINE]


def test_which_changes_are_announced() -> None:
    assert announced("RUNNING", job("COMPLETE"))
    assert announced("QUEUED", job("RUNNING"))
    assert announced(None, job("RUNNING"))
    assert not announced("COMPLETE", job("COMPLETE"))
    assert not announced(None, job("QUEUED"))
    assert not announced("QUEUED", job("REJECTED"))
    # A job first heard of when it had ended already: only if that was recent.
    assert announced(None, job("COMPLETE"))
    old = job("COMPLETE", updated_at=time.time() - 2 * 86400, created_at=0)
    assert not announced(None, old)
    assert announced("RUNNING", old)


# ------------------------------------------------------------------------- the addresses


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.10.0.5", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.10", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
        ("0.0.0.0", "not a unicast"),
        ("224.0.0.1", "not a unicast"),
        ("100.64.0.1", "not a public"),
    ],
)
def test_addresses_inside_a_network_are_refused(address: str, why: str) -> None:
    reason = refusal(address)
    assert reason is not None and why in reason and address in reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(address) is None


def test_the_post_goes_to_the_checked_address_under_the_hosts_name() -> None:
    target = pinned("https://hooks.slack.com/services/T/B/X?a=1", "203.0.113.7")
    assert target.url == "https://203.0.113.7/services/T/B/X?a=1"
    assert target.host == "hooks.slack.com" and target.sni == "hooks.slack.com"
    v6 = pinned("http://user:pw@chat.lab:8065/hooks/x", "2001:db8::5")
    assert v6.url == "http://user:pw@[2001:db8::5]:8065/hooks/x"
    assert v6.host == "chat.lab:8065" and v6.sni is None
    assert pinned("https://198.51.100.4/x", "198.51.100.4").sni is None


# --------------------------------------------------------------------------- the message


def _event(j: ix.IndexedJob) -> JobEvent:
    return JobEvent(RoomRef("r1", "lab"), WorkerRef("worker-47", "lab-gpu-1"), j)


def test_the_line_names_job_kind_state_owner_worker_time_and_loss() -> None:
    results = [
        StepResult(output="/m/a", best_val_loss=0.0312),
        StepResult(output="/m/b", best_val_loss=0.01234),
    ]
    text = message_text(_event(job(elapsed_s=83.4, results=results)))
    assert text == (
        "sleap-rtc: train job 3f9a1c2b COMPLETE in 0:01:23 "
        "(owner alice, worker lab-gpu-1, room lab), best val loss 0.01234"
    )
    failed = message_text(_event(job("FAILED", elapsed_s=5, reason="sleap-nn exited 1 <oom>")))
    assert "FAILED after 0:00:05" in failed and failed.endswith(": sleap-nn exited 1 &lt;oom&gt;")
    started = message_text(_event(job("RUNNING", kind="track", owner=None)))
    assert (
        started
        == "sleap-rtc: track job 3f9a1c2b RUNNING (owner unknown, worker lab-gpu-1, room lab)"
    )


def test_the_body_is_slack_text_plus_the_record() -> None:
    body = payload(_event(job(elapsed_s=2.0, outputs=["/m/a"])))
    assert set(body) == {"text", "sleap_rtc"}
    record = body["sleap_rtc"]
    assert {k: record[k] for k in ("job_id", "room", "worker", "state", "kind", "owner")} == {
        "job_id": "3f9a1c2b",
        "room": "lab",
        "worker": "lab-gpu-1",
        "state": "COMPLETE",
        "kind": "train",
        "owner": "alice",
    }
    assert record["elapsed_s"] == 2.0 and record["outputs"] == ["/m/a"] and record["results"] == []


# -------------------------------------------------------------------- the URL's checks


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("ftp://hooks.example.org/x", "must start with https://"),
        ("hooks.slack.com/services/x", "must start with https://"),
        ("https:///services/x", "names no host"),
        ("https://hooks.example.org/a b", "spaces"),
        ("", "url is empty"),
        ("https://hooks.example.org:99999/x", "not a URL"),
        ("https://hooks.example.org/" + "x" * 2100, "at most 2048"),
    ],
)
def test_a_bad_webhook_url_is_refused_naming_field_value_and_fix(url: str, said: str) -> None:
    with pytest.raises(ValidationError) as info:
        api.SetWebhook(url=url)
    message = str(info.value.errors()[0]["msg"])
    assert said in message and "url" in message
    assert url[41:] == "" or url[41:] not in message  # the rest of a secret is not echoed
    if url:
        assert repr(url[:10])[:-1] in message
    api.check_webhook_url("https://hooks.slack.com/services/T000/B000/XXXX")
    api.check_webhook_url("http://10.0.0.5:8065/hooks/abc")


def test_the_hint_never_shows_path_or_user_info() -> None:
    assert (
        api.webhook_hint("https://u:pw@Hooks.Slack.com/services/T/B/X") == "https://hooks.slack.com"
    )
    assert api.webhook_hint("http://[::1]:8080/x") == "http://[::1]:8080"


# ------------------------------------------------------------------- the sender, for real


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as opened:
        yield opened


@pytest.fixture
def database(tmp_path: Path) -> Iterator[db.Database]:
    engine = db.create_engine(db.sqlite_url(tmp_path))
    db.upgrade(engine)
    yield db.Database(engine, db.session_factory(engine))
    engine.dispose()


async def test_a_failing_hook_is_retried_until_it_takes_the_post(
    hook: Receiver, database: db.Database, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(database, allow_private=True, backoff_s=0.05)
    hook.statuses = [500, 503]
    caplog.set_level(logging.INFO)  # httpx logs each request at INFO
    try:
        outcome = await notifier.post(hook.url, {"text": "hi"}, "a test")
    finally:
        await notifier.stop()
    assert outcome.delivered and outcome.status == 200 and outcome.attempts == 3
    assert [p.status for p in hook.posts] == [500, 503, 200]
    assert hook.posts[-1].headers["host"] == f"127.0.0.1:{hook.port}"
    assert "HTTP Request: POST" in caplog.text and f"http://127.0.0.1:{hook.port}" in caplog.text
    assert SECRET_PATH not in caplog.text


async def test_a_hook_that_refuses_is_not_retried(hook: Receiver, database: db.Database) -> None:
    notifier = Notifier(database, allow_private=True, backoff_s=0.05)
    hook.statuses = [404]
    outcome = await notifier.post(hook.url, {"text": "hi"}, "a test")
    await notifier.stop()
    assert not outcome.delivered and outcome.status == 404 and outcome.attempts == 1
    assert "check the webhook URL" in outcome.message and SECRET_PATH not in outcome.message


async def test_a_private_address_is_refused_unless_allowed(
    hook: Receiver, database: db.Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "sleap_rtc.server")
    notifier = Notifier(database)
    outcome = await notifier.post(hook.url, {"text": "hi"}, "a test")
    await notifier.stop()
    assert not outcome.delivered and outcome.attempts == 0 and hook.posts == []
    assert "127.0.0.1 is a loopback address" in outcome.message
    assert "--allow-private-webhooks" in caplog.text and SECRET_PATH not in caplog.text
    allowing = Notifier(database, allow_private=True, backoff_s=0.05)
    gone = await allowing.post("http://127.0.0.1:9/nothing-listens", {}, "a test")
    await allowing.stop()
    assert not gone.delivered and gone.attempts == 3 and "could not be reached" in gone.message


async def test_job_changes_are_queued_and_sent_to_the_hooks_of_the_db(
    hook: Receiver, database: db.Database
) -> None:
    def seed(session: Any) -> None:
        from sleap_rtc.server.models import Membership, Room

        alice = accounts.create_user(session, "alice", PASSWORD)
        accounts.create_user(session, "carol", PASSWORD)
        session.add(Room(id="r1", name="lab", created_by=alice.id))
        session.flush()
        session.add(Membership(room_id="r1", user_id=alice.id, role="owner"))
        session.commit()
        set_hook(session, hook.url + "/alice", False, user_id=alice.id)

    await database.run(seed)
    found = await database.run(hooks_for_job, "r1", "alice")
    assert found.owner is not None and found.owner_is_member and found.room is None
    stranger = await database.run(hooks_for_job, "r1", "carol")
    assert stranger == JobHooks(None, False, None)

    notifier = Notifier(database, allow_private=True, backoff_s=0.05)
    await notifier.start()
    try:
        room, worker = RoomRef("r1", "lab"), WorkerRef("w1", "lab-cpu")
        notifier.job_changed(room, worker, Recorded("QUEUED", job("RUNNING"), changed=True))
        notifier.job_changed(room, worker, Recorded("RUNNING", job(), changed=True))
        notifier.job_changed(room, worker, Recorded("COMPLETE", job(), changed=False))
        notifier.job_changed(room, worker, Recorded("RUNNING", job(notify=False), changed=True))
        notifier.job_changed(room, worker, Recorded("RUNNING", job(owner="carol"), changed=True))
        await notifier._queue.join()
    finally:
        await notifier.stop()
    (only,) = hook.wait(1, 5)
    assert only.path == SECRET_PATH + "/alice"
    assert only.body["sleap_rtc"]["state"] == "COMPLETE" and "COMPLETE" in only.body["text"]


# ------------------------------------------------------------------------ the HTTP API


@pytest.fixture
async def app_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = ServerSettings(database_url=db.sqlite_url(tmp_path))
    app = create_app(settings)
    state = app.state.server
    with state.database.sessions() as session:
        for name in ("alice", "bob"):
            accounts.create_user(session, name, PASSWORD)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
        yield client
    await state.notifier.stop()
    state.database.engine.dispose()


async def _login(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    answer = await client.post("/v1/auth/login", json={"username": name, "password": PASSWORD})
    return {"authorization": f"Bearer {answer.json()['access_token']}"}


async def test_the_api_sets_shows_and_removes_hooks_without_ever_showing_a_url(
    app_client: httpx.AsyncClient,
) -> None:
    alice, bob = await _login(app_client, "alice"), await _login(app_client, "bob")
    secret = "https://hooks.slack.com/services/T000/B000/very-secret-token"
    await app_client.post("/v1/rooms", json={"name": "lab"}, headers=alice)
    code = (await app_client.post("/v1/rooms/lab/invites", json={}, headers=alice)).json()["code"]
    await app_client.post("/v1/invites/accept", json={"code": code}, headers=bob)
    answers: list[httpx.Response] = []

    async def call(method: str, path: str, who: dict[str, str], **kw: Any) -> httpx.Response:
        answers.append(await app_client.request(method, path, headers=who, **kw))
        return answers[-1]

    mine = await call("PUT", "/v1/me/webhook", bob, json={"url": secret, "on_start": True})
    assert mine.status_code == 200, mine.text
    assert mine.json() | {"created_at": None} == {
        "scope": "user",
        "name": "bob",
        "set": True,
        "on_start": True,
        "hint": "https://hooks.slack.com",
        "created_at": None,
    }
    assert (await call("GET", "/v1/me/webhook", alice)).json()["set"] is False
    assert (await call("GET", "/v1/me/webhook", bob)).json()["hint"] == "https://hooks.slack.com"

    room_hook = {"url": secret + "-room"}
    refused = await call("PUT", "/v1/rooms/lab/webhook", bob, json=room_hook)
    assert refused.status_code == 403 and "only an owner" in refused.text
    assert (await call("PUT", "/v1/rooms/lab/webhook", alice, json=room_hook)).status_code == 200
    seen = (await call("GET", "/v1/rooms/lab/webhook", bob)).json()
    assert seen["set"] is True and seen["hint"] is None
    assert (await call("GET", "/v1/rooms/lab/webhook", alice)).json()["hint"]
    assert (await call("DELETE", "/v1/rooms/lab/webhook", bob)).status_code == 403
    assert (await call("POST", "/v1/rooms/lab/webhook/test", bob)).status_code == 403

    bad = await call("PUT", "/v1/me/webhook", alice, json={"url": "ftp://example.org/" + "x" * 80})
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert error["code"] == "INVALID" and error["message"].startswith("url: ")
    assert "must start with https://" in error["message"] and "x" * 60 not in error["message"]

    assert (await call("DELETE", "/v1/me/webhook", bob)).status_code == 204
    gone = await call("DELETE", "/v1/me/webhook", bob)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "NO_WEBHOOK"
    untested = await call("POST", "/v1/me/webhook/test", bob)
    assert untested.status_code == 404 and "sleap-rtc notify set" in untested.text
    assert (await call("DELETE", "/v1/rooms/lab/webhook", alice)).status_code == 204
    assert all("very-secret-token" not in a.text for a in answers)


# ------------------------------------------------------------------- the job option


def test_notify_is_a_job_option_that_never_reaches_sleap_nn() -> None:
    from click.testing import CliRunner

    from sleap_rtc.cli import cli
    from sleap_rtc.engine.commands import track_option_args
    from sleap_rtc.jobs.options import JobKind, option
    from sleap_rtc.jobs.specs import TrackSpec, TrainSpec

    kinds: tuple[JobKind, ...] = ("train", "track")
    for kind in kinds:
        entry = option(kind, "notify")
        assert entry.negatable and entry.remote_only and not entry.sleap_nn and not entry.job_file
    spec = TrackSpec(data_path="/d.slp", model_paths=["/m"], notify=True)
    assert not [a for a in track_option_args(spec) if "notify" in a]
    assert TrainSpec(config_paths=["/c.yaml"]).notify is None
    runner = CliRunner()
    assert "--notify / --no-notify" in runner.invoke(cli, ["train", "--help"]).output
    assert "--no-notify" in runner.invoke(cli, ["track", "--help"]).output
    assert "notify" not in runner.invoke(cli, ["local", "train", "--help"]).output


def test_config_toml_notify_table() -> None:
    from sleap_rtc.client.config import ConfigError, config_path, notify_settings

    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    assert notify_settings().webhook is None
    path.write_text('[notify]\nwebhook = " https://hooks.slack.com/x "\non_start = true\n')
    settings = notify_settings()
    assert settings.webhook == "https://hooks.slack.com/x" and settings.on_start is True
    path.write_text('[notify]\nwebhook = "https://h/x"\non_start = "yes"\n')
    with pytest.raises(ConfigError, match=r"notify.on_start .* must be true or false"):
        notify_settings()
    path.write_text('[notify]\nwebhok = "https://h/x"\n')
    with pytest.raises(ConfigError, match="unknown keys webhok"):
        notify_settings()
