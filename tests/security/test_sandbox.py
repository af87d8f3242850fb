"""Code a member smuggles into a checkpoint runs, with the real sleap-nn, inside the sandbox.

sleap-nn loads checkpoints with ``torch.load(weights_only=False)``, so a pickled
object's ``__reduce__`` runs as the job. Both ways in are tried through a real
room: pretrained backbone weights named in a training config, and a model folder
given to ``track``. The payload tries what an attacker wants (write outside the
mounts, read the worker's state and environment, signal the worker) and writes
what it could do into the mount, where the test reads it. It must have run, and
every attempt must have been refused.

The worker runs with its default warm engine, so the payload runs in a step forked
from the engine's zygote: it is aimed at the worker and at that parent alike.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from sleap_rtc.client.jobs import WorkerSession
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from tests.security.conftest import Layout
from tests.servers import Room

pytestmark = pytest.mark.slow

PROBE = """
import json, os
report = {}
def attempt(name, action):
    try:
        action()
        report[name] = "allowed"
    except Exception as exc:
        report[name] = type(exc).__name__
attempt("write_outside", lambda: open(OUTSIDE + "/pwned-" + TAG, "w").write("x"))
attempt("read_state", lambda: open(STATE + "/jobs.sqlite3", "rb").read(1))
attempt("list_worker_home", lambda: os.listdir(HOME))
for who, pid in (("worker", WORKER), ("parent", os.getppid())):
    attempt("read_%s_environ" % who, lambda: open("/proc/%d/environ" % pid, "rb").read())
    attempt("read_%s_memory" % who, lambda: open("/proc/%d/mem" % pid, "rb").read(1))
    attempt("read_%s_fds" % who, lambda: os.readlink("/proc/%d/fd/0" % pid))
    attempt("read_%s_cwd" % who, lambda: os.listdir("/proc/%d/cwd" % pid))
    attempt("signal_%s" % who, lambda: os.kill(pid, 0))
report["secret_env"] = sorted(k for k in os.environ if k.startswith("SLEAP_RTC") or "DATABASE" in k)
report["parent"] = os.getppid()
open(DATA + "/report-" + TAG + ".json", "w").write(json.dumps(report))
"""


class _Payload:
    """Unpickles by running PROBE, then returns an (empty) checkpoint."""

    def __init__(self, tag: str, layout: Layout, worker: int) -> None:
        self.tag = tag
        self.layout = layout
        self.worker = worker

    def __reduce__(self) -> tuple[Any, ...]:
        names = {
            "TAG": self.tag,
            "OUTSIDE": str(self.layout.outside),
            "STATE": str(self.layout.state),
            "HOME": str(self.layout.worker_home),
            "DATA": str(self.layout.data),
            "WORKER": self.worker,
        }
        code = "".join(f"{k} = {v!r}\n" for k, v in names.items()) + PROBE
        return (eval, (f"exec({code!r}, {{}}) or {{'state_dict': {{}}}}",))


def _assert_confined(report_path: Path, layout: Layout, room: Room, tag: str) -> None:
    assert report_path.is_file(), "the payload did not run: the test proves nothing"
    report = json.loads(report_path.read_text())
    # It ran warm: forked from the warm engine, a child of the worker.
    assert report["parent"] != room.worker.pid
    assert psutil.Process(report["parent"]).ppid() == room.worker.pid
    denied = {k: v for k, v in report.items() if k not in ("secret_env", "parent")}
    assert all(v in ("PermissionError", "OSError") for v in denied.values()), report
    assert report["secret_env"] == [], report
    assert not (layout.outside / f"pwned-{tag}").exists()


async def test_checkpoints_that_run_code_stay_in_the_sandbox(
    hostile_room: Room, layout: Layout
) -> None:
    import torch

    from sleap_rtc.demo.data import make_demo_data

    demo = make_demo_data(layout.data / "demo")
    evil = layout.data / "evil"
    evil.mkdir()
    torch.save(_Payload("pretrained", layout, hostile_room.worker.pid), evil / "pretrained.ckpt")
    config = yaml.safe_load(demo.configs["single_instance"].read_text())
    config["data_config"]["train_labels_path"] = [str(demo.labels_path)]
    config["model_config"]["pretrained_backbone_weights"] = str(evil / "pretrained.ckpt")
    config["trainer_config"]["max_epochs"] = 1
    (evil / "train.yaml").write_text(yaml.safe_dump(config))

    async with hostile_room.client("alice") as server:
        session = await WorkerSession.open(server, "lab", hostile_room.worker_id, transport="relay")
        async with session:
            # 1. Pretrained weights named by a config: sleap-nn loads them while setting up.
            job = await session.submit(TrainSpec(config_paths=[str(evil / "train.yaml")]))
            await job.wait()  # it fails after the payload: the "checkpoint" holds no weights
            report = layout.data / "report-pretrained.json"
            _assert_confined(report, layout, hostile_room, "pretrained")

            # 2. A model folder for track whose best.ckpt is the payload.
            config["model_config"]["pretrained_backbone_weights"] = None
            (evil / "plain.yaml").write_text(yaml.safe_dump(config))
            job = await session.submit(TrainSpec(config_paths=[str(evil / "plain.yaml")]))
            trained = await job.wait()
            assert trained.type == "JOB_COMPLETE", trained
            model = evil / "model"
            shutil.copytree(trained.outputs[0], model)
            torch.save(_Payload("track", layout, hostile_room.worker.pid), model / "best.ckpt")
            job = await session.submit(
                TrackSpec(data_path=str(demo.labels_path), model_paths=[str(model)])
            )
            await job.wait()
            _assert_confined(layout.data / "report-track.json", layout, hostile_room, "track")
