"""Who may stop a job, what a lost channel means, and a run name that was taken."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from click.testing import CliRunner
from rich.console import Console

from sleap_rtc.cli import cli
from sleap_rtc.cli.follow import interrupt_question, print_lost_channel
from sleap_rtc.cli.render import JobProgressView
from sleap_rtc.client.jobs import JobHandle
from sleap_rtc.client.lost import LostChannel, is_online
from sleap_rtc.protocol.api import WorkerView
from tests.configs import MODEL_CONFIG
from tests.labels import write_labels


def handle(owner: str | None, user: str) -> JobHandle:
    session = SimpleNamespace(user=user, room="lab")
    return JobHandle(session, "7c79a1", asyncio.Queue(), owner=owner)  # type: ignore[arg-type]


def test_only_the_owner_is_offered_stop_and_cancel() -> None:
    mine = handle("alice", "alice")
    assert mine.can_control
    question, answers = interrupt_question(mine)
    assert answers == ["s", "c", "d", "w"] and "[c]ancel" in question

    theirs = handle("alice", "bob")
    assert not theirs.can_control
    question, answers = interrupt_question(theirs)
    assert answers == ["d", "w"]
    assert "[s]top" not in question and "[c]ancel" not in question
    assert "Job 7c79a1 belongs to alice; only they can stop or cancel it" in question
    assert "[d]etach (job keeps running)" in question
    # A job recorded without an owner: the worker lets anyone control it.
    assert handle(None, "bob").can_control


def test_an_owner_name_with_control_characters_is_shown_escaped() -> None:
    question, _ = interrupt_question(handle("eve\x1b[2J", "bob"))
    assert "\x1b" not in question and "eve\\x1b[2J" in question


def _print(lost: LostChannel) -> str:
    out = io.StringIO()
    print_lost_channel(Console(file=out, width=400, emoji=False), lost)
    return out.getvalue()


def test_a_lost_channel_suggests_attach_only_while_the_worker_is_online() -> None:
    def lost(online: bool | None, why: str = "") -> LostChannel:
        return LostChannel("worker-1", "gpu-a", "lab", "7c79a1", online, why)

    gone = _print(lost(False))
    assert "Worker gpu-a (worker-1) went offline in room lab" in gone
    assert "record and log are kept on the worker" in gone
    assert "`sleap-rtc rooms workers --room lab` to see when it is back" in gone
    assert "then `sleap-rtc jobs attach 7c79a1 --room lab`" in gone
    assert "may still be running" not in gone

    online = _print(lost(True))
    assert "still online; the job may still be running" in online
    assert "`sleap-rtc jobs attach 7c79a1 --room lab`" in online
    assert "rooms workers" not in online

    unknown = _print(lost(None, "can't reach the sleap-rtc server at http://x"))
    assert "Could not ask the server whether worker gpu-a (worker-1) is online" in unknown
    assert "can't reach the sleap-rtc server" in unknown and "rooms workers --room lab" in unknown


def _worker(wid: str, status: str) -> WorkerView:
    return WorkerView(
        id=wid,
        name="gpu",
        room="lab",
        status=status,  # type: ignore[arg-type]
        hostname="h",
        accelerator="cpu",
        gpus=[],
        running_jobs=0,
        max_concurrent_jobs=1,
        sleap_nn_version=None,
        backends=["local"],
        mounts=[],
        last_seen=datetime.now(UTC),
        connected_since=None,
    )


def test_online_means_listed_and_not_offline() -> None:
    listing = [_worker("w1", "busy"), _worker("w2", "offline")]
    assert is_online(listing, "w1")
    assert not is_online(listing, "w2") and not is_online(listing, "w3")


CONFIG = (
    "data_config:\n  train_labels_path: [../labels.slp]\n" + MODEL_CONFIG + "trainer_config: {}\n"
)


def test_a_taken_run_name_gets_a_suffix_and_the_dry_run_says_so(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    (proj / "configs").mkdir(parents=True)
    (proj / "configs" / "c.yaml").write_text(CONFIG)
    write_labels(proj / "labels.slp")
    models = tmp_path / "m"
    (models / "exp1").mkdir(parents=True)
    (models / "exp1" / "best.ckpt").write_bytes(b"old model")
    args = [
        "local",
        "train",
        "--mount",
        f"{proj}:proj",
        "--models-dir",
        str(models),
        "--config",
        str(proj / "configs" / "c.yaml"),
        "--run-name",
        "exp1",
        "--dry-run",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "# note: run name exp1 is taken; this run is exp1-2" in result.output
    assert "run_name: exp1-2" in result.output
    assert (models / "exp1" / "best.ckpt").read_bytes() == b"old model"

    # A free name: no note.
    args[args.index("exp1")] = "exp9"
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0 and "note:" not in result.output


def test_the_progress_view_shows_the_worker_s_notes_without_the_log() -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, emoji=False)
    with JobProgressView(console, show_logs=False) as view:
        view.log_line("Epoch 1: loss 0.3")
        view.log_line("[sleap-rtc] note: run name exp1 is taken; this run is exp1-2")
    text = out.getvalue()
    assert "note: run name exp1 is taken; this run is exp1-2" in text
    assert "[sleap-rtc]" not in text and "Epoch 1" not in text


def test_a_cancelled_run_s_folder_is_an_incomplete_model_and_says_so(tmp_path: Path) -> None:
    from sleap_rtc.jobs.paths import model_problem, model_state

    assert model_state({"training_config.yaml", "best.ckpt"}) == "complete"
    assert model_state({"training_config.json", "best_model.h5"}) == "complete"
    assert model_state({"training_config.yaml", "initial_config.yaml"}) == "incomplete"
    assert model_state({"initial_config.yaml"}) == "incomplete"
    assert model_state({"best.ckpt"}) is None and model_state(set()) is None
    run = tmp_path / "cut-short"
    run.mkdir()
    for name in ("training_config.yaml", "initial_config.yaml"):
        (run / name).write_text("x: 1\n")
    why = model_problem(run)
    assert why is not None and "training was cancelled or failed" in why
    assert "before a best model was saved" in why
