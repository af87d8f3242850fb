"""The job options, written once: every way of setting a spec field is derived from here.

Each :class:`JobOption` is one field of a :class:`~sleap_rtc.jobs.specs.TrainSpec` or
:class:`~sleap_rtc.jobs.specs.TrackSpec` and says how a person sets it:

- the command-line flags and their ``--help`` sentence (``sleap-rtc train/track`` and
  ``sleap-rtc local train/track``; :mod:`sleap_rtc.cli.options` makes click options of them);
- whether a pipeline job file may set it under ``extra_args`` (:mod:`sleap_rtc.pipeline.spec`
  checks those keys and values against this table);
- the range or the choices a worker accepts (:func:`sleap_rtc.jobs.validation.check_fields`);
- whether it names a path (so a spec file's relative paths can be anchored to its folder).

A new option is one entry here plus its spec field; nothing else is written by hand.
The table is plain data, so the ``jobs`` layer stays importable without click.
Defaults are the spec's own (``TrackSpec.output_path``…), never repeated here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

JobKind = Literal["train", "track"]


@dataclass(frozen=True)
class Range:
    """The values a worker accepts for a number, and the words that say so."""

    low: float
    high: float
    #: The sentence ending "it must be ...", e.g. "between 1 and 4096".
    rule: str
    #: True when ``low`` itself is refused (``0 < learning_rate``).
    low_open: bool = False

    def admits(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high


@dataclass(frozen=True)
class JobOption:
    """One spec field of one job kind, and how it is set from outside."""

    kind: JobKind
    #: The spec field (also the job file's ``extra_args`` key and click's parameter name).
    field: str
    #: Command-line flags, the long one first (``--config``, ``-c``).
    flags: tuple[str, ...]
    help: str
    #: str, int, float or bool (a bool is an on/off flag).
    value_type: type = str
    #: Repeatable flag; the spec field is a list.
    multiple: bool = False
    #: Values the flag takes (2: ``--path-map OLD NEW``; each item is then a pair).
    nargs: int = 1
    metavar: str | None = None
    #: Show the spec's default in ``--help``.
    show_default: bool = False
    #: The command line must give it (``sleap-rtc local --spec FILE`` may give it instead).
    required: bool = False
    #: A pipeline job file may set it in ``extra_args``.
    job_file: bool = False
    #: The value names a file or folder on the machine that runs the job.
    path: bool = False
    range: Range | None = None
    #: The only values a str option takes (click.Choice; checked by the worker too).
    choices: tuple[str, ...] | None = None
    #: Passed to ``sleap-nn predict`` as ``--<field>`` when set (a bool as a bare flag).
    sleap_nn: bool = False
    #: A bool that also has ``--no-<flag>``; given neither, the field is None ("as
    #: set elsewhere").
    negatable: bool = False
    #: Only for jobs sent through a server (``sleap-rtc train/track``), not ``local``.
    remote_only: bool = False

    @property
    def flag(self) -> str:
        """The long flag, as the command line spells it."""
        return self.flags[0]


_BATCH_SIZE = Range(1, 4096, "between 1 and 4096")
_COUNT = Range(1, 10_000, "between 1 and 10000")
_FRACTION = Range(0, 1, "between 0.0 and 1.0")


def _path_map(kind: JobKind) -> JobOption:
    return JobOption(
        kind,
        "path_map",
        ("--path-map",),
        "Videos the labels store under OLD are under NEW on the worker (labels made on "
        "another machine), e.g. --path-map /Volumes/lab/mice /data/mice or "
        "--path-map C:/Users/lab/mice /data/mice. Repeatable; the longest OLD that "
        "matches wins.",
        multiple=True,
        nargs=2,
        metavar="OLD NEW",
        job_file=True,
    )


def _notify(kind: JobKind) -> JobOption:
    return JobOption(
        kind,
        "notify",
        ("--notify",),
        "Post to your webhook and the room's when the job ends; --no-notify: to none "
        "for this job [default: post wherever `sleap-rtc notify` set a webhook].",
        value_type=bool,
        negatable=True,
        remote_only=True,
    )


def _predict(field: str, help: str, **settings: Any) -> JobOption:
    """A track option given to ``sleap-nn predict`` as it is (``--<field>``), its flag
    the field's name, and settable in a job file."""
    flag = "--" + field.replace("_", "-")
    return JobOption("track", field, (flag,), help, job_file=True, sleap_nn=True, **settings)


#: Every job option, in ``--help`` order per kind.
OPTIONS: tuple[JobOption, ...] = (
    # -- train ---------------------------------------------------------------------------
    JobOption(
        "train",
        "config_paths",
        ("--config", "-c"),
        "sleap-nn config YAML on the worker. Repeat for a multi-model job "
        "(e.g. centroid, then centered_instance).",
        multiple=True,
        metavar="PATH",
        required=True,
        path=True,
    ),
    JobOption(
        "train",
        "labels_path",
        ("--labels",),
        "Override training labels (data_config.train_labels_path).",
        metavar="PATH",
        path=True,
    ),
    JobOption(
        "train",
        "val_labels_path",
        ("--val-labels",),
        "Override validation labels (data_config.val_labels_path).",
        metavar="PATH",
        path=True,
    ),
    _path_map("train"),
    JobOption(
        "train",
        "max_epochs",
        ("--max-epochs",),
        "Maximum training epochs.",
        value_type=int,
        job_file=True,
        range=Range(1, 100_000, "between 1 and 100000"),
    ),
    JobOption(
        "train",
        "batch_size",
        ("--batch-size",),
        "Batch size for training and validation.",
        value_type=int,
        job_file=True,
        range=_BATCH_SIZE,
    ),
    JobOption(
        "train",
        "learning_rate",
        ("--learning-rate",),
        "Learning rate for the optimizer.",
        value_type=float,
        job_file=True,
        range=Range(0, 1, "greater than 0 and at most 1 (e.g. 0.0001)", low_open=True),
    ),
    JobOption(
        "train",
        "gpus",
        ("--gpus",),
        "Train on this many GPUs of the worker at once (sleap-nn's multi-GPU training); "
        "checked against the worker's GPUs.",
        value_type=int,
        job_file=True,
        range=Range(1, 64, "between 1 and 64"),
    ),
    JobOption("train", "run_name", ("--run-name",), "Name of the run (its checkpoint folder)."),
    JobOption(
        "train",
        "resume_ckpt_path",
        ("--resume",),
        "Checkpoint (.ckpt) on the worker to resume training from.",
        metavar="PATH",
        path=True,
    ),
    JobOption(
        "train",
        "overrides",
        ("--set",),
        "Set any sleap-nn config key in every config of the job, checked against "
        "sleap-nn's schema first, e.g. --set trainer_config.train_steps_per_epoch=50. "
        "Repeatable.",
        multiple=True,
        metavar="KEY=VALUE",
        job_file=True,
    ),
    JobOption(
        "train",
        "wandb",
        ("--wandb",),
        "Log the run with Weights & Biases in offline mode: it is kept in the model "
        "folder; upload it later with `wandb sync`.",
        value_type=bool,
        job_file=True,
    ),
    _notify("train"),
    # -- track ---------------------------------------------------------------------------
    JobOption(
        "track",
        "data_path",
        ("--data-path", "-d"),
        ".slp or video file on the worker.",
        metavar="PATH",
        required=True,
        path=True,
    ),
    JobOption(
        "track",
        "model_paths",
        ("--model-paths", "-m"),
        "Trained model folder on the worker; repeat for multi-model pipelines.",
        multiple=True,
        metavar="PATH",
        required=True,
        path=True,
    ),
    _path_map("track"),
    JobOption(
        "track",
        "output_path",
        ("--output", "-o"),
        "Predictions file; a relative name is placed beside the data.",
        show_default=True,
        path=True,
    ),
    JobOption(
        "track",
        "batch_size",
        ("--batch-size",),
        "Batch size for inference.",
        value_type=int,
        job_file=True,
        range=_BATCH_SIZE,
    ),
    JobOption(
        "track",
        "peak_threshold",
        ("--peak-threshold",),
        "Peak detection threshold (0.0-1.0).",
        value_type=float,
        job_file=True,
        range=Range(0, 1, "between 0.0 and 1.0"),
    ),
    JobOption(
        "track",
        "only_suggested_frames",
        ("--only-suggested-frames",),
        "Only run inference on suggested frames.",
        value_type=bool,
        job_file=True,
    ),
    JobOption(
        "track",
        "frames",
        ("--frames",),
        'Frame ranges, e.g. "0-100" or "0-100,500-600".',
        job_file=True,
    ),
    JobOption(
        "track",
        "video_index",
        ("--video-index",),
        "Video of a multi-video .slp that --frames refers to [default: 0].",
        value_type=int,
        range=Range(0, 100_000, "a non-negative video number"),
    ),
    _predict(
        "only_labeled_frames",
        "Only run inference on user-labeled frames of a .slp (e.g. to compare with ground truth).",
        value_type=bool,
    ),
    _predict(
        "exclude_user_labeled",
        "Skip frames of a .slp that have user-labeled instances.",
        value_type=bool,
    ),
    _predict(
        "only_predicted_frames",
        "Only run inference on frames of a .slp that already have predictions "
        "(re-predict with another model).",
        value_type=bool,
    ),
    _predict(
        "max_instances",
        "Keep at most this many instances per frame (multi-instance models).",
        value_type=int,
        range=_COUNT,
    ),
    _predict(
        "input_scale",
        "Scale the input images by this factor instead of the training config's.",
        value_type=float,
        range=Range(0, 10, "greater than 0 and at most 10 (e.g. 0.5)", low_open=True),
    ),
    _predict(
        "video_dataset",
        "Dataset of an HDF5 video (.h5) that holds the frames, e.g. /box.",
    ),
    _predict(
        "video_input_format",
        "Axis order of an HDF5 video's frames [default: channels_last].",
        choices=("channels_last", "channels_first"),
    ),
    JobOption(
        "track",
        "output_format",
        ("--output-format",),
        "slp: a SLEAP predictions file; analysis_h5: a SLEAP Analysis HDF5 file instead, "
        "named after --output with .analysis.h5 (predictions.slp -> "
        "predictions.analysis.h5), or --output itself when it ends in .analysis.h5.",
        show_default=True,
        job_file=True,
        choices=("slp", "analysis_h5"),
    ),
    _predict(
        "filter_overlapping",
        "Remove overlapping instances after inference (greedy NMS), keeping the "
        "higher-scoring one.",
        value_type=bool,
    ),
    _predict(
        "filter_overlapping_method",
        "How --filter-overlapping measures overlap: iou (bounding boxes) or oks "
        "(keypoints) [default: iou].",
        choices=("iou", "oks"),
    ),
    _predict(
        "filter_overlapping_threshold",
        "Overlap above which --filter-overlapping removes an instance, 0.3 (aggressive) "
        "to 0.8 (permissive) [default: 0.8].",
        value_type=float,
        range=_FRACTION,
    ),
    _predict(
        "filter_min_visible_nodes",
        "Remove instances with fewer visible keypoints than this.",
        value_type=int,
        range=Range(0, 10_000, "between 0 and 10000"),
    ),
    _predict(
        "filter_min_visible_node_fraction",
        "Remove instances with a smaller fraction of the skeleton's nodes visible (0.0-1.0).",
        value_type=float,
        range=_FRACTION,
    ),
    _predict(
        "filter_min_mean_node_score",
        "Remove instances whose visible nodes score lower than this on average (0.0-1.0).",
        value_type=float,
        range=_FRACTION,
    ),
    _predict(
        "filter_min_instance_score",
        "Remove instances whose overall score is lower than this.",
        value_type=float,
        range=Range(0, 1_000_000, "0 or more"),
    ),
    _predict(
        "filter_min_centroid_distance",
        "Remove instances whose centroid is closer than this many pixels to a "
        "higher-scoring one's.",
        value_type=float,
        range=Range(0, 1_000_000, "0 or more (pixels)"),
    ),
    _predict(
        "tracking",
        "Link the predicted instances across frames into tracks.",
        value_type=bool,
    ),
    _predict(
        "max_tracks",
        "Create at most this many tracks (uses the local_queues candidates method).",
        value_type=int,
        range=_COUNT,
    ),
    _predict(
        "tracking_window_size",
        "Past frames the tracker matches new instances against [default: 5].",
        value_type=int,
        range=Range(1, 1000, "between 1 and 1000"),
    ),
    _predict(
        "candidates_method",
        "Tracks a new instance may join: fixed_window (those seen in the last "
        "--tracking-window-size frames) or local_queues (each track's last instances; "
        "needed for --max-tracks) [default: fixed_window].",
        choices=("fixed_window", "local_queues"),
    ),
    _predict(
        "track_matching_method",
        "How instances are matched to tracks: hungarian or greedy [default: hungarian].",
        choices=("hungarian", "greedy"),
    ),
    _predict(
        "use_flow",
        "Move past instances by optical flow before matching (helps with fast motion).",
        value_type=bool,
    ),
    _predict(
        "tracking_target_instance_count",
        "Animals expected per frame; --post-connect-single-breaks needs it (or --max-instances).",
        value_type=int,
        range=_COUNT,
    ),
    _predict(
        "post_connect_single_breaks",
        "After tracking, join tracks broken for a single frame.",
        value_type=bool,
    ),
    JobOption(
        "track",
        "overwrite",
        ("--overwrite",),
        "Replace the output file if it exists.",
        value_type=bool,
    ),
    _notify("track"),
)


def options_for(kind: JobKind) -> tuple[JobOption, ...]:
    """The options of one job kind, in ``--help`` order."""
    return tuple(o for o in OPTIONS if o.kind == kind)


def option(kind: JobKind, field: str) -> JobOption:
    """The option setting ``field`` of a ``kind`` job; KeyError if there is none."""
    for candidate in OPTIONS:
        if candidate.kind == kind and candidate.field == field:
            return candidate
    raise KeyError(f"no {kind} option sets {field!r}")


def job_file_options(kind: JobKind) -> Mapping[str, JobOption]:
    """The ``extra_args`` keys a job file may set for a ``kind`` stage."""
    return {o.field: o for o in options_for(kind) if o.job_file}
