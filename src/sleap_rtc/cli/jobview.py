"""How the room's job index is printed: the jobs table, one job's record, its loss chart.

Every value comes from a worker's report, so it is printed through
:func:`~sleap_rtc.cli.render.safe`. The chart is drawn by plotext from the job's
loss points (one per epoch), coloured only on a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

import plotext
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sleap_rtc.cli.render import safe
from sleap_rtc.cli.summary import describe, duration
from sleap_rtc.protocol.api import JobDetail, JobView
from sleap_rtc.protocol.index import LossPoint

_UNFINISHED = ("QUEUED", "RUNNING")


def state_of(job: JobView) -> str:
    """The state, with what it can't tell: an offline worker's job may have moved on."""
    state: str = job.state
    if job.state == "COMPLETE" and job.stopped_early:
        state += " (stopped early)"
    if job.state in _UNFINISHED and job.worker_status == "offline":
        state += " (worker offline)"
    return state


def submitted(job: JobView, now: float | None = None) -> str:
    """``13:05`` today, ``Dec 01 13:05`` this year, else the date."""
    when = datetime.fromtimestamp(job.created_at)
    today = datetime.fromtimestamp(now if now is not None else time.time())
    if when.date() == today.date():
        return when.strftime("%H:%M")
    if when.year == today.year:
        return when.strftime("%b %d %H:%M")
    return when.strftime("%Y-%m-%d")


def elapsed(job: JobView, now: float | None = None) -> float | None:
    """Seconds it ran: to its end, or so far while it runs."""
    if job.elapsed_s is not None:
        return job.elapsed_s
    started = next((h.at for h in job.history if h.state == "RUNNING"), None)
    if started is None or job.state != "RUNNING":
        return None
    return max(0.0, (now if now is not None else time.time()) - started)


def progress_of(job: JobView) -> str:
    """``epoch 3/5`` (``model 2/3`` too), ``120/500 frames``, or the epochs it ran."""
    epochs = [r.epochs for r in job.results if r.kind == "train" and r.epochs is not None]
    if job.finished and epochs:
        return f"{sum(epochs)} epoch{'s' if sum(epochs) != 1 else ''}"
    frames = [r.frames for r in job.results if r.kind == "track" and r.frames is not None]
    if job.finished and frames:
        return f"{sum(frames)} frames"
    progress = job.progress
    if progress is None:
        return ""
    if progress.kind == "track":
        total = f"/{progress.n_total}" if progress.n_total else ""
        return f"{progress.n_processed}{total} frames"
    model = f"model {progress.model_index}/{progress.n_models} " if progress.n_models > 1 else ""
    return f"{model}epoch {progress.epoch}/{progress.total_epochs}"


def best_val_loss(job: JobView) -> float | None:
    """The best validation loss of its models, or (while it trains) the latest one."""
    if job.best_val_loss is not None:
        return job.best_val_loss
    if job.progress is not None and job.progress.kind == "train":
        return job.progress.val_loss
    return None


def jobs_table(jobs: Sequence[JobView], now: float | None = None) -> Table:
    """One row a job: id, kind, owner, worker, state, submitted, took, progress, val loss."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("job", "kind", "owner", "worker", "state", "submitted", "took", "progress"):
        table.add_column(name, no_wrap=name in ("job", "state", "submitted", "took"))
    table.add_column("val loss", justify="right")
    for job in jobs:
        loss = best_val_loss(job)
        table.add_row(
            safe(job.job_id),
            safe(job.kind),
            safe(job.owner or "-"),
            safe(job.worker_name),
            safe(state_of(job)),
            submitted(job, now),
            duration(elapsed(job, now)),
            safe(progress_of(job)),
            f"{loss:.4g}" if loss is not None else "",
        )
    return table


def print_job(console: Console, job: JobView, now: float | None = None) -> None:
    """One job's record: state, where and whose, when, progress, outputs, state history."""
    out = console.print
    out(
        f"job {safe(job.job_id)} ({safe(job.kind)}, {safe(job.owner or '-')}): "
        f"{safe(state_of(job))}",
        highlight=False,
    )
    out(
        f"  worker: {safe(job.worker_name)} ({safe(job.worker_id)}, {job.worker_status})",
        highlight=False,
    )
    if job.summary:
        out(f"  what: {safe(job.summary)}", highlight=False, soft_wrap=True)
    out(f"  submitted: {datetime.fromtimestamp(job.created_at):%Y-%m-%d %H:%M:%S}")
    took = elapsed(job, now)
    if took is not None:
        out(f"  {'took' if job.finished else 'running for'}: {duration(took)}")
    shown = progress_of(job)
    if shown and not job.finished:
        out(f"  progress: {safe(shown)}", highlight=False)
    if job.reason:
        out(f"  reason: {safe(job.reason)}", highlight=False, soft_wrap=True)
    described = {r.output: r for r in job.results}
    for output in job.outputs:
        known = described.get(output)
        label = "output"
        if known is not None:
            label = "model" if known.kind == "train" else "predictions"
        out(f"  {label}: {safe(output)}", highlight=False, soft_wrap=True)
        line = describe(known) if known is not None else ""
        if line:
            out(f"    {safe(line)}", highlight=False, soft_wrap=True)
    for change in job.history:
        why = f": {safe(change.reason)}" if change.reason else ""
        out(f"  {datetime.fromtimestamp(change.at):%H:%M:%S} {change.state}{why}", highlight=False)


def loss_chart(
    points: Sequence[LossPoint], *, width: int = 72, height: int = 16, color: bool = False
) -> str:
    """The loss and val-loss curves by epoch (one pair per model), or "" without points."""
    if not points:
        return ""
    plotext.clear_figure()
    plotext.plotsize(width, height)
    plotext.theme("clear" if color else "pro")
    models = sorted({p.model for p in points})
    for model in models:
        mine = [p for p in points if p.model == model]
        suffix = f" (model {model})" if len(models) > 1 else ""
        for name, values in (
            ("loss", [(p.epoch, p.loss) for p in mine if p.loss is not None]),
            ("val loss", [(p.epoch, p.val_loss) for p in mine if p.val_loss is not None]),
        ):
            if values:
                plotext.plot(
                    [e for e, _ in values], [v for _, v in values], label=f"{name}{suffix}"
                )
    plotext.xlabel("epoch")
    chart: str = plotext.build()
    plotext.clear_figure()
    return chart if color else plotext.uncolorize(chart)


def print_show(console: Console, job: JobDetail, now: float | None = None) -> None:
    """``jobs show``: the record, then the loss chart (when it trained)."""
    print_job(console, job, now)
    chart = loss_chart(
        job.points,
        width=min(console.width, 100),
        color=console.is_terminal and not console.no_color,
    )
    if chart:
        console.print()
        console.print(Text.from_ansi(chart), highlight=False)
    elif job.kind == "train":
        console.print("  (no epochs reported yet)")
