"""The job store keeps everything across reopen and enforces the state machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from sleap_rtc.jobs.states import JobState, TransitionError
from sleap_rtc.worker.store import JobStore


def test_records_survive_reopen(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.create("job1", "train", {"kind": "train"}, JobState.QUEUED)
    store.transition("job1", JobState.RUNNING)
    store.set_native_id("job1", "123@4.5")
    store.set_progress("job1", {"epoch": 2})
    for i in range(5):
        store.append_log("job1", f"line {i}")
    store.transition("job1", JobState.COMPLETE, exit_code=0, outputs=["/m/x"])
    store.close()

    again = JobStore(tmp_path)
    record = again.get("job1")
    assert record is not None
    assert record.state is JobState.COMPLETE and record.outputs == ["/m/x"]
    assert record.progress == {"epoch": 2} and record.native_id == "123@4.5"
    assert [h.state for h in again.history("job1")] == [
        JobState.QUEUED,
        JobState.RUNNING,
        JobState.COMPLETE,
    ]
    assert again.read_log("job1") == [f"line {i}" for i in range(5)]
    assert again.read_log("job1", tail=2) == ["line 3", "line 4"]
    assert again.find("job") is not None and again.find("nope") is None
    again.close()


def test_terminal_state_is_final(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.create("j", "track", {}, JobState.QUEUED)
    store.transition("j", JobState.CANCELLED, reason="user")
    with pytest.raises(TransitionError):
        store.transition("j", JobState.FAILED)
    with pytest.raises(TransitionError):
        store.transition("j", JobState.RUNNING)
    assert store.get("j").state is JobState.CANCELLED  # type: ignore[union-attr]
    store.close()


def test_unfinished_and_prefix(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    store.create("aaa1", "train", {}, JobState.QUEUED)
    store.create("aaa2", "train", {}, JobState.QUEUED)
    store.transition("aaa2", JobState.RUNNING)
    store.create("bbb", "train", {}, JobState.REJECTED, problems=[{"field": "x"}])
    assert {r.id for r in store.unfinished()} == {"aaa1", "aaa2"}
    assert store.find("aaa") is None  # ambiguous
    assert store.find("bb").problems == [{"field": "x"}]  # type: ignore[union-attr]
    store.close()


def test_results_and_elapsed_are_kept_and_an_older_store_gains_the_column(
    tmp_path: Path,
) -> None:
    import sqlite3

    # A store made before jobs kept results (or owners): its jobs table lacks both.
    db = sqlite3.connect(tmp_path / "jobs.sqlite3")
    db.execute(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, spec TEXT NOT NULL, "
        "state TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, reason TEXT, "
        "exit_code INTEGER, outputs TEXT NOT NULL DEFAULT '[]', problems TEXT NOT NULL "
        "DEFAULT '[]', progress TEXT, native_id TEXT, stopped_early INTEGER NOT NULL DEFAULT 0)"
    )
    db.commit()
    db.close()
    store = JobStore(tmp_path)
    store.create("job1", "train", {"kind": "train"}, JobState.QUEUED)
    assert store.elapsed("job1") is None
    store.transition("job1", JobState.RUNNING)
    assert store.elapsed("job1") is None  # still running
    result = {"output": "/m/x", "kind": "train", "epochs": 3}
    store.transition("job1", JobState.COMPLETE, outputs=["/m/x"], results=[result])
    store.close()
    again = JobStore(tmp_path)
    record = again.get("job1")
    assert record is not None and record.results == [result]
    history = again.history("job1")
    assert again.elapsed("job1") == pytest.approx(history[-1].at - history[1].at)
    again.close()
