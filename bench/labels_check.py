"""What reading the labels before a job costs the worker.

A labels file of ``--frames`` labeled frames over ``--videos`` real ``.mp4`` videos
(made with sleap-io in a temporary folder) is checked the way a train job's labels
are: the whole ``plan_train`` (config, paths, and now the labels and their videos).
Baseline, in the same process: ``sleap_io.load_slp`` of the same file with its
videos opened, which is the first thing sleap-nn itself does with it. The script
prints the median of each, the time the labels check adds to ``plan_train``, and the
ratio of the check to the baseline. Then the same labels as if saved on a Windows
laptop (their videos stored as ``C:/lab/...``) are planned with ``--path-map`` and their
remapped copy written, as a worker does before such a job runs; and sleap-nn's schema
check of the config is timed on its own.

    .venv/bin/python bench/labels_check.py                  # 1,000 frames, 2 videos
    .venv/bin/python bench/labels_check.py --frames 10000 --videos 4 --repeat 9
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import sleap_io as sio
import yaml

from sleap_rtc.engine.commands import labels_copies
from sleap_rtc.jobs import labels as labels_module
from sleap_rtc.jobs.config_schema import check_config
from sleap_rtc.jobs.mounts import Mount, Mounts
from sleap_rtc.jobs.specs import TrainSpec
from sleap_rtc.jobs.validation import plan_train


def make_labels(folder: Path, frames: int, videos: int) -> Path:
    skeleton = sio.Skeleton(["head", "thorax", "tail"])
    per_video = -(-frames // videos)
    clips = []
    for index in range(videos):
        path = folder / f"session{index}.mp4"
        iio.imwrite(path, np.zeros((per_video, 32, 32, 3), np.uint8), fps=30)
        clips.append(sio.load_video(str(path)))
    rng = np.random.default_rng(0)
    frames_list = [
        sio.LabeledFrame(
            video=clips[i % videos],
            frame_idx=i // videos,
            instances=[
                sio.Instance.from_numpy(rng.uniform(0, 32, (3, 2)), skeleton=skeleton)
                for _ in range(2)
            ],
        )
        for i in range(frames)
    ]
    labels = sio.Labels(labeled_frames=frames_list, videos=clips, skeletons=[skeleton])
    path = folder / "labels.slp"
    sio.save_slp(labels, str(path))
    return path


def timed(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000, help="labeled frames")
    parser.add_argument("--videos", type=int, default=2, help="videos they are spread over")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sleap-rtc-bench-") as tmp:
        folder = Path(tmp)
        labels = make_labels(folder, args.frames, args.videos)
        config = folder / "config.yaml"
        config.write_text(
            f"data_config:\n  train_labels_path: [{labels}]\n"
            "model_config: {backbone_config: {unet: {}}, head_configs: {single_instance: {}}}\n"
            "trainer_config:\n  max_epochs: 1\n"
        )
        mounts = Mounts([Mount.create(folder, "data")])
        spec = TrainSpec(config_paths=[str(config)])
        sio.load_slp(str(labels))  # warm: imports and the OS cache, for both sides
        plan_train(spec, mounts)
        baseline = timed(lambda: sio.load_slp(str(labels)), args.repeat)
        checked = timed(lambda: plan_train(spec, mounts), args.repeat)
        original = labels_module.LabelsReader.__call__
        labels_module.LabelsReader.__call__ = lambda self, real, field, raw: None  # type: ignore[method-assign]
        try:
            unchecked = timed(lambda: plan_train(spec, mounts), args.repeat)
        finally:
            labels_module.LabelsReader.__call__ = original  # type: ignore[method-assign]
        laptop = sio.load_slp(str(labels), open_videos=False)
        laptop.replace_filenames(prefix_map={str(folder): "C:/lab"}, open_videos=False)
        laptop.save(str(folder / "laptop.slp"))
        mapped_spec = TrainSpec(
            config_paths=[str(config)],
            labels_path=str(folder / "laptop.slp"),
            path_map=[("C:\\lab", str(folder))],
        )

        def plan_and_copy() -> None:
            plan = plan_train(mapped_spec, mounts)
            assert plan.video_maps, "the path map found no video"
            labels_copies(plan.video_maps, folder / "work")

        mapped = timed(plan_and_copy, args.repeat)
        data = yaml.safe_load(config.read_text())
        schema = timed(lambda: check_config(data), args.repeat * 20)
    added = checked - unchecked
    print(f"labels: {args.frames} labeled frames, {args.videos} videos, {args.repeat} runs each")
    print(f"  sleap_io.load_slp (videos opened), baseline: {baseline * 1000:8.1f} ms")
    print(f"  plan_train with the labels check:           {checked * 1000:8.1f} ms")
    print(f"  plan_train without it:                      {unchecked * 1000:8.1f} ms")
    print(f"  added by the check: {added * 1000:.1f} ms (ratio to baseline {added / baseline:.2f})")
    print(
        f"  path-mapped labels, plan_train + remapped copy: {mapped * 1000:8.1f} ms "
        f"(ratio to baseline {mapped / baseline:.2f})"
    )
    print(f"  sleap-nn schema check of the config:          {schema * 1000:8.3f} ms")


if __name__ == "__main__":
    main()
