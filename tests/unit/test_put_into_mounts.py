"""Uploads into a writable mount's folder (``fs put``): only there, never over a file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from sleap_rtc.jobs.mounts import Mount, Mounts
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.transfer import TransferError
from sleap_rtc.worker.uploads import Uploads


def _setup(tmp_path: Path) -> tuple[Uploads, Path, Path]:
    project, shared = tmp_path / "project", tmp_path / "shared"
    (project / "labels").mkdir(parents=True)
    shared.mkdir()
    mounts = Mounts(
        [Mount.create(project, "project"), Mount.create(shared, "shared", read_only=True)]
    )
    return Uploads(tmp_path / "uploads", "alice", 1 << 20, mounts), project, shared


def _put(uploads: Uploads, data: bytes, dest: str, name: str = "labels.v003.slp") -> p.UploadDone:
    upload_id = hashlib.sha256(os.urandom(8)).hexdigest()[:16]
    uploads.begin(
        p.UploadBegin(
            upload_id=upload_id,
            name=name,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            dest=dest,
        )
    )
    assert uploads.frame(upload_id, 0, data) == len(data) or not data
    return uploads.end(p.UploadEnd(upload_id=upload_id))


def _code(excinfo: pytest.ExceptionInfo[TransferError]) -> str:
    return excinfo.value.code


def test_a_file_lands_in_the_folder_under_its_name_by_path_or_label(tmp_path: Path) -> None:
    uploads, project, _ = _setup(tmp_path)
    done = _put(uploads, b"first", str(project / "labels"))
    assert Path(done.path) == project / "labels" / "labels.v003.slp"
    assert Path(done.path).read_bytes() == b"first"
    done = _put(uploads, b"second", "project/labels", name="other.slp")
    assert Path(done.path).read_bytes() == b"second"
    assert sorted(p.name for p in (project / "labels").iterdir()) == [
        "labels.v003.slp",
        "other.slp",
    ]  # no .part left


def test_a_file_that_is_there_is_never_replaced(tmp_path: Path) -> None:
    uploads, project, _ = _setup(tmp_path)
    (project / "labels" / "labels.v003.slp").write_bytes(b"precious")
    with pytest.raises(TransferError) as at_begin:
        _put(uploads, b"new", "project/labels")
    assert _code(at_begin) == "EXISTS" and "exists already" in at_begin.value.message

    # One that appears while the upload runs is kept too, and nothing else is left.
    data = b"late"
    uploads.begin(
        p.UploadBegin(
            upload_id="u1",
            name="race.slp",
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            dest="project/labels",
        )
    )
    uploads.frame("u1", 0, data)
    (project / "labels" / "race.slp").write_bytes(b"theirs")
    with pytest.raises(TransferError) as at_end:
        uploads.end(p.UploadEnd(upload_id="u1"))
    assert _code(at_end) == "EXISTS"
    assert (project / "labels" / "race.slp").read_bytes() == b"theirs"
    assert (project / "labels" / "labels.v003.slp").read_bytes() == b"precious"
    assert sorted(p.name for p in (project / "labels").iterdir()) == ["labels.v003.slp", "race.slp"]


def test_read_only_outside_missing_and_linked_folders_are_refused(tmp_path: Path) -> None:
    uploads, project, shared = _setup(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (project / "escape").symlink_to(outside)
    cases = {
        str(shared): "READ_ONLY",
        "shared": "READ_ONLY",
        str(outside): "ACCESS_DENIED",
        str(project / "escape"): "ACCESS_DENIED",
        "project/nope": "PATH_NOT_FOUND",
    }
    for dest, code in cases.items():
        with pytest.raises(TransferError) as refused:
            _put(uploads, b"x", dest)
        assert _code(refused) == code, dest
    assert list(outside.iterdir()) == [] and list(shared.iterdir()) == []


def test_unpack_goes_with_the_upload_folder_only(tmp_path: Path) -> None:
    uploads, project, _ = _setup(tmp_path)
    with pytest.raises(TransferError) as refused:
        uploads.begin(
            p.UploadBegin(
                upload_id="u1", name="a.zip", size=1, sha256="0" * 64, unpack=True, dest="project"
            )
        )
    assert _code(refused) == "INVALID_REQUEST" and "unpack" in refused.value.message
    assert list(project.iterdir()) == [project / "labels"]
