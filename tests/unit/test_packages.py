"""Which members of an unpacked training package become the job's configs and labels."""

from __future__ import annotations

import pytest

from sleap_rtc.client.errors import ClientError
from sleap_rtc.client.packages import package_train_spec

UP = "/uploads/alice/pkg"


def test_configs_and_the_only_labels_file_are_used() -> None:
    spec = package_train_spec(
        "pkg.zip",
        [f"{UP}/b.yml", f"{UP}/a.yaml", f"{UP}/labels.slp", f"{UP}/notes.txt"],
        {"config_paths": (), "labels_path": None, "max_epochs": 3, "unrelated": 1},
    )
    assert spec.config_paths == [f"{UP}/a.yaml", f"{UP}/b.yml"]
    assert spec.labels_path == f"{UP}/labels.slp"
    assert spec.max_epochs == 3


def test_named_configs_and_labels_win() -> None:
    spec = package_train_spec(
        "pkg.zip",
        [f"{UP}/a.yaml", f"{UP}/one.slp", f"{UP}/two.slp"],
        {"config_paths": ("/vast/c.yaml",), "labels_path": "/vast/l.slp"},
    )
    assert spec.config_paths == ["/vast/c.yaml"]
    assert spec.labels_path == "/vast/l.slp"


def test_no_config_or_several_labels_are_clear_errors() -> None:
    with pytest.raises(ClientError, match=r"pkg\.zip holds no config YAML"):
        package_train_spec("pkg.zip", [f"{UP}/labels.slp"], {})
    with pytest.raises(ClientError, match=r"holds 2 \.slp files \(1\.slp, 2\.slp\); say which"):
        package_train_spec("pkg.zip", [f"{UP}/a.yaml", f"{UP}/1.slp", f"{UP}/2.slp"], {}, UP)


def test_the_member_the_error_suggests_is_accepted() -> None:
    files = [f"{UP}/a.yaml", f"{UP}/data/1.slp", f"{UP}/data/2.slp", f"{UP}/old/2.slp"]
    with pytest.raises(ClientError, match=r"e\.g\. --labels data/1\.slp") as refused:
        package_train_spec("pkg.zip", files, {}, UP)
    suggested = str(refused.value).rsplit("--labels ", 1)[1]
    spec = package_train_spec("pkg.zip", files, {"labels_path": suggested}, UP)
    assert spec.labels_path == f"{UP}/data/1.slp"
    by_name = package_train_spec("pkg.zip", files, {"labels_path": "1.slp"}, UP)
    assert by_name.labels_path == f"{UP}/data/1.slp"
    with pytest.raises(ClientError, match=r"several files named '2\.slp'; say which: "):
        package_train_spec("pkg.zip", files, {"labels_path": "2.slp"}, UP)
    with pytest.raises(ClientError, match=r"holds no 'nope\.slp'"):
        package_train_spec("pkg.zip", files, {"labels_path": "nope.slp"}, UP)
    config = package_train_spec(
        "pkg.zip", files, {"config_paths": ("a.yaml",), "labels_path": "data/2.slp"}, UP
    )
    assert config.config_paths == [f"{UP}/a.yaml"]
