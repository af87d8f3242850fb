"""Opening beneath a mount root: a link swapped in after a check is refused, never followed.

Every test runs twice where the kernel has openat2: once through it, once through
the component-by-component walk that older kernels (and macOS) use.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from sleap_rtc.jobs.mounts import Mount, Mounts
from sleap_rtc.worker import fsafe


@pytest.fixture(params=["openat2", "walk"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "openat2":
        if not fsafe.HAS_OPENAT2:
            pytest.skip("this kernel has no usable openat2")
    else:
        monkeypatch.setattr(fsafe, "_openat2", None)
    return str(request.param)


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, Path]:
    mount = tmp_path / "mount"
    (mount / "project" / "configs").mkdir(parents=True)
    (mount / "project" / "configs" / "centroid.yaml").write_text("inside\n")
    outside = tmp_path / "outside"
    (outside / "configs").mkdir(parents=True)
    (outside / "configs" / "centroid.yaml").write_text("SECRET, outside the mount\n")
    return {"mount": mount, "outside": outside}


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


def test_a_checked_path_opens_beneath_its_mount(impl: str, tree: dict[str, Path]) -> None:
    mounts = Mounts([Mount.create(tree["mount"], "m")])
    where = fsafe.resolve_inside(mounts, tree["mount"] / "project" / "configs" / "centroid.yaml")
    assert where is not None and where.rel == "project/configs/centroid.yaml"
    assert _read(fsafe.open_file_inside(where)) == b"inside\n"
    root = fsafe.resolve_inside(mounts, tree["mount"])
    assert root is not None and root.rel == ""
    fd = fsafe.open_dir_inside(root)
    try:
        assert sorted(os.listdir(fd)) == ["project"]
    finally:
        os.close(fd)


@pytest.mark.parametrize("swap", ["folder", "file"])
def test_a_link_swapped_in_after_the_check_is_refused(
    impl: str, tree: dict[str, Path], swap: str
) -> None:
    """The check resolved a plain path; then a folder (or the file) on it became a link
    to the same place outside. Opening must fail with ELOOP, not read the secret."""
    mounts = Mounts([Mount.create(tree["mount"], "m")])
    target = tree["mount"] / "project" / "configs" / "centroid.yaml"
    where = fsafe.resolve_inside(mounts, target)  # the check
    assert where is not None
    if swap == "folder":
        (tree["mount"] / "project").rename(tree["mount"] / "project.old")
        (tree["mount"] / "project").symlink_to(tree["outside"])
    else:
        target.unlink()
        target.symlink_to(tree["outside"] / "configs" / "centroid.yaml")
    with pytest.raises(OSError) as caught:
        fsafe.open_file_inside(where)  # the use
    assert caught.value.errno == errno.ELOOP
    with pytest.raises(OSError) as stat_caught, fsafe.root_fd(where.mount) as root:
        fsafe.lstat_beneath(root, where.rel)
    assert stat_caught.value.errno == errno.ELOOP
    # Resolving again sees the link lead outside and refuses it.
    assert fsafe.resolve_inside(mounts, target) is None
    assert fsafe.stat_inside(mounts, target) is None


def test_a_link_that_stays_inside_is_still_followed(impl: str, tree: dict[str, Path]) -> None:
    mount = tree["mount"]
    (mount / "alias").symlink_to(mount / "project")
    mounts = Mounts([Mount.create(mount, "m")])
    found = fsafe.stat_inside(mounts, mount / "alias" / "configs" / "centroid.yaml")
    assert found is not None
    where, info = found
    assert where.rel == "project/configs/centroid.yaml" and stat.S_ISREG(info.st_mode)
    assert _read(fsafe.open_file_inside(where)) == b"inside\n"


def test_relative_paths_can_not_climb(impl: str, tree: dict[str, Path]) -> None:
    mount = Mount.create(tree["mount"], "m")
    with fsafe.root_fd(mount) as root:
        for rel in ("../outside/configs/centroid.yaml", "project/../../outside", "/etc/passwd"):
            with pytest.raises(OSError) as caught:
                fsafe.open_beneath(root, rel, fsafe.FILE_FLAGS)
            assert caught.value.errno in (errno.EXDEV, errno.EINVAL)


def test_a_fifo_neither_blocks_nor_opens_as_a_file(impl: str, tree: dict[str, Path]) -> None:
    os.mkfifo(tree["mount"] / "pipe")
    mounts = Mounts([Mount.create(tree["mount"], "m")])
    where = fsafe.resolve_inside(mounts, tree["mount"] / "pipe")
    assert where is not None
    with pytest.raises(OSError) as caught:
        fsafe.open_file_inside(where)
    assert caught.value.errno == errno.EINVAL


def test_loops_are_errors_not_crashes(impl: str, tree: dict[str, Path]) -> None:
    mount = tree["mount"]
    (mount / "self").symlink_to(mount / "self")
    (mount / "a").symlink_to(mount / "b")
    (mount / "b").symlink_to(mount / "a")
    mounts = Mounts([Mount.create(mount, "m")])
    for name in ("self", "a", "self/x"):
        assert fsafe.stat_inside(mounts, mount / name) is None


def test_echoed_text_is_cut_with_a_marker() -> None:
    long = "x" * 5000
    assert fsafe.clip(long) == "x" * fsafe.ECHO_CHARS + fsafe.CLIP_MARK
    assert fsafe.clip("short") == "short"
    assert fsafe.echo(long) == repr("x" * fsafe.ECHO_CHARS) + fsafe.CLIP_MARK
    assert fsafe.echo("a'b") == repr("a'b")
    # Undecodable bytes from disk come back as escapes, which every message can carry.
    assert fsafe.clip("bad\udcffname") == "bad\\xffname"
    message = f"Path {long} is relative; give the absolute path"
    assert fsafe.clip_problem(message, long) == (
        f"Path {'x' * fsafe.ECHO_CHARS}{fsafe.CLIP_MARK} is relative; give the absolute path"
    )
