"""Others' text is printed as text: no Rich markup, emoji codes or control characters.

Worker, user, room and key names, job reasons, log lines, rejection messages, file
names and relayed errors come from other people. They are rendered on a real Rich
console (no terminal, no colour) and must come out literally: ``[slurm]`` stays,
``[red]`` is not a style, and an ESC or a newline in a name shows as ``\\x1b`` or
``\\n`` on the same line instead of reaching the terminal.
"""

from __future__ import annotations

import asyncio
import importlib
import io
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from sleap_rtc.cli import browser as browser_mod
from sleap_rtc.cli import cli, correct, downloads, files, summary, targets
from sleap_rtc.cli.exitcodes import run_client
from sleap_rtc.cli.render import JobProgressView, plain, print_rejection, safe
from sleap_rtc.client import ClientError, locate
from sleap_rtc.client.browse import BrowserModel, Row
from sleap_rtc.jobs.events import TrainProgress
from sleap_rtc.jobs.states import JobState
from sleap_rtc.protocol import api
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.signaling import Gpu
from sleap_rtc.worker.store import JobRecord, StateChange

# The package's names ``local``, ``rooms``, ... are its click commands: take the modules.
local = importlib.import_module("sleap_rtc.cli.local")
localjobs = importlib.import_module("sleap_rtc.cli.localjobs")
rooms = importlib.import_module("sleap_rtc.cli.rooms")
pipeline_mod = importlib.import_module("sleap_rtc.cli.pipeline")
worker_mod = importlib.import_module("sleap_rtc.cli.worker")

#: A name that tries markup, a screen clear and a forged line.
EVIL = "gpu-[red]1[/red]\x1b[2J\nFAKE"
#: How it must be shown: brackets kept, ESC and newline as visible escapes.
SHOWN = "gpu-[red]1[/red]\\x1b[2J\\nFAKE"
NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide, colourless consoles, whatever the environment running the tests says."""
    monkeypatch.setenv("COLUMNS", "220")
    monkeypatch.setenv("NO_COLOR", "1")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLICOLOR_FORCE"):
        monkeypatch.delenv(name, raising=False)


def recording() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=220, no_color=True, force_terminal=False), out


def assert_literal(output: str, shown: str = SHOWN) -> None:
    """``shown`` is in ``output`` on one line; no ESC byte, no forged ``FAKE`` line."""
    assert "\x1b" not in output, repr(output)
    assert shown in output, output
    for line in output.splitlines():
        if "FAKE" in line:
            assert "\\nFAKE" in line, f"forged line: {line!r}"


# -- the helpers ----------------------------------------------------------------------------


def test_plain_shows_control_characters_and_keeps_tabs() -> None:
    assert plain(EVIL) == SHOWN
    assert plain("a\tb\rc\x00d\x7fe\x9bf\u202eg\u2028h") == (
        "a\tb\\rc\\x00d\\x7fe\\x9bf\\u202eg\\u2028h"
    )
    assert plain("naïve [slurm] 名前") == "naïve [slurm] 名前"


def test_safe_escapes_markup_so_it_prints_literally() -> None:
    console, out = recording()
    console.print(f"[yellow]{safe(EVIL)}[/yellow] and [slurm] settings \\")
    assert_literal(out.getvalue())
    console, out = recording()
    console.print(f"[bold]{safe('ends in a backslash ' + chr(92))}[/bold]")
    assert out.getvalue().rstrip("\n") == "ends in a backslash \\"
    console, out = recording()
    console.print(safe("[link=https://evil.example]click[/link]"))
    assert out.getvalue().strip() == "[link=https://evil.example]click[/link]"


# -- rejections -----------------------------------------------------------------------------


def test_a_rejection_keeps_brackets_and_escapes_control_characters() -> None:
    console, out = recording()
    problems = [
        p.ProblemView(
            field="labels_path",
            code="not_found",
            message="Path not found: /vast/[slurm]/x.slp; set it in [slurm]\x1b[31m\nFAKE",
        )
    ]
    print_rejection(console, problems, header="Invalid job file /jobs/[slurm].json:")
    lines = out.getvalue().splitlines()
    assert lines[0] == "Invalid job file /jobs/[slurm].json:"
    assert lines[1] == (
        "  - labels_path: Path not found: /vast/[slurm]/x.slp; set it in [slurm]\\x1b[31m\\nFAKE"
    )
    assert len(lines) == 2


def test_local_dry_run_rejection_shows_a_bracketed_path(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    result = CliRunner().invoke(
        cli,
        ["local", "train", "--mount", f"{proj}:proj", "--config", f"{proj}/[slurm].yaml"],
        catch_exceptions=False,
    )
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[0] == "Job rejected by worker:"
    assert f"{proj}/[slurm].yaml" in result.output


# -- job logs and progress ------------------------------------------------------------------


def test_progress_bars_and_log_lines_print_others_text_literally() -> None:
    console, out = recording()
    with JobProgressView(console, show_logs=True) as view:
        view.log_line(f"epoch 1 [slurm] loss 0.5 {EVIL} :cd:")
        view.show_progress(
            TrainProgress(model_name=EVIL, epoch=1, total_epochs=10, loss=0.5, epoch_done=True)
        )
    output = out.getvalue()
    assert_literal(output)
    assert "epoch 1 [slurm] loss 0.5 " in output and ":cd:" in output
    assert f"train {SHOWN}" in output


def test_a_failed_jobs_reason_and_log_tail_are_text() -> None:
    console, out = recording()
    failed = p.JobFailed(
        job_id="abc123",
        reason=f"sbatch: error: [slurm] partition {EVIL}",
        log_tail=["Traceback [slurm]", f"\x1b]8;;https://evil.example\x07{EVIL}"],
    )
    summary.print_result(console, failed)
    output = out.getvalue()
    assert_literal(output)
    assert "job abc123 failed: sbatch: error: [slurm] partition " + SHOWN in output
    assert "  Traceback [slurm]" in output
    assert "\\x1b]8;;https://evil.example\\x07" in output and "\x07" not in output


def test_a_completed_jobs_outputs_and_results_are_text() -> None:
    from sleap_rtc.jobs.results import StepResult

    console, out = recording()
    summary.print_result(console, p.JobComplete(job_id="abc123", outputs=[f"/m/{EVIL}"]))
    assert_literal(out.getvalue(), f"  output: /m/{SHOWN}")
    console, out = recording()
    result = StepResult(output=f"/m/{EVIL}", kind="train", epochs=3)
    done = p.JobComplete(job_id="abc123", outputs=[f"/m/{EVIL}"], results=[result])
    summary.print_result(console, done, [f"sleap-rtc track --model-paths /m/{EVIL}"])
    assert_literal(out.getvalue(), f"  model: /m/{SHOWN}")
    assert f"  next: sleap-rtc track --model-paths /m/{SHOWN}" in out.getvalue()


class FakeServer:
    """What the commands ask of a ServerClient, from canned answers."""

    def __init__(
        self, workers: list[api.WorkerView], jobs: list[api.JobDetail] | None = None
    ) -> None:
        self._workers = workers
        self._jobs = jobs or []

    async def __aenter__(self) -> FakeServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def workers(self, room: str, min_gpu_memory: int | None = None) -> list[Any]:
        return self._workers

    async def room_jobs(self, room: str, **filters: Any) -> api.JobPage:
        return api.JobPage(jobs=list(self._jobs), total=len(self._jobs), offset=0, limit=20)

    async def room_job(self, room: str, job: str) -> api.JobDetail:
        from sleap_rtc.client.errors import ServerError

        for found in self._jobs:
            if found.job_id.startswith(job):
                return found
        raise ServerError(404, "NO_SUCH_JOB", f"no job {job!r}")


class FakeHandle:
    def __init__(self, events: list[Any]) -> None:
        self._events = events

    async def events(self) -> AsyncIterator[Any]:
        for event in self._events:
            yield event


class FakeSession:
    """What the commands ask of a WorkerSession."""

    worker_name = EVIL

    def __init__(self, **answers: Any) -> None:
        self.answers = answers

    async def __aenter__(self) -> FakeSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def close(self) -> None:
        return None

    async def jobs(self, limit: int) -> list[p.JobSummary]:
        return list(self.answers["jobs"])

    async def status(self, job_id: str) -> p.JobSummary:
        return self.answers["jobs"][0]

    async def attach(self, job_id: str, log_lines: int) -> FakeHandle:
        return FakeHandle(self.answers["events"])

    async def cancel(self, job_id: str) -> p.JobSummary:
        return self.answers["jobs"][0]

    async def fs_mounts(self) -> list[p.FsMount]:
        return list(self.answers["mounts"])

    async def fs_list(self, path: str, **kwargs: Any) -> p.FsListReply:
        return self.answers["listing"]

    async def fs_find(self, pattern: str, **kwargs: Any) -> p.FsFindReply:
        return self.answers["found"]

    async def download(self, remote: str, dest: Path, on_progress: Any) -> Path:
        on_progress(5, 10)
        on_progress(10, 10)
        return dest / Path(remote).name


def worker_view(name: str = EVIL, gpu: str = "A100 [sxm]") -> api.WorkerView:
    return api.WorkerView(
        id="worker-abc123",
        name=name,
        room="lab",
        status="online",
        hostname="h",
        accelerator="cuda",
        gpus=[Gpu(index=0, name=gpu, memory_total_mb=80_000, memory_free_mb=70_000)],
        running_jobs=0,
        max_concurrent_jobs=1,
        sleap_nn_version=None,
        backends=["local"],
        mounts=[],
        sandbox="landlock",
        last_seen=NOW,
        connected_since=NOW,
    )


def job_summary() -> p.JobSummary:
    return p.JobSummary(
        job_id="abc123",
        kind="train",
        state="FAILED",
        created_at=1.0,
        updated_at=2.0,
        reason="[slurm] partition gpu is down",
        owner=EVIL,
        summary="train /vast/[slurm]/c.yaml",
        outputs=[f"/m/{EVIL}"],
    )


def job_detail() -> api.JobDetail:
    """The same job as the server's index has it."""
    return api.JobDetail(
        job_id="abc123",
        kind="train",
        state="FAILED",
        created_at=1.0,
        updated_at=2.0,
        reason="[slurm] partition gpu is down",
        owner="[red]ana[/red]",  # the index keeps printable text only
        summary="/vast/[slurm]/c.yaml",
        outputs=[f"/m/{EVIL}"],
        room="lab",
        worker_id="worker-abc123",
        worker_name=EVIL,
        worker_status="online",
        reported_at=NOW,
    )


@pytest.fixture
def fake_remote(monkeypatch: pytest.MonkeyPatch) -> FakeSession:
    session = FakeSession(
        jobs=[job_summary()],
        events=[
            p.JobProgress(
                job_id="abc123", lines=["[slurm] queued", f"{EVIL}", "\x1b[2Jcleared"], replay=True
            )
        ],
    )

    async def open_session(*args: Any, **kwargs: Any) -> FakeSession:
        return session

    server = SimpleNamespace(from_config=lambda url: FakeServer([worker_view()], [job_detail()]))
    # The package attribute ``jobs`` is the click group; patch the module itself.
    monkeypatch.setattr(importlib.import_module("sleap_rtc.cli.jobs"), "ServerClient", server)
    monkeypatch.setattr(locate, "WorkerSession", SimpleNamespace(open=open_session))
    monkeypatch.setattr(locate, "ice_servers", lambda: [])
    return session


def test_jobs_list_table_shows_names_literally(fake_remote: FakeSession) -> None:
    result = CliRunner().invoke(cli, ["jobs", "list", "--room", "lab"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert_literal(result.output)
    lines = result.output.splitlines()
    header = next(line for line in lines if "job" in line and "owner" in line)
    assert header.split() == [
        "job",
        "kind",
        "owner",
        "worker",
        "state",
        "submitted",
        "took",
        "progress",
        "val",
        "loss",
    ]
    row = next(line for line in lines if "abc123" in line)
    assert "gpu-[red]1[/red]" in row and "FAILED" in row


def test_jobs_status_shows_reason_and_outputs_literally(fake_remote: FakeSession) -> None:
    result = CliRunner().invoke(
        cli, ["jobs", "status", "abc123", "--room", "lab"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert_literal(result.output)
    assert "job abc123 (train, [red]ana[/red]): FAILED" in result.output
    assert f"  worker: {SHOWN} (worker-abc123, online)" in result.output
    assert "  what: /vast/[slurm]/c.yaml" in result.output
    assert "  reason: [slurm] partition gpu is down" in result.output
    assert f"  output: /m/{SHOWN}" in result.output


def test_jobs_logs_echo_lines_without_control_characters(fake_remote: FakeSession) -> None:
    result = CliRunner().invoke(
        cli, ["jobs", "logs", "abc123", "--room", "lab"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["[slurm] queued", SHOWN, "\\x1b[2Jcleared"]


def test_relayed_errors_keep_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    async def fail() -> int:
        raise ClientError(f"worker says: set it in [slurm] {EVIL}")

    with pytest.raises(SystemExit):
        run_client(fail)
    err = capsys.readouterr().err
    assert_literal(err)
    assert err.startswith("Error: worker says: set it in [slurm] ")


def test_the_worker_picker_table_shows_names_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    console, out = recording()
    monkeypatch.setattr(targets.click, "prompt", lambda *a, **k: 1)
    targets.pick([worker_view(), worker_view("plain-name")], console)
    assert_literal(out.getvalue())
    assert "plain-name" in out.getvalue()


async def test_download_progress_shows_a_file_name_literally(tmp_path: Path) -> None:
    console, out = recording()
    session: Any = FakeSession()
    name = "[slurm][red]best[/red]\x1b[2J\nFAKE.ckpt".replace("/", "")
    await downloads.download_outputs(session, [f"/m/run/{name}"], tmp_path, console, as_json=False)
    output = out.getvalue()
    shown = "[slurm][red]best[red]\\x1b[2J\\nFAKE.ckpt"
    assert_literal(output, f"download {shown} ")
    assert f"  downloaded: {tmp_path}/{shown}" in output


# -- file listings --------------------------------------------------------------------------


@pytest.fixture
def fake_files(monkeypatch: pytest.MonkeyPatch) -> FakeSession:
    entry = p.FsEntry(name=EVIL, kind="file", size=1000, modified=0.0, path=f"/vast/{EVIL}")
    folder = p.FsEntry(name="[slurm]", kind="dir", modified=0.0, path="/vast/[slurm]")
    session = FakeSession(
        mounts=[p.FsMount(label=EVIL, path="/vast/[slurm]", read_only=True)],
        listing=p.FsListReply(
            request_id="r1", path="/vast/[x]\x1b[2J", entries=[folder, entry], total=2, offset=0
        ),
        found=p.FsFindReply(
            request_id="r1",
            matches=[p.FsMatch(entry=entry, rank=0, score=1.0)],
            scanned=2,
            truncated="time [limit]\x1b",
        ),
    )

    async def open_session(*args: Any) -> FakeSession:
        return session

    monkeypatch.setattr(
        files, "ServerClient", SimpleNamespace(from_config=lambda url: FakeServer([]))
    )
    monkeypatch.setattr(files, "_session", open_session)
    return session


def test_fs_mounts_table_shows_labels_literally(fake_files: FakeSession) -> None:
    result = CliRunner().invoke(cli, ["fs", "mounts", "--room", "lab"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert_literal(result.output)
    row = next(line for line in result.output.splitlines() if SHOWN in line)
    assert "/vast/[slurm]" in row and "read-only" in row


def test_fs_ls_shows_names_on_one_line_each(fake_files: FakeSession) -> None:
    result = CliRunner().invoke(cli, ["fs", "ls", "/vast", "--room", "lab"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert_literal(result.output)
    lines = result.output.splitlines()
    assert lines[0] == "/vast/[x]\\x1b[2J"
    assert lines[1].startswith("  [slurm]/ ") and lines[2].startswith(f"  {SHOWN} ")
    assert len(lines) == 3


def test_fs_find_shows_paths_on_one_line_each(fake_files: FakeSession) -> None:
    result = CliRunner().invoke(cli, ["fs", "find", "x", "--room", "lab"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"/vast/{SHOWN}  1.0 kB",
        "(search stopped early: time [limit]\\x1b; narrow it with --under)",
    ]


@pytest.fixture
def browser() -> Iterator[browser_mod.Browser]:
    model = BrowserModel(SimpleNamespace(), want="file")
    model.path = f"/vast/{EVIL}"
    model.message = f"can't open [slurm] {EVIL}"
    with create_pipe_input() as keys:
        yield browser_mod.Browser(model, f"{EVIL}: select a file", input=keys, output=DummyOutput())


def _text(fragments: Any) -> str:
    return "".join(text for _, text, *_ in fragments)


def test_the_browser_shows_names_with_control_characters_escaped(
    browser: browser_mod.Browser,
) -> None:
    row = Row(kind="file", name=f"[slurm]{EVIL}", path="/x", size=None)
    folder = Row(kind="dir", name=EVIL, path="/d", note="\x1b[5m")
    shown = [
        _text(browser._row(row, 100, selected=False)),
        _text(browser._row(folder, 100, selected=True)),
        _text(browser._path_line()),
        _text(browser._status()),
    ]
    for text in shown:
        assert "\n" not in text and "\x1b" not in text, repr(text)
    assert f"[slurm]{SHOWN}" in shown[0]
    assert f"{SHOWN}/" in shown[1] and "(\\x1b[5m)" in shown[1]
    assert shown[2] == f"Path: /vast/{SHOWN}"
    assert shown[3] == f"can't open [slurm] {SHOWN}"


async def test_path_correction_lists_candidates_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    console, out = recording()
    entry = p.FsEntry(name="c.yaml", kind="file", size=10, modified=0.0, path=f"/v/{EVIL}/c.yaml")
    session: Any = FakeSession(
        found=p.FsFindReply(
            request_id="r1", matches=[p.FsMatch(entry=entry, rank=0, score=1.0)], scanned=1
        )
    )

    async def choose(*args: Any, **kwargs: Any) -> str:
        return "b"

    monkeypatch.setattr(correct, "choose", choose)
    target = SimpleNamespace(want="file", filter="*.yaml", model=False)
    assert await correct._offer_candidates(session, "/v/[slurm]/c.yaml", target, console) is None  # type: ignore[arg-type]
    output = out.getvalue()
    assert_literal(output, f"  1. /v/{SHOWN}/c.yaml  (10 bytes)")
    assert "Likely matches for 'c.yaml' on the worker:" in output


# -- rooms and keys -------------------------------------------------------------------------


def _answer(monkeypatch: pytest.MonkeyPatch, value: Any) -> None:
    for module in (rooms, importlib.import_module("sleap_rtc.cli.keys")):
        monkeypatch.setattr(module, "run_client", lambda server, action: value)


def test_rooms_workers_table_shows_names_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    _answer(monkeypatch, [worker_view(), worker_view("plain:cd:name")])
    result = CliRunner().invoke(cli, ["rooms", "workers", "--room", "lab"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert_literal(result.output)
    lines = result.output.splitlines()
    row = next(line for line in lines if SHOWN in line)
    assert "online" in row and "A100 [sxm]" in row and "70,000/80,000 MB free" in row
    plain_row = next(line for line in lines if "plain:cd:name" in line)  # no emoji
    assert len(plain_row) == len(row)  # the same columns


def test_rooms_list_and_info_show_names_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    room = api.RoomView(
        id="room-1",
        name=EVIL,
        role="owner",
        created_at=NOW,
        expires_at=None,
        members=2,
        workers_online=1,
    )
    _answer(monkeypatch, [room])
    result = CliRunner().invoke(cli, ["rooms", "list"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert_literal(result.output)
    info = api.RoomInfo(
        **room.model_dump(),
        owner="[slurm]admin",
        member_list=[api.MemberView(username=EVIL, role="member", joined_at=NOW)],
        keys_active=1,
        workers_known=1,
    )
    _answer(monkeypatch, info)
    result = CliRunner().invoke(cli, ["rooms", "info", "lab"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert_literal(result.output)
    assert result.output.startswith(f"{SHOWN} (id room-1), you are owner")
    assert "owner: [slurm]admin;" in result.output
    assert sum(SHOWN in line for line in result.output.splitlines()) == 2


def test_keys_list_table_shows_names_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    key = api.KeyView(
        id="key-1",
        name=EVIL,
        room="lab",
        created_by="[slurm]bob",
        created_at=NOW,
        revoked_at=None,
        last_used_at=None,
    )
    _answer(monkeypatch, [key])
    result = CliRunner().invoke(cli, ["keys", "list", "--room", "lab"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert_literal(result.output)
    row = next(line for line in result.output.splitlines() if SHOWN in line)
    assert "[slurm]bob" in row and "active" in row


def test_echoed_names_have_no_control_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    room = api.RoomView(
        id="room-1",
        name=EVIL,
        role="member",
        created_at=NOW,
        expires_at=None,
        members=2,
        workers_online=1,
    )
    _answer(monkeypatch, room)
    result = CliRunner().invoke(cli, ["rooms", "join", "CODE"], catch_exceptions=False)
    assert result.output == f"joined room {SHOWN} (2 members, 1 workers online)\n"


def test_server_errors_become_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    class Refusing:
        async def __aenter__(self) -> None:
            raise ClientError(f"room [slurm] not found {EVIL}")

        async def __aexit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(rooms, "ServerClient", SimpleNamespace(from_config=lambda s: Refusing()))
    result = CliRunner().invoke(cli, ["rooms", "join", "CODE"])
    assert result.exit_code == 1
    assert result.output == f"Error: room [slurm] not found {SHOWN}\n"


# -- this machine's jobs, pipelines, the worker ---------------------------------------------


class FakeStore:
    def __init__(self) -> None:
        self.record = JobRecord(
            id="abc123",
            kind="train",
            spec={},
            state=JobState.FAILED,
            created_at=0.0,
            updated_at=0.0,
            reason=f"[slurm] {EVIL}",
            problems=[{"field": "labels_path", "message": f"[slurm] {EVIL}"}],
        )

    def jobs(self, limit: int) -> list[JobRecord]:
        return [self.record]

    def find(self, job_id: str) -> JobRecord:
        return self.record

    def history(self, job_id: str) -> list[StateChange]:
        return [StateChange(at=0.0, state=JobState.FAILED, reason=f"[slurm] {EVIL}")]

    def read_log(self, job_id: str, tail: int | None = None) -> list[str]:
        return ["[slurm] line", EVIL]


def test_local_jobs_list_status_and_logs_show_text_literally(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(localjobs, "_store", lambda config: FakeStore())
    runner = CliRunner()
    listed = runner.invoke(cli, ["local", "jobs", "list"], catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    assert_literal(listed.output, f"[slurm] {SHOWN}")
    status = runner.invoke(cli, ["local", "jobs", "status", "abc123"], catch_exceptions=False)
    assert status.exit_code == 0, status.output
    assert_literal(status.output, f"FAILED  [slurm] {SHOWN}")
    assert f"  - labels_path: [slurm] {SHOWN}" in status.output
    logs = runner.invoke(cli, ["local", "jobs", "logs", "abc123"], catch_exceptions=False)
    assert logs.output.splitlines() == ["[slurm] line", SHOWN]


def test_a_local_failure_prints_reason_and_log_tail_literally() -> None:
    console, out = recording()
    from sleap_rtc.worker import terminal_message

    summary.print_result(console, terminal_message(FakeStore().record, ["[slurm] tail", EVIL]))
    output = out.getvalue()
    assert_literal(output)
    assert f"job abc123 failed: [slurm] {SHOWN}" in output and "  [slurm] tail" in output


def test_pipeline_status_table_shows_slurm_reasons_literally(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sleap_rtc.pipeline.run as run

    item = SimpleNamespace(
        dataset=EVIL, stage="centroid", job_id="103", state="PENDING", reason="(Resources) [x]"
    )
    monkeypatch.setattr(pipeline_mod, "_load", lambda job_file, output_dir: (None, None))
    monkeypatch.setattr(run, "status", lambda loaded, layout, slurm=None: [item])
    result = CliRunner().invoke(
        cli, ["pipeline", "status", "--job", str(tmp_path / "j.json")], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert_literal(result.output)
    assert "PENDING: (Resources) [x]" in result.output


async def test_the_worker_announces_its_room_on_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    link = SimpleNamespace(registered=asyncio.Event(), registrations=1, room=EVIL)
    link.registered.set()
    task = asyncio.create_task(worker_mod._announce(link, "gpu-1", "worker-abc123"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert capsys.readouterr().out == f"worker gpu-1 (worker-abc123) online in room {SHOWN}\n"


@pytest.mark.parametrize(
    ("status", "code"), [(404, 2), (400, 2), (422, 2), (403, 1), (500, 1), (401, 1)]
)
def test_a_room_or_invite_the_server_does_not_know_exits_2(
    monkeypatch: pytest.MonkeyPatch, status: int, code: int
) -> None:
    from sleap_rtc.client.errors import ServerError

    class Refusing:
        async def __aenter__(self) -> None:
            raise ServerError(
                status, "NOT_FOUND", "room 'nope' not found (or you are not a member)"
            )

        async def __aexit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(rooms, "ServerClient", SimpleNamespace(from_config=lambda s: Refusing()))
    result = CliRunner().invoke(cli, ["rooms", "join", "CODE"])
    assert result.exit_code == code, result.output
    assert "room 'nope' not found" in result.output

    async def fail() -> int:
        raise ServerError(status, "NOT_FOUND", "room 'nope' not found")

    with pytest.raises(SystemExit) as exited:
        run_client(fail)
    assert exited.value.code == code
