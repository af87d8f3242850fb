"""``sleap-rtc pipeline tune-batch-size``: the largest training batch that fits, printed.

Presentation only: the search and the trials are :mod:`sleap_rtc.pipeline.tune`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import click

from sleap_rtc.cli.render import plain


@click.command("tune-batch-size")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The sleap-nn config YAML to train with.",
)
@click.option(
    "--labels",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Training labels (.slp); repeatable [default: the config's train_labels_path].",
)
@click.option(
    "--val-labels",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Validation labels (.slp); repeatable [default: the config's val_labels_path, "
    "else a split of the training labels].",
)
@click.option(
    "--start",
    type=click.IntRange(min=1),
    help="The first batch size tried [default: the config's, else 4].",
)
@click.option(
    "--max-batch-size",
    type=click.IntRange(min=1),
    help="The largest batch size tried [default: the number of training samples in the "
    "labels, else 1024].",
)
@click.option(
    "--max-trials", type=click.IntRange(min=1), default=10, show_default=True, help="Most trials."
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Training steps in each trial.",
)
@click.option(
    "--trial-timeout",
    type=click.FloatRange(min=1),
    default=900.0,
    show_default=True,
    help="Seconds one trial may take before it counts as failed.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="auto: the GPU if there is one (probe), else the CPU (no probe).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Probe without a GPU too (on a CPU nothing runs out of memory: it climbs to the "
    "largest size).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result and trials as JSON.")
def tune_batch_size_command(
    config_path: Path,
    labels: tuple[Path, ...],
    val_labels: tuple[Path, ...],
    start: int | None,
    max_batch_size: int | None,
    max_trials: int,
    steps: int,
    trial_timeout: float,
    device: str,
    force: bool,
    as_json: bool,
) -> None:
    """Find the largest training batch size that fits in the GPU's memory.

    Runs sleap-nn train for a few steps at a time (one epoch, nothing saved):
    from the starting size, doubling while it fits, then halving from a size that
    ran out of memory until one fits. Each trial's progress goes to stderr; stdout
    gets only the chosen batch size (or, with --json, an object with every trial),
    so a script can capture it. Without a GPU nothing is tried and the starting
    size is printed (--force probes anyway).

    Exits 1 when no size fits (even 1 runs out of memory) or a trial fails for
    another reason (a broken config, unreadable labels): the reason is printed.

    \b
    Examples:
      sleap-rtc pipeline tune-batch-size --config centroid.yaml --labels mice.slp
      BATCH=$(sleap-rtc pipeline tune-batch-size --config centroid.yaml --labels mice.slp)
      sleap-rtc pipeline tune-batch-size --config c.yaml --labels l.slp --start 8 \\
          --max-batch-size 256 --json
      sleap-rtc pipeline tune-batch-size --config c.yaml --labels l.slp --device cpu \\
          --force --start 2 --max-batch-size 8
    """
    from sleap_rtc.pipeline.tune import Probe, config_labels, read_config, tune_batch_size

    def fail(message: str, result: dict[str, object] | None = None) -> NoReturn:
        if as_json:
            click.echo(json.dumps(result or {"batch_size": None, "error": message}))
        raise click.ClickException(message)

    if not config_path.is_file():
        fail(f"config not found: {config_path}")
    try:
        config = read_config(config_path)
    except ValueError as exc:
        fail(str(exc))
    config_path = config_path.resolve()
    train = [p.resolve() for p in labels] or config_labels(config, config_path, "train_labels_path")
    val = [p.resolve() for p in val_labels] or config_labels(config, config_path, "val_labels_path")
    if not train:
        fail(f"{config_path} names no data_config.train_labels_path: pass --labels PATH")
    for kind, paths in (("labels", train), ("validation labels", val)):
        for path in paths:
            if not path.is_file():
                fail(f"{kind} not found: {path}")
    probe = Probe(
        config=config_path,
        labels=train,
        val_labels=val,
        device=device,
        steps=steps,
        timeout=trial_timeout,
    )
    try:
        result = tune_batch_size(
            probe,
            start=start,
            max_batch_size=max_batch_size,
            max_trials=max_trials,
            force=force,
            report=lambda line: click.echo(plain(line), err=True),  # quotes sleap-nn's output
        )
    except ValueError as exc:
        fail(str(exc))
    if not result.ok:
        fail(result.error or "no batch size was chosen", result.to_dict())
    if result.tuned:
        click.echo(f"batch size {result.batch_size}: {result.note}", err=True)
    else:
        click.echo(f"{result.note} (--force probes anyway)", err=True)
    click.echo(json.dumps(result.to_dict()) if as_json else str(result.batch_size))
