"""The web dashboard in a real browser, against a real server and a real worker that
trains with real sleap-nn: log in, watch the worker and the loss curve live, stop
the job early from the page, log out; and what other members and strangers get."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import chromium
from tests.servers import PASSWORD, Proc, Room, cli_env, ok, open_room

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("loopback_candidates")]

ICE = {"SLEAP_RTC_ICE_HOSTS": "127.0.0.1"}


@pytest.fixture(scope="module")
def room(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    with open_room(tmp_path_factory.mktemp("dashboard"), demo_root) as opened:
        opened.users.add("carol")  # not in the room
        yield opened


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium")) as opened:
        yield opened


@pytest.fixture(scope="module")
def training(room: Room, demo_dir: Path) -> Iterator[tuple[str, Proc]]:
    """alice's training job, long enough to watch (it is stopped early by the test)."""
    argv = [sys.executable, "-m", "sleap_rtc", "train", "--room", "lab"]
    argv += ["--config", str(demo_dir / "configs" / "single_instance.yaml")]
    argv += ["--max-epochs", "300", "--run-name", "watched"]
    proc = Proc(argv, cli_env(room.users.home("alice"), **ICE), "alice train")
    try:
        job_id = proc.wait_line(r"job (\w+) accepted by lab-cpu", timeout=300).group(1)
        yield job_id, proc
    finally:
        proc.stop()


def log_in(browser: Any, base: str, user: str, next_path: str = "/") -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{base}/login?next={next_path}")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(re.escape(base + next_path) + r"(\?.*)?$"))
    return page


def points_on(page: Any) -> int:
    return int(page.locator("#loss-chart").get_attribute("data-points") or 0)


def test_the_owner_watches_training_live_stops_it_and_logs_out(
    room: Room, browser: Any, training: tuple[str, Proc], tmp_path: Path
) -> None:
    base = room.server.url
    job_id, proc = training
    page = log_in(browser, base, "alice")

    # Rooms, then the room's workers: the worker is online, with what it offers.
    page.get_by_role("link", name="lab", exact=True).first.click()
    page.get_by_role("link", name="Workers").first.click()
    row = page.locator(f'tr[data-worker-id="{room.worker_id}"]')
    row.wait_for()
    assert "lab-cpu" in row.inner_text()
    assert re.search(r"online|busy", row.inner_text())
    page.screenshot(path=str(tmp_path / "workers.png"), full_page=True)

    # The room's jobs: alice's training is listed, running.
    page.get_by_role("link", name="Jobs").first.click()
    page.locator(f'tr[data-job-id="{job_id}"]').wait_for()
    page.screenshot(path=str(tmp_path / "jobs.png"), full_page=True)

    # The job's page: its curve gains points while it trains.
    page.goto(f"{base}/rooms/lab/jobs/{job_id}")
    page.wait_for_function(
        "() => Number(document.querySelector('#loss-chart')?.dataset.points || 0) >= 2",
        timeout=240_000,
    )
    first = points_on(page)
    page.wait_for_function(
        f"() => Number(document.querySelector('#loss-chart').dataset.points) >= {first + 2}",
        timeout=120_000,
    )
    assert points_on(page) >= first + 2
    assert page.locator("#job-state").inner_text() == "RUNNING"
    assert (
        "sleap-rtc train --room lab --worker-id lab-cpu"
        in page.locator("#job-command").inner_text()
    )
    page.screenshot(path=str(tmp_path / "job-running.png"), full_page=True)

    # Stop early from the page: the job ends COMPLETE (stopped early) with its model.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Stop early").click()
    state = page.locator("#job-state")
    state.filter(has_text="COMPLETE (stopped early)").wait_for(timeout=180_000)
    assert page.get_by_role("button", name="Stop early").count() == 0
    assert page.get_by_role("button", name="Cancel").count() == 0
    page.screenshot(path=str(tmp_path / "job-stopped.png"), full_page=True)
    proc.wait_line(rf"job {job_id} complete", timeout=60)

    # The index agrees with the page.
    shown = room.users.json("alice", "jobs", "status", job_id, "--room", "lab", "--json")
    assert shown["state"] == "COMPLETE" and shown["stopped_early"] is True

    # Log out: back at the login page, and the session cookie no longer works.
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(re.escape(base) + r"/login"))
    answer = page.request.get(f"{base}/v1/rooms")
    assert answer.status == 401
    page.close()


def test_a_member_who_is_not_the_owner_sees_no_buttons_and_gets_403(
    room: Room, browser: Any, training: tuple[str, Proc]
) -> None:
    base = room.server.url
    job_id, _ = training
    page = log_in(browser, base, "bob", f"/rooms/lab/jobs/{job_id}")
    page.locator("#job-state").wait_for()
    assert page.get_by_role("button", name="Stop early").count() == 0
    assert page.get_by_role("button", name="Cancel").count() == 0

    session = page.request.get(f"{base}/v1/auth/web/session").json()
    answer = page.request.post(
        f"{base}/v1/rooms/lab/jobs/{job_id}/cancel",
        headers={"X-CSRF-Token": session["csrf_token"]},
        data={},
    )
    assert answer.status in (403, 409), answer.text()
    if answer.status == 403:
        assert answer.json()["error"]["code"] == "NOT_OWNER"
    page.close()


def test_a_change_without_the_csrf_token_is_refused(
    room: Room, browser: Any, training: tuple[str, Proc]
) -> None:
    base = room.server.url
    job_id, _ = training
    page = log_in(browser, base, "alice")
    for headers in ({}, {"X-CSRF-Token": "not-the-token"}):
        answer = page.request.post(
            f"{base}/v1/rooms/lab/jobs/{job_id}/cancel", headers=headers, data={}
        )
        assert answer.status == 403, answer.text()
        assert answer.json()["error"]["code"] == "CSRF_FAILED"
    # Reading needs no token; the job was not touched.
    job = page.request.get(f"{base}/v1/rooms/lab/jobs/{job_id}").json()
    assert job["state"] != "CANCELLED"
    page.close()


def test_a_user_outside_the_room_gets_404(
    room: Room, browser: Any, training: tuple[str, Proc]
) -> None:
    base = room.server.url
    job_id, _ = training
    page = log_in(browser, base, "carol")
    assert page.get_by_role("link", name="lab", exact=True).count() == 0
    for path in ("/v1/rooms/lab/jobs", f"/v1/rooms/lab/jobs/{job_id}", "/v1/rooms/lab/events"):
        assert page.request.get(base + path).status == 404, path
    page.goto(f"{base}/rooms/lab/jobs/{job_id}")
    page.get_by_text("Not found").first.wait_for()
    page.close()


def test_the_session_cookie_is_httponly_and_strict(room: Room) -> None:
    answer = httpx.post(
        f"{room.server.url}/v1/auth/web/login",
        json={"username": "alice", "password": PASSWORD},
    )
    ok_cookie = answer.headers["set-cookie"]
    assert answer.status_code == 200
    assert "HttpOnly" in ok_cookie and "SameSite=strict" in ok_cookie.replace("Strict", "strict")
    assert "Secure" not in ok_cookie  # plain http on loopback
    page = httpx.get(room.server.url + "/")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert ok(room.users.run("alice", "rooms", "list"))


def test_the_api_docs_render_from_the_packages_own_files(room: Room, browser: Any) -> None:
    """/docs documents what the page does, and renders with nothing but this server
    (the browser here reaches no other host)."""
    page = browser.new_page()
    outside: list[str] = []
    page.on(
        "request",
        lambda r: outside.append(r.url) if not r.url.startswith(room.server.url) else None,
    )
    page.goto(room.server.url + "/docs")
    page.get_by_text("/v1/rooms/{room}/jobs/{job}/stop").first.wait_for(timeout=30_000)
    page.get_by_text("/v1/auth/web/login").first.wait_for()
    assert outside == []
    page.close()
