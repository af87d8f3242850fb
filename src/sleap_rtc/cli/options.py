"""Click options for job specs, shared by every command that submits a job.

The option tables are those of the user documentation (``sleap-rtc train`` and
``sleap-rtc track``); each maps to one spec field. Building the spec is the only
logic here; checking it is the worker's job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from sleap_rtc.jobs.specs import TrackSpec, TrainSpec

F = TypeVar("F", bound=Callable[..., Any])


def _apply(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    def decorator(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorator


def make_train_options(config_required: bool = True) -> Callable[[F], F]:
    return _apply(
        [
            click.option(
                "--config",
                "-c",
                "config_paths",
                multiple=True,
                required=config_required,
                metavar="PATH",
                help="sleap-nn config YAML on the worker. Repeat for a multi-model job "
                "(e.g. centroid, then centered_instance).",
            ),
            *_TRAIN_REST,
        ]
    )


_TRAIN_REST: list[Callable[[Any], Any]] = [
    click.option(
        "--labels",
        "labels_path",
        metavar="PATH",
        help="Override training labels (data_config.train_labels_path).",
    ),
    click.option(
        "--val-labels",
        "val_labels_path",
        metavar="PATH",
        help="Override validation labels (data_config.val_labels_path).",
    ),
    click.option("--max-epochs", type=int, help="Maximum training epochs."),
    click.option("--batch-size", type=int, help="Batch size for training and validation."),
    click.option("--learning-rate", type=float, help="Learning rate for the optimizer."),
    click.option("--run-name", help="Name of the run (its checkpoint folder)."),
    click.option(
        "--resume",
        "resume_ckpt_path",
        metavar="PATH",
        help="Checkpoint (.ckpt) on the worker to resume training from.",
    ),
]
train_options = make_train_options()

track_options = _apply(
    [
        click.option(
            "--data-path",
            "-d",
            required=True,
            metavar="PATH",
            help=".slp or video file on the worker.",
        ),
        click.option(
            "--model-paths",
            "-m",
            multiple=True,
            required=True,
            metavar="PATH",
            help="Trained model folder on the worker; repeat for multi-model pipelines.",
        ),
        click.option(
            "--output",
            "-o",
            "output_path",
            default="predictions.slp",
            show_default=True,
            help="Predictions file; a relative name is placed beside the data.",
        ),
        click.option("--batch-size", type=int, help="Batch size for inference."),
        click.option("--peak-threshold", type=float, help="Peak detection threshold (0.0-1.0)."),
        click.option(
            "--only-suggested-frames", is_flag=True, help="Only run inference on suggested frames."
        ),
        click.option("--frames", help='Frame ranges, e.g. "0-100" or "0-100,500-600".'),
        click.option(
            "--video-index",
            type=int,
            help="Video of a multi-video .slp that --frames refers to [default: 0].",
        ),
        click.option("--overwrite", is_flag=True, help="Replace the output file if it exists."),
    ]
)


def train_spec_from(options: dict[str, Any]) -> TrainSpec:
    fields = {k: v for k, v in options.items() if k in TrainSpec.model_fields}
    fields["config_paths"] = list(fields["config_paths"])
    return TrainSpec(**fields)


def track_spec_from(options: dict[str, Any]) -> TrackSpec:
    fields = {k: v for k, v in options.items() if k in TrackSpec.model_fields}
    fields["model_paths"] = list(fields["model_paths"])
    return TrackSpec(**fields)
