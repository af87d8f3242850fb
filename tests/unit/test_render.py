"""Job progress lines fit the terminal they are drawn on."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from sleap_rtc.cli.render import JobProgressView
from sleap_rtc.jobs.events import TrackProgress, TrainProgress


def render(width: int, *updates: TrainProgress | TrackProgress) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=False, color_system=None)
    with JobProgressView(console) as view:
        for update in updates:
            view.show_progress(update)
    return [line for line in out.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize("width", [80, 120])
def test_a_training_line_fits_and_keeps_loss_val_and_eta(width: int) -> None:
    update = TrainProgress(
        model_name="centered_instance",
        model_index=2,
        n_models=2,
        epoch=12,
        total_epochs=100,
        loss=0.003174,
        val_loss=0.0023631,
        eta_s=83,
        epoch_done=True,
    )
    lines = render(width, update)
    last = lines[-1]
    assert len(last) <= width, last
    for part in ("train centered_instance (2/2)", "12/100", "loss 0.003174", "val 0.002363"):
        assert part in last, last
    assert "eta 1:23" in last and "…" not in last


def test_a_tracking_line_fits_80_columns() -> None:
    lines = render(80, TrackProgress(n_processed=1500, n_total=12000, rate=212.5, eta_s=49))
    assert len(lines[-1]) <= 80 and "1500/12000" in lines[-1] and "212.5 fps" in lines[-1]


def test_a_queued_job_shows_its_place_until_it_starts() -> None:
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False, color_system=None)

    def shown(view: JobProgressView) -> list[tuple[str, str]]:
        return [(t.description, t.fields["detail"]) for t in view.progress.tasks]

    with JobProgressView(console) as view:
        view.queued(3)
        assert shown(view) == [("queued", "2 jobs ahead")]
        view.queued(1)
        assert shown(view) == [("queued", "starts next")]
        view.show_progress(TrainProgress(model_name="m", epoch=1, total_epochs=5))
        assert [d for d, _ in shown(view)] == ["train m"]
        view.complete(stopped_early=False)  # fills the bars that are left
        assert [(t.completed, t.total) for t in view.progress.tasks] == [(5, 5)]
    assert "queued" not in out.getvalue()
