"""Worker selection rules, on listings as discovery returns them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sleap_rtc.client.select import (
    Ambiguous,
    NoWorker,
    SharedName,
    choose_worker,
    job_candidates,
)
from sleap_rtc.protocol.api import WorkerView
from sleap_rtc.protocol.signaling import Gpu


def worker(
    name: str, status: str = "online", free: int | None = None, total: int = 0, running: int = 0
) -> WorkerView:
    gpus = [Gpu(index=0, name="GPU", memory_total_mb=total or (free or 0), memory_free_mb=free)]
    return WorkerView(
        id=f"worker-{name}",
        name=name,
        room="lab",
        status=status,  # type: ignore[arg-type]
        hostname=name,
        accelerator="cuda" if (free or total) else "cpu",
        gpus=gpus if (free or total) else [],
        running_jobs=running,
        max_concurrent_jobs=1,
        sleap_nn_version="0.3.5",
        backends=["local"],
        mounts=["data"],
        last_seen=datetime.now(UTC),
        connected_since=None,
    )


def test_auto_select_takes_the_idle_worker_with_most_free_memory() -> None:
    listing = [worker("small", free=8000), worker("big", free=24000), worker("cpu")]
    assert choose_worker(listing, "lab", auto_select=True).name == "big"
    busy_big = [worker("small", free=8000), worker("big", "busy", free=40000)]
    assert choose_worker(busy_big, "lab", auto_select=True).name == "small"


def test_min_gpu_memory_above_every_worker_is_a_clear_error() -> None:
    listing = [worker("small", free=8000), worker("big", free=24000)]
    with pytest.raises(NoWorker) as caught:
        choose_worker(listing, "lab", auto_select=True, min_gpu_memory=32000)
    assert "32,000 MB" in str(caught.value) and "24,000 MB free on big" in str(caught.value)
    assert choose_worker(listing, "lab", min_gpu_memory=10000).name == "big"


def test_by_id_or_name_and_offline_workers() -> None:
    listing = [worker("a", free=1000), worker("b", "offline", free=9000)]
    assert choose_worker(listing, "lab", worker_id="worker-a").name == "a"
    assert choose_worker(listing, "lab", worker_id="a").name == "a"
    with pytest.raises(NoWorker, match="offline"):
        choose_worker(listing, "lab", worker_id="b")
    with pytest.raises(NoWorker, match="no worker 'zzz'"):
        choose_worker(listing, "lab", worker_id="zzz")
    with pytest.raises(NoWorker, match="no worker is online"):
        choose_worker([worker("b", "offline")], "lab")


def test_one_fitting_worker_is_chosen_several_are_ambiguous() -> None:
    assert choose_worker([worker("only"), worker("gone", "offline")], "lab").name == "only"
    with pytest.raises(Ambiguous) as caught:
        choose_worker([worker("a", free=100), worker("b", free=900)], "lab")
    assert [w.name for w in caught.value.candidates] == ["b", "a"]


def test_all_busy_auto_select_says_so() -> None:
    with pytest.raises(NoWorker, match="busy"):
        choose_worker([worker("a", "busy", free=9000)], "lab", auto_select=True)


def test_a_job_is_looked_for_on_every_online_worker_or_the_one_named() -> None:
    listed = [worker("a"), worker("b", status="busy"), worker("c", status="offline")]
    assert [w.name for w in job_candidates(listed, "lab")] == ["a", "b"]
    assert [w.name for w in job_candidates(listed, "lab", worker_id="b")] == ["b"]
    with pytest.raises(NoWorker, match="offline"):
        job_candidates(listed, "lab", worker_id="c")
    with pytest.raises(NoWorker, match="no worker is online in room lab"):
        job_candidates([worker("c", status="offline")], "lab")


def twin(name: str, wid: str, status: str = "online", free: int = 1000) -> WorkerView:
    return worker(name, status, free=free).model_copy(update={"id": wid, "hostname": f"{wid}-host"})


def test_a_name_several_online_workers_share_is_an_error_listing_their_ids() -> None:
    listing = [twin("gpu", "worker-1", free=1000), twin("gpu", "worker-2", "busy", free=9000)]
    with pytest.raises(SharedName) as caught:
        choose_worker(listing, "lab", worker_id="gpu")
    message = str(caught.value)
    assert "2 online workers in room lab are named 'gpu'" in message
    assert "worker-2 on worker-2-host (busy); worker-1 on worker-1-host (online)" in message
    assert "-w <id>" in message
    assert [w.id for w in caught.value.candidates] == ["worker-2", "worker-1"]
    # The same holds for finding a job by worker, and even with auto-select.
    with pytest.raises(SharedName):
        job_candidates(listing, "lab", worker_id="gpu")
    with pytest.raises(SharedName):
        choose_worker(listing, "lab", worker_id="gpu", auto_select=True)


def test_an_id_is_exact_and_a_shared_name_with_one_online_worker_is_that_one() -> None:
    listing = [twin("gpu", "worker-1"), twin("gpu", "worker-2"), twin("worker-1", "worker-3")]
    assert choose_worker(listing, "lab", worker_id="worker-2").id == "worker-2"
    # An id wins over a worker whose name is that id.
    assert choose_worker(listing, "lab", worker_id="worker-1").id == "worker-1"
    half_gone = [twin("gpu", "worker-1", "offline"), twin("gpu", "worker-2")]
    assert choose_worker(half_gone, "lab", worker_id="gpu").id == "worker-2"
    all_gone = [twin("gpu", "worker-1", "offline"), twin("gpu", "worker-2", "offline")]
    with pytest.raises(NoWorker, match=r"every worker named 'gpu' is offline .*worker-1, worker-2"):
        choose_worker(all_gone, "lab", worker_id="gpu")
