"""Batch-size tuning: the search, how a trial's output is read, and the trial runner."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from sleap_rtc.pipeline.tune import (
    Outcome,
    Probe,
    TrialResult,
    classify,
    config_labels,
    count_samples,
    search_batch_size,
    skip_reason,
    start_batch_size,
)


def memory_limit(largest: int) -> Callable[[int], TrialResult]:
    """A device that holds batches up to ``largest``."""

    def fits(size: int) -> TrialResult:
        outcome = Outcome.FITS if size <= largest else Outcome.OOM
        return TrialResult(size, outcome, 1.0)

    return fits


def sizes(result_trials: list[TrialResult]) -> list[int]:
    return [t.batch_size for t in result_trials]


# The search


def test_doubles_while_it_fits_up_to_the_cap() -> None:
    result = search_batch_size(4, memory_limit(10_000), max_batch_size=32, max_trials=10)
    assert result.ok and result.batch_size == 32
    assert sizes(result.trials) == [4, 8, 16, 32]
    assert "largest size tried (32)" in result.note


def test_the_cap_is_tried_even_when_doubling_overshoots_it() -> None:
    result = search_batch_size(3, memory_limit(10_000), max_batch_size=20, max_trials=10)
    assert sizes(result.trials) == [3, 6, 12, 20] and result.batch_size == 20


def test_a_start_above_the_cap_starts_at_the_cap() -> None:
    result = search_batch_size(64, memory_limit(10_000), max_batch_size=8, max_trials=10)
    assert sizes(result.trials) == [8] and result.batch_size == 8


def test_out_of_memory_after_fitting_keeps_the_last_size_that_fit() -> None:
    result = search_batch_size(4, memory_limit(20), max_batch_size=1024, max_trials=10)
    assert result.batch_size == 16
    # 16 already fit: halving from 32 needs no second trial at 16.
    assert sizes(result.trials) == [4, 8, 16, 32]
    assert [t.outcome for t in result.trials][-1] is Outcome.OOM
    assert "32 ran out of memory" in result.note


def test_out_of_memory_at_the_start_halves_until_one_fits() -> None:
    result = search_batch_size(32, memory_limit(5), max_batch_size=1024, max_trials=10)
    assert result.batch_size == 4
    assert sizes(result.trials) == [32, 16, 8, 4]
    assert result.note == "8 ran out of memory; 4 fit"


def test_halving_below_a_capped_size_that_fit() -> None:
    # 6 fits, the cap 8 does not: 8 // 2 = 4 is below 6, so 6 is the answer.
    result = search_batch_size(3, memory_limit(7), max_batch_size=8, max_trials=10)
    assert sizes(result.trials) == [3, 6, 8] and result.batch_size == 6


def test_even_one_out_of_memory_is_an_error() -> None:
    result = search_batch_size(2, memory_limit(0), max_batch_size=64, max_trials=10)
    assert not result.ok and result.batch_size is None
    assert sizes(result.trials) == [2, 1]
    assert result.error is not None and "even batch size 1 runs out of memory" in result.error


def test_a_failure_that_is_not_out_of_memory_stops_with_its_reason() -> None:
    def fits(size: int) -> TrialResult:
        if size >= 16:
            return TrialResult(size, Outcome.ERROR, 2.0, "ValueError: optimizer_name must be Adam")
        return TrialResult(size, Outcome.FITS, 2.0)

    result = search_batch_size(4, fits, max_batch_size=1024, max_trials=10)
    assert not result.ok and result.batch_size is None
    assert sizes(result.trials) == [4, 8, 16]
    assert result.error is not None
    assert "batch size 16" in result.error
    assert "ValueError: optimizer_name must be Adam" in result.error


def test_max_trials_ends_the_climb_with_the_largest_that_fit() -> None:
    result = search_batch_size(1, memory_limit(10_000), max_batch_size=1024, max_trials=3)
    assert result.batch_size == 4 and sizes(result.trials) == [1, 2, 4]
    assert "after 3 trial(s)" in result.note


def test_max_trials_without_any_fit_is_an_error() -> None:
    result = search_batch_size(64, memory_limit(3), max_batch_size=1024, max_trials=2)
    assert not result.ok and sizes(result.trials) == [64, 32]
    assert result.error is not None and "no batch size fit in 2 trial(s)" in result.error


def test_arguments_below_one_are_refused() -> None:
    with pytest.raises(ValueError):
        search_batch_size(0, memory_limit(8), max_batch_size=8, max_trials=3)
    with pytest.raises(ValueError):
        search_batch_size(1, memory_limit(8), max_batch_size=8, max_trials=0)


def test_the_result_is_plain_json() -> None:
    result = search_batch_size(2, memory_limit(4), max_batch_size=64, max_trials=10)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["batch_size"] == 4 and data["error"] is None and data["tuned"] is True
    assert [(t["batch_size"], t["outcome"]) for t in data["trials"]] == [
        (2, "fits"),
        (4, "fits"),
        (8, "oom"),
    ]


# Reading a trial's output

CUDA_OOM = """\
Epoch 0:   0%|          | 0/3 [00:00<?, ?it/s]
Traceback (most recent call last):
  File "/opt/venv/lib/python3.11/site-packages/torch/nn/modules/conv.py", line 549, in _conv_forward
    return F.conv2d(
           ^^^^^^^^^
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total \
capacity of 79.10 GiB of which 1.06 GiB is free. Including non-PyTorch memory, this process \
has 78.03 GiB memory in use.
2026-01-01 10:00:00 | Finished training loop. [0.1 min]
"""

CUBLAS = """\
  File "/opt/venv/lib/python3.11/site-packages/torch/nn/modules/linear.py", line 125, in forward
    return F.linear(input, self.weight, self.bias)
RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`
"""

CPU_OOM = """\
RuntimeError: [enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate \
memory: you tried to allocate 34359738368 bytes. Error code 12 (Cannot allocate memory)
"""

HYDRA = """\
  File "/opt/venv/lib/python3.11/site-packages/hydra/core/override_parser/overrides_parser.py", \
line 96, in parse_overrides
    raise OverrideParseException(
hydra.errors.OverrideParseException: Error parsing override '++trainer_config.bogus==x'
extraneous input '=' expecting {<EOF>, ':', BRACKET_OPEN, BRACE_OPEN}
See https://hydra.cc/docs/1.2/advanced/override_grammar/basic for details
"""

BAD_VALUE = """\
  File "/opt/venv/lib/python3.11/site-packages/sleap_nn/config/trainer_config.py", line 438, \
in validate_optimizer_name
    raise ValueError(message)
ValueError: optimizer_name must be one of: Adam, AdamW
"""


@pytest.mark.parametrize(
    ("output", "marker"),
    [
        (CUDA_OOM, "torch.OutOfMemoryError: CUDA out of memory"),
        (CUBLAS, "CUBLAS_STATUS_ALLOC_FAILED"),
        (CPU_OOM, "DefaultCPUAllocator: can't allocate memory"),
    ],
)
def test_out_of_memory_output_is_out_of_memory(output: str, marker: str) -> None:
    outcome, message = classify(1, output)
    assert outcome is Outcome.OOM and marker in message


def test_exit_zero_fits_even_if_a_log_line_mentions_memory() -> None:
    output = "Using torch_dataset to avoid CUDA out of memory while caching\nFinished training\n"
    assert classify(0, output) == (Outcome.FITS, "")


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        (HYDRA, "hydra.errors.OverrideParseException: Error parsing override"),
        (BAD_VALUE, "ValueError: optimizer_name must be one of: Adam, AdamW"),
    ],
)
def test_other_failures_are_errors_with_the_exception_line(output: str, reason: str) -> None:
    outcome, message = classify(1, output)
    assert outcome is Outcome.ERROR and message.startswith(reason)


def test_a_failure_without_an_exception_line_gives_the_last_line() -> None:
    assert classify(2, "loading\nNo model config found!\n") == (
        Outcome.ERROR,
        "No model config found!",
    )
    outcome, message = classify(3, "")
    assert outcome is Outcome.ERROR and "exited with 3" in message


def test_killed_by_a_signal_says_so() -> None:
    outcome, message = classify(-9, "Epoch 0: 1/3\n")
    assert outcome is Outcome.ERROR and "SIGKILL" in message and "Epoch 0: 1/3" in message


# Where a probe starts, and what it reads from the config


def test_start_is_the_explicit_size_else_the_config_else_four() -> None:
    config = {"trainer_config": {"train_data_loader": {"batch_size": 12}}}
    assert start_batch_size(config, 3) == 3
    assert start_batch_size(config) == 12
    assert start_batch_size({}) == 4
    assert start_batch_size({"trainer_config": {"train_data_loader": {"batch_size": True}}}) == 4
    assert start_batch_size({"trainer_config": None}) == 4


def test_config_labels_are_relative_to_the_config(tmp_path: Path) -> None:
    config_path = tmp_path / "configs" / "c.yaml"
    config = {"data_config": {"train_labels_path": ["../a.slp", "/abs/b.slp"]}}
    assert config_labels(config, config_path, "train_labels_path") == [
        tmp_path / "a.slp",
        Path("/abs/b.slp"),
    ]
    assert config_labels({"data_config": {"val_labels_path": None}}, config_path, "val") == []
    single = {"data_config": {"val_labels_path": "v.slp"}}
    assert config_labels(single, config_path, "val_labels_path") == [tmp_path / "configs/v.slp"]


def test_only_the_cpu_or_no_gpu_skips_unless_forced() -> None:
    assert skip_reason("cpu") == "the device is the CPU"
    assert skip_reason("cpu", force=True) is None
    assert skip_reason("cuda") is None


def test_samples_are_frames_or_instances_of_the_demo_labels(tmp_path: Path) -> None:
    sio = pytest.importorskip("sleap_io")
    from sleap_rtc.demo.data import make_demo_data

    demo = make_demo_data(tmp_path / "demo", n_frames=20)
    labels = sio.load_slp(str(demo.labels_path), open_videos=False)
    frames = len(labels.user_labeled_frames)
    single = yaml.safe_load(demo.configs["single_instance"].read_text())
    centered = yaml.safe_load(demo.configs["centered_instance"].read_text())
    assert count_samples([demo.labels_path], single) == frames
    assert count_samples([demo.labels_path] * 2, single) == 2 * frames
    instances = sum(len(f.user_instances) for f in labels.labeled_frames)
    assert count_samples([demo.labels_path], centered) == instances
    (tmp_path / "junk.slp").write_bytes(b"not hdf5")
    assert count_samples([tmp_path / "junk.slp"], single) is None


# A trial's command line, and the runner around it


def test_trial_overrides_parse_as_hydra_reads_them(tmp_path: Path) -> None:
    parser_mod = pytest.importorskip("hydra.core.override_parser.overrides_parser")
    probe = Probe(
        config=Path("/c/centroid.yaml"),
        labels=[Path("/d/a b,c.slp"), Path("/d/it's.slp")],
        val_labels=[Path("/d/${v}.slp")],
        device="cpu",
        steps=2,
    )
    argv = probe.argv(16, tmp_path / "ck dir")
    assert argv[1:4] == ["train", "--config", "/c/centroid.yaml"]
    parsed = parser_mod.OverridesParser.create().parse_overrides(argv[4:])
    values = {o.key_or_group: o.value() for o in parsed}
    assert values["trainer_config.train_data_loader.batch_size"] == 16
    assert values["trainer_config.val_data_loader.batch_size"] == 16
    assert values["trainer_config.max_epochs"] == 1
    assert values["trainer_config.train_steps_per_epoch"] == 2
    assert values["trainer_config.min_train_steps_per_epoch"] == 1
    assert values["trainer_config.save_ckpt"] is False
    assert values["trainer_config.use_wandb"] is False
    assert values["trainer_config.enable_progress_bar"] is False
    assert values["trainer_config.trainer_accelerator"] == "cpu"
    assert values["trainer_config.ckpt_dir"] == str(tmp_path / "ck dir")
    assert values["data_config.train_labels_path"] == ["/d/a b,c.slp", "/d/it's.slp"]
    assert values["data_config.val_labels_path"] == ["/d/\\${v}.slp"]
    auto = Probe(config=Path("/c.yaml"), labels=[Path("/l.slp")]).argv(4, tmp_path)
    assert not any("trainer_accelerator" in a or "val_labels_path" in a for a in auto)


# A stand-in for sleap-nn: leaves a file in its checkpoint folder, then behaves as asked.
_FAKE = """\
import pathlib, sys, time
ckpt = next(a for a in sys.argv if a.startswith("++trainer_config.ckpt_dir="))
folder = pathlib.Path(ckpt.split("=", 1)[1].strip("'")) / "probe"
folder.mkdir(parents=True)
(folder / "initial_config.yaml").write_text("{}")
mode = MODE
if mode == "fits":
    print("Finished training")
elif mode == "oom":
    print("Traceback (most recent call last):")
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.00 GiB.")
    print("2026-01-01 | Finished training loop.")
    sys.exit(1)
elif mode == "error":
    print("FileNotFoundError: [Errno 2] No such file: '/nope.slp'")
    sys.exit(1)
else:
    time.sleep(60)
"""


def fake_probe(mode: str, timeout: float = 60.0) -> Probe:
    script = _FAKE.replace("MODE", repr(mode))
    return Probe(
        config=Path("/c.yaml"),
        labels=[Path("/l.slp")],
        timeout=timeout,
        sleap_nn=[sys.executable, "-c", script],
    )


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where trials make their temporary folders."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.parametrize(
    ("mode", "outcome", "message"),
    [
        ("fits", Outcome.FITS, ""),
        ("oom", Outcome.OOM, "torch.OutOfMemoryError: CUDA out of memory"),
        ("error", Outcome.ERROR, "FileNotFoundError: [Errno 2] No such file: '/nope.slp'"),
    ],
)
def test_a_trial_runs_the_command_reads_its_outcome_and_leaves_nothing(
    mode: str, outcome: Outcome, message: str, scratch: Path
) -> None:
    result = fake_probe(mode).run(8)
    assert result.batch_size == 8 and result.outcome is outcome
    assert result.message.startswith(message)
    assert result.seconds > 0
    assert list(scratch.iterdir()) == []


def test_a_trial_that_runs_too_long_is_stopped_as_an_error(scratch: Path) -> None:
    result = fake_probe("hang", timeout=1.0).run(8)
    assert result.outcome is Outcome.ERROR and "longer than 1 s" in result.message
    assert result.seconds < 30
    assert list(scratch.iterdir()) == []


def test_a_missing_sleap_nn_is_an_error(tmp_path: Path) -> None:
    probe = Probe(
        config=Path("/c.yaml"), labels=[Path("/l.slp")], sleap_nn=[str(tmp_path / "no-sleap-nn")]
    )
    result = probe.run(4)
    assert result.outcome is Outcome.ERROR and "can't run" in result.message
