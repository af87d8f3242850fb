from __future__ import annotations

from pathlib import Path

import pytest

from sleap_rtc import locations
from sleap_rtc.worker.config import WorkerConfigError, load_worker_config


def test_toml_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    path = tmp_path / "worker.toml"
    path.write_text(
        f'name = "gpu1"\ndevice = "cuda:1"\n[[mounts]]\npath = "{tmp_path / "a"}"\n'
        'label = "a"\nread_only = true\n'
    )
    config = load_worker_config(
        path, mounts=[{"path": str(tmp_path / "b"), "label": "b"}], device=None
    )
    assert config.name == "gpu1" and config.device == "cuda:1"
    mounts = {m.label: m for m in config.build_mounts()}
    assert set(mounts) == {"a", "b", "models", "uploads"}
    assert mounts["a"].read_only and not mounts["models"].read_only
    # Default locations honour SLEAP_RTC_HOME (set by the test fixture).
    assert config.resolved_state_dir().is_relative_to(locations.data_dir())


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('device = "gpu"', "device"),
        ("max_concurrent_jobs = 0", "max_concurrent_jobs"),
        ("bogus = 1", "bogus"),
        ("name = ", "not valid TOML"),
        ('[[mounts]]\npath = "relative"', "mounts[0]"),
        ('[[path_maps]]\nfrom = "C:/lab"\nto = "data/lab"', "path_maps"),
        ('[[path_maps]]\nto = "/data/lab"', "from"),
        ('direct_listen = "nope"', "direct_listen: .*HOST:PORT.*'nope'"),
        ('direct_listen = "0.0.0.0:99999"', "direct_listen: .*'0.0.0.0:99999'"),
    ],
)
def test_errors_name_field_and_file(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "worker.toml"
    path.write_text(text + "\n")
    with pytest.raises(WorkerConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        load_worker_config(path).build_mounts()


def test_path_maps_are_read_as_the_worker_s_maps(tmp_path: Path) -> None:
    path = tmp_path / "worker.toml"
    path.write_text(
        '[[path_maps]]\nfrom = "C:\\\\Users\\\\lab"\nto = "/data/lab"\n'
        '[[path_maps]]\nfrom = "/Volumes/lab"\nto = "/data/lab"\n'
    )
    maps = load_worker_config(path).worker_path_maps()
    assert [(m.old, m.new, m.source) for m in maps] == [
        ("C:/Users/lab", "/data/lab", "worker"),
        ("/Volumes/lab", "/data/lab", "worker"),
    ]


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(WorkerConfigError, match="does not exist"):
        load_worker_config(tmp_path / "nope.toml")


def test_a_registered_backend_gets_its_table_and_builds_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import BaseModel, ConfigDict

    from sleap_rtc.engine import backends
    from sleap_rtc.engine.backend import BackendContext, BackendPlugin
    from sleap_rtc.engine.backends.local.backend import LocalBackend

    class QueueSettings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        queue: str = "batch"

    built: list[tuple[QueueSettings, BackendContext]] = []

    def build(settings: QueueSettings, context: BackendContext) -> LocalBackend:
        built.append((settings, context))
        return LocalBackend()

    plugin = BackendPlugin("pbs", "PBS jobs", QueueSettings, build, local_gpus=False)
    monkeypatch.setitem(backends.BACKENDS, "pbs", plugin)
    toml = tmp_path / "worker.toml"
    toml.write_text(f'backend = "pbs"\nstate_dir = "{tmp_path}"\n[pbs]\nqueue = "gpu"\n')
    config = load_worker_config(toml)
    assert config.backend_plugin is plugin and config.backend_settings().queue == "gpu"
    config.build_backend()
    assert built == [(QueueSettings(queue="gpu"), BackendContext(state_dir=tmp_path))]

    toml.write_text('backend = "pbs"\n[pbs]\nqeueu = "gpu"\n')
    with pytest.raises(WorkerConfigError, match=r"pbs\.qeueu"):
        load_worker_config(toml)
    toml.write_text('backend = "lsf"\n')
    with pytest.raises(WorkerConfigError, match="backend 'lsf' is not one of: local, slurm, pbs"):
        load_worker_config(toml)
