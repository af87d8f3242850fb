"""File transfers: what a hostile peer can send is refused, and good files arrive whole."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from sleap_rtc.client.errors import ClientError
from sleap_rtc.client.transfers import local_target
from sleap_rtc.jobs.mounts import Mount, Mounts
from sleap_rtc.protocol import jobs as p
from sleap_rtc.protocol.transfer import TransferError
from sleap_rtc.worker.listing import list_download
from sleap_rtc.worker.uploads import Uploads
from sleap_rtc.worker.zips import safe_extract


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
    real, files, _ = list_download(mounts, str(inside / "model"))
    assert real == (inside / "model").resolve()
    assert [f.name for f in files] == ["best.ckpt"]  # the link out of the mount is left out
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
        local_target(tmp_path, name)
    assert local_target(tmp_path, "model/best.ckpt") == tmp_path / "model" / "best.ckpt"


# -- uploads: the worker makes every file name ------------------------------------------------


def _upload(uploads: Uploads, data: bytes, name: str, upload_id: str = "u1", **kw: object) -> Path:
    uploads.begin(
        p.UploadBegin(
            upload_id=upload_id,
            name=name,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            **kw,  # type: ignore[arg-type]
        )
    )
    step = p.CHUNK_BYTES
    for i in range(0, len(data), step):
        uploads.chunk(
            p.UploadChunk(
                upload_id=upload_id, offset=i, data=base64.b64encode(data[i : i + step]).decode()
            )
        )
    return Path(uploads.end(p.UploadEnd(upload_id=upload_id)).path)


def test_upload_ids_never_become_file_names(tmp_path: Path) -> None:
    uploads = Uploads(tmp_path, "alice", max_bytes=10_000)
    first = _upload(uploads, b"one", "model.ckpt", upload_id="AAAAAAAAAAAAAAAA-evil")
    second = _upload(uploads, b"two", "model.ckpt", upload_id="AAAAAAAAAAAAAAAA-evil")
    for landed in (first, second):
        assert landed.parent == tmp_path / "alice"
        assert "AAAA" not in landed.name and landed.name.endswith("-model.ckpt")
    assert first != second and first.read_bytes() == b"one" and second.read_bytes() == b"two"


def test_a_name_as_long_as_allowed_is_stored_short_with_its_extension(tmp_path: Path) -> None:
    uploads = Uploads(tmp_path, "alice", max_bytes=10_000)
    archive = _zip(tmp_path / "src.zip", {"config.yaml": b"a: 1\n"})
    name = "p" * 251 + ".zip"
    landed = _upload(uploads, archive.read_bytes(), name, unpack=True)
    assert landed.parent == tmp_path / "alice" and landed.name.endswith("-unpacked")
    assert (landed / "config.yaml").read_bytes() == b"a: 1\n"
    stored = [f.name for f in (tmp_path / "alice").iterdir() if f.is_file()]
    assert len(stored) == 1 and stored[0].endswith(".zip") and len(stored[0]) <= 255


def test_a_long_name_in_any_script_is_stored_within_the_byte_limit(tmp_path: Path) -> None:
    uploads = Uploads(tmp_path, "alice", max_bytes=10_000)
    landed = _upload(uploads, b"labels", "é" * 125 + ".slp")
    assert landed.read_bytes() == b"labels" and landed.name.endswith("é.slp")
    assert len(landed.name.encode("utf-8")) <= 255


@pytest.mark.parametrize(
    "user", ["../../etc", "..", ".", "a/b", "/", "x" * 300, "jöe", "", "a\x00b", ".hidden"]
)
def test_every_user_gets_a_folder_directly_inside_the_upload_root(
    tmp_path: Path, user: str
) -> None:
    root = tmp_path / "uploads"
    landed = _upload(Uploads(root, user, max_bytes=100), b"x", "f.txt")
    folder = landed.parent
    assert folder.parent == root and not folder.name.startswith(".")
    assert len(folder.name) <= 64 and folder.name.isascii()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uploads"]


def test_a_user_folder_swapped_for_a_link_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "uploads"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "alice").symlink_to(outside)
    uploads = Uploads(root, "alice", max_bytes=100)
    with pytest.raises(TransferError) as caught:
        uploads.begin(_begin(b"x", "f.txt"))
    assert caught.value.code == "UPLOAD_FAILED"
    assert list(outside.iterdir()) == []


def test_a_failed_unpack_leaves_nothing_behind(tmp_path: Path) -> None:
    uploads = Uploads(tmp_path, "alice", max_bytes=10_000)
    archive = _zip(tmp_path / "bad.zip", {"ok.txt": b"fine", "../escape.txt": b"evil"})
    with pytest.raises(TransferError) as caught:
        _upload(uploads, archive.read_bytes(), "bad.zip", unpack=True)
    assert caught.value.code == "INVALID_ZIP"
    assert list((tmp_path / "alice").iterdir()) == []


def test_sweep_removes_old_uploads_and_keeps_new_or_used_ones(tmp_path: Path) -> None:
    root = tmp_path / "uploads"
    uploads = Uploads(root, "alice", max_bytes=10_000)
    old_file = _upload(uploads, b"old", "old.bin", upload_id="a")
    used = _upload(uploads, b"used", "used.bin", upload_id="b")
    new_file = _upload(uploads, b"new", "new.bin", upload_id="c")
    archive = _zip(tmp_path / "pkg.zip", {"config.yaml": b"a: 1\n"})
    unpacked = _upload(uploads, archive.read_bytes(), "pkg.zip", upload_id="d", unpack=True)
    stale_part = root / "alice" / ".0123-lost.bin.part"
    stale_part.write_bytes(b"half")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not an upload")
    link = root / "alice" / "link"
    link.symlink_to(outside)
    zipped = next((root / "alice").glob("*-pkg.zip"))
    now = 1_000_000_000.0
    for path in (old_file, used, unpacked, zipped, stale_part):
        os.utime(path, (now - 7200, now - 7200))
    os.utime(link, (now - 7200, now - 7200), follow_symlinks=False)
    os.utime(new_file, (now - 60, now - 60))
    removed = Uploads.sweep(root, 3600, keep=[used], now=now)
    assert sorted(removed) == sorted([old_file, unpacked, zipped, stale_part, link])
    assert sorted((root / "alice").iterdir()) == sorted([used, new_file])
    assert (outside / "keep.txt").read_text() == "not an upload"


# -- zips that used to drop the channel -------------------------------------------------------


def _patch_method(archive: Path, method: int) -> None:
    """Mark every entry as compressed with ``method`` (local and central headers)."""
    data = bytearray(archive.read_bytes())
    for signature, field_at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = data.find(signature)
        while at != -1:
            data[at + field_at : at + field_at + 2] = method.to_bytes(2, "little")
            at = data.find(signature, at + 4)
    archive.write_bytes(bytes(data))


def _corrupt_entry(archive: Path, payload: bytes) -> None:
    data = archive.read_bytes()
    at = data.rindex(payload)
    archive.write_bytes(data[:at] + bytes([payload[0] ^ 0xFF]) + data[at + 1 :])


def _dupe_zip(path: Path) -> Path:
    with pytest.warns(UserWarning), zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.yaml", b"first")
        zf.writestr("config.yaml", b"second")
    return path


def _dot_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        zf.writestr(zipfile.ZipInfo("."), b"dot")
    return path


def _crc_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("good.txt", b"good")
        zf.writestr("bad.txt", b"PAYLOAD-" * 100)
    _corrupt_entry(path, b"PAYLOAD-")
    return path


def _method_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("weird.bin", b"data")
    _patch_method(path, 99)
    return path


@pytest.mark.parametrize(
    ("make", "entry"),
    [
        (_dupe_zip, "config.yaml"),
        (_dot_zip, "."),
        (lambda path: _zip(path, {"n" * 300 + ".txt": b"x"}), "n" * 50),
        (lambda path: _zip(path, {"a": b"file", "a/b": b"in a file?"}), "a"),
        (_crc_zip, "bad.txt"),
        (_method_zip, "weird.bin"),
    ],
    ids=["duplicate", "dot", "long-name", "file-and-folder", "bad-crc", "method"],
)
def test_bad_zips_are_clean_errors_that_leave_nothing(
    tmp_path: Path, make: Callable[[Path], Path], entry: str
) -> None:
    archive = make(tmp_path / "bad.zip")
    out = tmp_path / "out"
    with pytest.raises(TransferError) as caught:
        safe_extract(archive, out, max_bytes=100_000)
    assert caught.value.code == "INVALID_ZIP"
    assert entry in caught.value.message
    assert len(caught.value.message) < 400
    assert not out.exists()


def test_upload_done_fits_one_message_for_a_zip_of_many_files(tmp_path: Path) -> None:
    names = {f"data/{'f' * 100}_{i:04d}.bin": b"" for i in range(999)}
    names["config.yaml"] = b"a: 1\n"
    archive = _zip(tmp_path / "many.zip", names)
    uploads = Uploads(tmp_path / "up", "alice", max_bytes=10_000_000)
    data = archive.read_bytes()
    uploads.begin(_begin(data, "many.zip", unpack=True))
    for c in _chunks(data):
        uploads.chunk(c)
    done = uploads.end(p.UploadEnd(upload_id="u1"))
    p.encode(done)
    assert any(f.endswith("config.yaml") for f in done.files)


# -- downloads: what is sent is what was listed, inside the mounts ---------------------------


def _mount_tree(tmp_path: Path) -> tuple[Path, Path, Mounts]:
    inside = tmp_path / "mount"
    (inside / "model").mkdir(parents=True)
    (inside / "model" / "best.ckpt").write_bytes(b"weights")
    (inside / "model" / "config.yaml").write_text("a: 1\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours, and longer than the weights")
    return inside, secret, Mounts([Mount.create(inside, "m")])


@pytest.mark.parametrize("swap", ["link-out", "other-file", "folder-link"])
def test_a_file_changed_after_listing_is_not_sent(tmp_path: Path, swap: str) -> None:
    from sleap_rtc.worker.listing import hash_listed, open_listed

    inside, secret, mounts = _mount_tree(tmp_path)
    _, files, _ = list_download(mounts, str(inside / "model"))
    best = next(f for f in files if f.name == "best.ckpt")
    hash_listed(best)
    path = inside / "model" / "best.ckpt"
    if swap == "link-out":
        path.unlink()
        path.symlink_to(secret)
    elif swap == "other-file":
        path.rename(inside / "model" / "old.ckpt")  # kept, so its inode is not reused
        path.write_bytes(b"replaced")
    else:
        (inside / "model").rename(inside / "model.old")
        (tmp_path / "fake").mkdir()
        (tmp_path / "fake" / "best.ckpt").symlink_to(secret)
        (inside / "model").symlink_to(tmp_path / "fake")
    for use in (open_listed, hash_listed):
        with pytest.raises(TransferError) as caught:
            use(best)
        assert caught.value.code == "CHANGED" and "best.ckpt" in caught.value.message


def test_loops_fifos_and_links_in_a_downloaded_folder(tmp_path: Path) -> None:
    inside, secret, mounts = _mount_tree(tmp_path)
    model = inside / "model"
    (model / "leak").symlink_to(secret)
    (model / "self").symlink_to(model / "self")
    (model / "ping").symlink_to(model / "pong")
    (model / "pong").symlink_to(model / "ping")
    (model / "dangling").symlink_to(model / "nothing")
    (model / "to_folder").symlink_to(inside)
    os.mkfifo(model / "pipe")
    (inside / "shared.txt").write_text("elsewhere in the mount")
    (model / "shared.txt").symlink_to(inside / "shared.txt")
    (model / "sub").mkdir()
    (model / "sub" / "z.txt").write_text("z")
    real, files, _ = list_download(mounts, str(model))
    assert real == model
    # Links to files inside the mounts are sent as those files; the rest is left out.
    assert [f.name for f in files] == ["best.ckpt", "config.yaml", "shared.txt", "sub/z.txt"]
    shared = next(f for f in files if f.name == "shared.txt")
    assert shared.where.real == inside / "shared.txt"
    with pytest.raises(TransferError) as loop:
        list_download(mounts, str(model / "self"))
    assert loop.value.code == "INVALID_PATH" and "loops" in loop.value.message


def test_long_and_missing_download_paths_are_cut_in_errors(tmp_path: Path) -> None:
    inside, _, mounts = _mount_tree(tmp_path)
    long = str(inside) + "/" + "/".join(["d" * 200] * 18)
    with pytest.raises(TransferError) as caught:
        list_download(mounts, long)
    assert caught.value.code == "PATH_NOT_FOUND" and len(caught.value.message) < 300
    with pytest.raises(TransferError) as relative:
        list_download(mounts, "r" * 4000)
    assert relative.value.code == "INVALID_PATH" and len(relative.value.message) < 400


class _Sink:
    """Collects what a Downloads object sends (stands in for the channel)."""

    def __init__(self) -> None:
        self.sent: list[p._Msg] = []
        self.changed = asyncio.Event()

    async def __call__(self, message: p._Msg) -> None:
        p.encode(message)  # every message must fit the protocol
        self.sent.append(message)
        self.changed.set()

    async def wait_for(self, test: Callable[[list[p._Msg]], bool]) -> None:
        async def poll() -> None:
            while not test(self.sent):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(poll(), 10)


def _big_mount(tmp_path: Path, size: int) -> tuple[Path, Mounts]:
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "big.bin").write_bytes(os.urandom(size))
    return folder / "big.bin", Mounts([Mount.create(folder, "big")])


async def test_downloads_round_trip_with_honest_acks(tmp_path: Path) -> None:
    from sleap_rtc.worker.downloads import Downloads

    path, mounts = _big_mount(tmp_path, 3 * p.TRANSFER_WINDOW + 123)
    sink = _Sink()
    downloads = Downloads(mounts, sink)
    await downloads.start(p.Download(request_id="r1", path=str(path)))
    received = bytearray()
    acked = 0
    while True:
        await sink.wait_for(lambda sent: bool(sent))
        message = sink.sent.pop(0)
        if isinstance(message, p.DownloadEnd):
            break
        if isinstance(message, p.DownloadBegin):
            begin = message
            continue
        assert isinstance(message, p.DownloadChunk), message
        received += base64.b64decode(message.data)
        if len(received) - acked >= p.ACK_EVERY:
            acked = len(received)
            downloads.ack(p.DownloadAck(transfer_id=begin.transfer_id, received=acked))
    assert bytes(received) == path.read_bytes()
    assert begin.files[0].sha256 == hashlib.sha256(received).hexdigest()
    await downloads.close()


async def test_an_ack_for_more_than_was_sent_ends_the_download(tmp_path: Path) -> None:
    from sleap_rtc.worker.downloads import Downloads

    path, mounts = _big_mount(tmp_path, 4 * p.TRANSFER_WINDOW)
    sink = _Sink()
    downloads = Downloads(mounts, sink)
    await downloads.start(p.Download(request_id="r1", path=str(path)))
    await sink.wait_for(lambda sent: sum(isinstance(m, p.DownloadChunk) for m in sent) > 0)
    begin = next(m for m in sink.sent if isinstance(m, p.DownloadBegin))
    downloads.ack(p.DownloadAck(transfer_id=begin.transfer_id, received=10**12))
    await sink.wait_for(lambda sent: isinstance(sent[-1], p.Error))
    error = sink.sent[-1]
    assert isinstance(error, p.Error) and error.code == "INVALID_ACK"
    assert error.request_id == "r1" and error.transfer_id == begin.transfer_id
    chunks = [m for m in sink.sent if isinstance(m, p.DownloadChunk)]
    # The lie did not open the window: no more than one window was ever sent.
    assert sum(len(base64.b64decode(c.data)) for c in chunks) <= p.TRANSFER_WINDOW
    assert len(downloads) == 0


async def test_at_most_a_few_downloads_at_once(tmp_path: Path) -> None:
    from sleap_rtc.worker.downloads import Downloads
    from sleap_rtc.worker.transfers import MAX_DOWNLOADS

    path, mounts = _big_mount(tmp_path, 2 * p.TRANSFER_WINDOW)
    sink = _Sink()
    downloads = Downloads(mounts, sink)
    for i in range(MAX_DOWNLOADS + 1):
        await downloads.start(p.Download(request_id=f"r{i}", path=str(path)))
    refused = [m for m in sink.sent if isinstance(m, p.Error)]
    assert [(e.code, e.request_id) for e in refused] == [("TOO_MANY", f"r{MAX_DOWNLOADS}")]
    assert len(downloads) == MAX_DOWNLOADS
    await downloads.close()
    assert len(downloads) == 0


async def test_a_failed_download_answers_with_its_request_id(tmp_path: Path) -> None:
    from sleap_rtc.worker.downloads import Downloads

    _, mounts = _big_mount(tmp_path, 10)
    sink = _Sink()
    downloads = Downloads(mounts, sink)
    await downloads.start(p.Download(request_id="r1", path="/etc/passwd"))
    await downloads.start(p.Download(request_id="r2", path=str(tmp_path / "big" / "nope")))
    await sink.wait_for(lambda sent: len(sent) == 2)
    codes = sorted((m.request_id, m.code) for m in sink.sent if isinstance(m, p.Error))
    assert codes == [("r1", "ACCESS_DENIED"), ("r2", "PATH_NOT_FOUND")]


# -- the client's side, against the worker's -------------------------------------------------


async def test_client_upload_lands_in_the_worker_uploads(tmp_path: Path) -> None:
    from sleap_rtc.client.transfers import upload_file

    data = os.urandom(2 * p.TRANSFER_WINDOW + 5)
    source = tmp_path / "données.slp"
    source.write_bytes(data)
    uploads = Uploads(tmp_path / "up", "alice", max_bytes=10 * len(data))
    replies: asyncio.Queue[p._Msg] = asyncio.Queue()
    unacked = 0

    async def send(message: p._Msg) -> None:
        nonlocal unacked
        if isinstance(message, p.UploadBegin):
            uploads.begin(message)
            replies.put_nowait(p.UploadAck(upload_id=message.upload_id, received=0))
        elif isinstance(message, p.UploadChunk):
            unacked += len(base64.b64decode(message.data))
            assert unacked <= p.TRANSFER_WINDOW, "the client overran the window"
            received = uploads.chunk(message)
            if received is not None:
                unacked = 0
                replies.put_nowait(p.UploadAck(upload_id=message.upload_id, received=received))
        elif isinstance(message, p.UploadEnd):
            replies.put_nowait(uploads.end(message))

    async def receive(timeout: float) -> p._Msg:
        return await asyncio.wait_for(replies.get(), timeout)

    done = await upload_file(source, "u1", unpack=False, send=send, receive=receive)
    landed = Path(done.path)
    assert landed.read_bytes() == data and landed.name.endswith("-données.slp")


async def test_client_upload_refuses_a_lying_ack(tmp_path: Path) -> None:
    from sleap_rtc.client.transfers import upload_file

    source = tmp_path / "a.bin"
    source.write_bytes(b"x" * 10)

    async def send(message: p._Msg) -> None:
        pass

    async def receive(timeout: float) -> p._Msg:
        return p.UploadAck(upload_id="u1", received=10**9)

    with pytest.raises(ClientError, match="broke the upload: acknowledged"):
        await upload_file(source, "u1", unpack=False, send=send, receive=receive)


def _download(files: dict[str, bytes], name: str = "run", folder: bool = True) -> p.DownloadBegin:
    return p.DownloadBegin(
        request_id="r",
        transfer_id="t",
        name=name,
        folder=folder,
        files=[
            p.RemoteFile(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())
            for path, data in files.items()
        ],
    )


async def _receive(tmp_path: Path, begin: p.DownloadBegin, messages: list[p._Msg]) -> Path:
    from sleap_rtc.client.transfers import receive_files

    sent: list[p._Msg] = []

    async def send(message: p._Msg) -> None:
        sent.append(message)

    async def receive(timeout: float) -> p._Msg:
        return messages.pop(0)

    return await receive_files(begin, tmp_path / "dest", send=send, receive=receive)


def _chunk(index: int, offset: int, data: bytes) -> p.DownloadChunk:
    encoded = base64.b64encode(data).decode()
    return p.DownloadChunk(transfer_id="t", file_index=index, offset=offset, data=encoded)


async def test_client_download_of_a_folder_arrives_whole(tmp_path: Path) -> None:
    files = {"best.ckpt": b"weights", "logs/train.log": b"epoch 1\n"}
    begin = _download(files)
    chunks: list[p._Msg] = [_chunk(i, 0, data) for i, data in enumerate(files.values())]
    final = await _receive(tmp_path, begin, [*chunks, p.DownloadEnd(transfer_id="t")])
    assert final == tmp_path / "dest" / "run"
    assert (final / "logs" / "train.log").read_bytes() == b"epoch 1\n"
    assert [f.name for f in (tmp_path / "dest").iterdir()] == ["run"]


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([_chunk(0, 0, b"weightX"), p.DownloadEnd(transfer_id="t")], "arrived damaged"),
        ([_chunk(0, 3, b"ghts")], "broke the download: chunk at offset 3"),
        ([_chunk(0, 0, b"weights!")], "broke the download: more bytes"),
        ([_chunk(1, 0, b"x")], "broke the download: chunk for file 1"),
        ([p.DownloadEnd(transfer_id="t")], "arrived damaged: got 0 of 7"),
    ],
)
async def test_client_download_refuses_what_was_not_announced(
    tmp_path: Path, messages: list[p._Msg], match: str
) -> None:
    with pytest.raises(ClientError, match=match):
        await _receive(tmp_path, _download({"best.ckpt": b"weights"}), messages)
    assert list((tmp_path / "dest").iterdir()) == []  # nothing half-written is left


async def test_client_download_refuses_unsafe_names(tmp_path: Path) -> None:
    begin = _download({"../outside.txt": b"x"})
    with pytest.raises(ClientError, match="unsafe file name"):
        await _receive(tmp_path, begin, [])
    assert not (tmp_path / "outside.txt").exists()


async def _worker_to_client(mounts: Mounts, path: Path, dest: Path) -> Path:
    """The worker's Downloads wired straight to the client's receive_files."""
    from sleap_rtc.client.transfers import receive_files
    from sleap_rtc.worker.downloads import Downloads

    sink = _Sink()
    downloads = Downloads(mounts, sink)
    await downloads.start(p.Download(request_id="r1", path=str(path)))
    await sink.wait_for(lambda sent: bool(sent))
    begin = sink.sent.pop(0)
    if isinstance(begin, p.Error):
        raise ClientError(f"{begin.code}: {begin.message}")
    assert isinstance(begin, p.DownloadBegin)

    async def receive(timeout: float) -> p._Msg:
        await sink.wait_for(lambda sent: bool(sent))
        return sink.sent.pop(0)

    async def send(message: p._Msg) -> None:
        if isinstance(message, p.DownloadAck):
            downloads.ack(message)

    try:
        return await receive_files(begin, dest, send=send, receive=receive)
    finally:
        await downloads.close()


@pytest.mark.parametrize(
    "name", ["r_preds, v1 #2.slp", "souris_été.slp", "предсказания.slp", "a'b;c&d.slp"]
)
async def test_a_file_with_any_plain_name_arrives_as_that_file(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / name).write_bytes(b"predictions")
    final = await _worker_to_client(
        Mounts([Mount.create(folder, "data")]), folder / name, tmp_path / "dest"
    )
    assert final == tmp_path / "dest" / name
    assert final.is_file() and final.read_bytes() == b"predictions"
    assert [f.name for f in (tmp_path / "dest").iterdir()] == [name]


async def test_a_folder_with_odd_names_arrives_as_that_folder(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    (folder / "run été #1" / "viz").mkdir(parents=True)
    (folder / "run été #1" / "best.ckpt").write_bytes(b"w")
    (folder / "run été #1" / "viz" / "a, b.png").write_bytes(b"png")
    final = await _worker_to_client(
        Mounts([Mount.create(folder, "data")]), folder / "run été #1", tmp_path / "dest"
    )
    assert final == tmp_path / "dest" / "run été #1" and final.is_dir()
    assert (final / "viz" / "a, b.png").read_bytes() == b"png"


async def test_a_name_with_a_control_character_is_refused_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    (folder / "run").mkdir(parents=True)
    (folder / "run" / "evil\nname.txt").write_bytes(b"x")
    with pytest.raises(ClientError, match=r"INVALID_NAME: .*rename it to download it"):
        await _worker_to_client(
            Mounts([Mount.create(folder, "data")]), folder / "run", tmp_path / "dest"
        )
