"""How a job's end is printed: its state and time, each output and what it holds, and
what to run next.

``sleap-rtc train``/``track`` (following a room's worker) and ``sleap-rtc local`` print
the same closing lines, from the protocol's ``JOB_COMPLETE`` / ``JOB_FAILED``: the state
and elapsed time, ``model:`` (or ``predictions:``) with a line of epochs, best
validation loss and sleap-nn's evaluation metrics (mOKS, mAP, keypoint error p50/p90),
and ``next:`` the command to track with the new model.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from rich.console import Console

from sleap_rtc.cli.render import plain, safe
from sleap_rtc.jobs.results import StepResult
from sleap_rtc.protocol import jobs as p


def duration(seconds: float | None) -> str:
    """``0:01:05`` for 65 seconds (whole seconds)."""
    if seconds is None:
        return ""
    return str(datetime.timedelta(seconds=round(max(seconds, 0.0))))


def describe(result: StepResult) -> str:
    """One line on what an output holds (empty when nothing is known)."""
    parts = []
    if result.epochs is not None:
        parts.append(f"{result.epochs} epoch{'s' if result.epochs != 1 else ''}")
    if result.best_val_loss is not None:
        epoch = f" (epoch {result.best_epoch})" if result.best_epoch is not None else ""
        parts.append(f"best val loss {result.best_val_loss:.4g}{epoch}")
    metrics = result.metrics
    for name in ("mOKS", "mAP"):
        if name in metrics:
            parts.append(f"{name} {metrics[name]:.3f}")
    if "dist.p50" in metrics:
        error = f"error p50 {metrics['dist.p50']:.2f} px"
        if "dist.p90" in metrics:
            error += f", p90 {metrics['dist.p90']:.2f} px"
        parts.append(error)
    if result.frames is not None:
        parts.append(f"{result.frames} frame{'s' if result.frames != 1 else ''} with predictions")
    return " · ".join(parts)


def print_result(
    console: Console, result: p.JobComplete | p.JobFailed, next_steps: Sequence[str] = ()
) -> None:
    """The job's end: outputs and what they hold (and ``next_steps``), or its reason and
    last log lines."""
    took = f" in {duration(result.elapsed_s)}" if result.elapsed_s is not None else ""
    if isinstance(result, p.JobComplete):
        note = " (stopped early)" if result.stopped_early else ""
        console.print(f"[green]job {safe(result.job_id)} complete{note}{took}[/green]")
        described = {r.output: r for r in result.results}
        for output in result.outputs:
            known = described.get(output)
            label = "predictions" if known is not None and known.kind == "track" else "output"
            if known is not None and known.kind == "train":
                label = "model"
            console.print(f"  {label}: {safe(output)}", highlight=False, soft_wrap=True)
            line = describe(known) if known is not None else ""
            if line:
                console.print(f"    {line}", highlight=False, soft_wrap=True)
        for step in next_steps:
            console.print(f"  next: {safe(step)}", highlight=False, soft_wrap=True)
        return
    console.print(
        f"[red]job {safe(result.job_id)} {safe(result.state.lower())}{took}[/red]: "
        f"{safe(result.reason)}",
        highlight=False,
    )
    if result.state == "FAILED" and result.log_tail:
        console.print("last log lines:")
        for line in result.log_tail[-15:]:
            console.print(f"  {plain(line)}", highlight=False, markup=False)
