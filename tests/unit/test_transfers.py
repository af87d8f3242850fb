"""File transfers: what a hostile peer can send is refused, and good files arrive whole."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import zipfile
from pathlib import Path

import pytest

from sleap_rtc.client.errors import ClientError
from sleap_rtc.client.jobs import _local_target
from sleap_rtc.jobs.mounts import Mount, Mounts
from sleap_rtc.protocol import jobs as p
from sleap_rtc.worker.transfers import TransferError, Uploads, list_download, safe_extract


def _zip(path: Path, entries: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


@pytest.mark.parametrize(
    "name", ["../escape.txt", "/abs/path.txt", "a/../../b.txt", "C:/windows.txt", "..\\\\x.txt"]
)
def test_zip_entries_that_escape_are_refused(tmp_path: Path, name: str) -> None:
    archive = _zip(tmp_path / "bad.zip", {"ok.txt": b"fine", name: b"evil"})
    with pytest.raises(TransferError) as caught:
        safe_extract(archive, tmp_path / "out", max_bytes=10_000)
    assert caught.value.code == "INVALID_ZIP"
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "b.txt").exists()


def test_zip_links_bombs_and_junk_are_refused(tmp_path: Path) -> None:
    link = _zip(tmp_path / "link.zip", {}, links={"passwd": "/etc/passwd"})
    with pytest.raises(TransferError, match="is a link"):
        safe_extract(link, tmp_path / "o1", max_bytes=10_000)
    bomb = _zip(tmp_path / "bomb.zip", {"zeros": b"\0" * 200_000})
    with pytest.raises(TransferError, match="unpacks to over"):
        safe_extract(bomb, tmp_path / "o2", max_bytes=100_000)
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(TransferError, match="not a zip"):
        safe_extract(junk, tmp_path / "o3", max_bytes=100_000)


def test_a_good_zip_unpacks_inside_its_folder(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "pkg.zip", {"config.yaml": b"a: 1\n", "data/labels.slp": b"x"})
    files = safe_extract(archive, tmp_path / "out", max_bytes=10_000)
    assert sorted(f.relative_to(tmp_path / "out").as_posix() for f in files) == [
        "config.yaml",
        "data/labels.slp",
    ]
    assert (tmp_path / "out" / "config.yaml").read_bytes() == b"a: 1\n"


def _begin(data: bytes, name: str = "pkg.zip", **kw: object) -> p.UploadBegin:
    return p.UploadBegin(
        upload_id="u1",
        name=name,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        **kw,  # type: ignore[arg-type]
    )


def _chunks(data: bytes) -> list[p.UploadChunk]:
    step = p.CHUNK_BYTES
    return [
        p.UploadChunk(upload_id="u1", offset=i, data=base64.b64encode(data[i : i + step]).decode())
        for i in range(0, len(data), step)
    ]


def test_upload_round_trip_with_acks(tmp_path: Path) -> None:
    data = os.urandom(p.ACK_EVERY + 3 * p.CHUNK_BYTES)
    uploads = Uploads(tmp_path, "alice", max_bytes=10 * len(data))
    uploads.begin(_begin(data, "raw.bin"))
    acks = [a for a in (uploads.chunk(c) for c in _chunks(data)) if a is not None]
    assert acks and acks[0] >= p.ACK_EVERY
    done = uploads.end(p.UploadEnd(upload_id="u1"))
    landed = Path(done.path)
    assert landed.parent == tmp_path / "alice" and landed.read_bytes() == data
    assert not list((tmp_path / "alice").glob(".*.part"))


def test_upload_refuses_wrong_offsets_sizes_hashes_and_oversize(tmp_path: Path) -> None:
    data = b"x" * 1000
    uploads = Uploads(tmp_path, "alice", max_bytes=500)
    with pytest.raises(TransferError) as big:
        uploads.begin(_begin(data))
    assert big.value.code == "TOO_LARGE"

    uploads = Uploads(tmp_path, "alice", max_bytes=10_000)
    uploads.begin(_begin(data))
    with pytest.raises(TransferError, match="expected 0"):
        uploads.chunk(p.UploadChunk(upload_id="u1", offset=5, data="eHg="))
    with pytest.raises(TransferError, match="base64"):
        uploads.chunk(p.UploadChunk(upload_id="u1", offset=0, data="@@@@"))
    uploads.abort("u1")

    uploads.begin(_begin(data))
    forged = p.UploadBegin(upload_id="u2", name="other.zip", size=4, sha256="0" * 64)
    uploads.begin(forged)
    uploads.chunk(p.UploadChunk(upload_id="u2", offset=0, data=base64.b64encode(b"abcd").decode()))
    with pytest.raises(TransferError) as mismatch:
        uploads.end(p.UploadEnd(upload_id="u2"))
    assert mismatch.value.code == "HASH_MISMATCH"
    with pytest.raises(TransferError) as short:
        uploads.end(p.UploadEnd(upload_id="u1"))
    assert short.value.code == "INCOMPLETE"
    assert not any(f.name.endswith(".part") for f in (tmp_path / "alice").iterdir())
    with pytest.raises(TransferError) as unknown:
        uploads.chunk(p.UploadChunk(upload_id="nope", offset=0, data=""))
    assert unknown.value.code == "NO_SUCH_UPLOAD"


def test_upload_names_are_plain_file_names() -> None:
    for name in ("../x.zip", "/etc/passwd", "a/b.zip", ".hidden", ""):
        with pytest.raises(ValueError):
            _begin(b"", name=name)


def test_downloads_stay_inside_the_mounts(tmp_path: Path) -> None:
    inside = tmp_path / "mount"
    (inside / "model").mkdir(parents=True)
    (inside / "model" / "best.ckpt").write_bytes(b"weights")
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    os.symlink(secret, inside / "model" / "leak.txt")
    mounts = Mounts([Mount.create(inside, "m")])
    real, files = list_download(mounts, str(inside / "model"))
    assert real == (inside / "model").resolve()
    assert [rel for _, rel in files] == ["best.ckpt"]  # the link out of the mount is left out
    with pytest.raises(TransferError) as denied:
        list_download(mounts, str(secret))
    assert denied.value.code == "ACCESS_DENIED"
    with pytest.raises(TransferError) as escaped:
        list_download(mounts, str(inside / ".." / "secret.txt"))
    assert escaped.value.code == "ACCESS_DENIED"
    with pytest.raises(TransferError) as missing:
        list_download(mounts, str(inside / "nothing"))
    assert missing.value.code == "PATH_NOT_FOUND"


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../x", "", "a\\\\..\\\\b"])
def test_client_keeps_the_workers_names_inside_the_destination(tmp_path: Path, name: str) -> None:
    with pytest.raises(ClientError, match="unsafe file name"):
        _local_target(tmp_path, name)
    assert _local_target(tmp_path, "model/best.ckpt") == tmp_path / "model" / "best.ckpt"
