"""The worker's file service: nothing outside the mounts, paging, bounded and ranked search."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sleap_rtc.jobs.mounts import Mount, Mounts
from sleap_rtc.worker.files import FileService, FsError


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, Path]:
    mount = tmp_path / "mount"
    (mount / "project" / "configs").mkdir(parents=True)
    (mount / "project" / "configs" / "centroid.yaml").write_text("a: 1\n")
    (mount / "project" / "configs" / "centered_instance.yaml").write_text("a: 1\n")
    (mount / "project" / "configs" / "notes.txt").write_text("x")
    (mount / "project" / "labels.slp").write_bytes(b"12345")
    (mount / "project" / "centroid.yml").write_text("old\n")
    (mount / "b_dir").mkdir()
    (mount / "a_file.txt").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "centroid.yaml").write_text("secret\n")
    (outside / "secret.slp").write_bytes(b"x")
    (mount / "link_out").symlink_to(outside)
    (mount / "file_link_out.yaml").symlink_to(outside / "centroid.yaml")
    (mount / "link_parent").symlink_to(tmp_path)
    (mount / "loop").symlink_to(mount)
    (tmp_path / "alias").symlink_to(tmp_path)
    return {"root": tmp_path, "mount": mount, "outside": outside}


@pytest.fixture()
def files(tree: dict[str, Path]) -> FileService:
    return FileService(Mounts([Mount.create(tree["root"] / "alias" / "mount", "data")]))


ESCAPES = [
    "{mount}/../outside",
    "{mount}/../outside/secret.slp",
    "/etc",
    "/etc/passwd",
    "{mount}/link_out",
    "{mount}/link_out/secret.slp",
    "{mount}/file_link_out.yaml",
    "{mount}/link_parent/outside",
    "/nonexistent/../etc",
]


@pytest.mark.parametrize("raw", ESCAPES)
def test_escape_corpus_is_denied_for_list_and_stat(
    files: FileService, tree: dict[str, Path], raw: str
) -> None:
    path = raw.format(mount=tree["mount"])
    for call in (lambda: files.list(path), lambda: files.stat(path)):
        with pytest.raises(FsError) as caught:
            call()
        assert caught.value.code == "ACCESS_DENIED"
        assert caught.value.message.startswith("Access denied: outside the worker's mounts")


@pytest.mark.parametrize("raw", ["", "relative/path", "~/x", "{mount}/a\x00b"])
def test_bad_paths_are_invalid(files: FileService, tree: dict[str, Path], raw: str) -> None:
    with pytest.raises(FsError) as caught:
        files.stat(raw.format(mount=tree["mount"]))
    assert caught.value.code == "INVALID_PATH"


def test_a_path_may_start_with_a_mount_label(files: FileService, tree: dict[str, Path]) -> None:
    real = tree["mount"].resolve()
    assert files.stat("data").path == str(real)
    assert files.stat("data/project/labels.slp").path == str(real / "project" / "labels.slp")
    assert [e.name for e in files.list("data/project/configs").entries][:1] == [
        "centered_instance.yaml"
    ]
    for escape in ("data/../outside", "data/link_out/secret.slp"):
        with pytest.raises(FsError) as caught:
            files.stat(escape)
        assert caught.value.code == "ACCESS_DENIED"
    with pytest.raises(FsError) as caught:
        files.stat("nolabel/x")
    assert caught.value.code == "INVALID_PATH"


def test_listing_puts_folders_first_and_hides_what_leads_outside(
    files: FileService, tree: dict[str, Path]
) -> None:
    listing = files.list(str(tree["mount"]))
    names = [(e.name, e.kind) for e in listing.entries]
    # link_out, file_link_out.yaml and link_parent lead outside: not shown.
    assert names == [
        ("b_dir", "dir"),
        ("loop", "dir"),
        ("project", "dir"),
        ("a_file.txt", "file"),
    ]
    assert listing.total == 4
    labels = files.list(str(tree["mount"] / "project"), pattern="*.SLP")
    assert [(e.name, e.size) for e in labels.entries] == [("configs", None), ("labels.slp", 5)]
    assert [e.name for e in files.list(str(tree["mount"]), dirs_only=True).entries] == [
        "b_dir",
        "loop",
        "project",
    ]
    with pytest.raises(FsError) as caught:
        files.list(str(tree["mount"] / "a_file.txt"))
    assert caught.value.code == "NOT_A_DIRECTORY"
    with pytest.raises(FsError) as missing:
        files.list(str(tree["mount"] / "nope"))
    assert missing.value.code == "PATH_NOT_FOUND"


def test_paging_a_10000_entry_folder(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    for i in range(10_000):
        (big / f"f{i:05d}.slp").touch()
    for i in range(3):
        (big / f"dir{i}").mkdir()
    service = FileService(Mounts([Mount.create(big, "big")]), max_page=500)
    seen: list[str] = []
    offset = 0
    while True:
        page = service.list(str(big), offset=offset, limit=1000)
        assert page.total == 10_003 and len(page.entries) <= 500
        if not page.entries:
            break
        seen.extend(e.name for e in page.entries)
        offset += len(page.entries)
    assert seen[:3] == ["dir0", "dir1", "dir2"]
    assert seen[3:] == [f"f{i:05d}.slp" for i in range(10_000)]


def test_find_ranks_exact_then_same_extension_then_close_names(
    files: FileService, tree: dict[str, Path]
) -> None:
    result = files.find("centroid.yaml")
    found = [(Path(m.entry.path).name, m.rank) for m in result.matches]
    assert found[0] == ("centroid.yaml", 0)
    assert ("centered_instance.yaml", 1) in found
    assert ("centroid.yml", 2) in found
    # Nothing outside the mounts, though a link to it and the loop are in the tree.
    assert all(str(tree["outside"]) not in m.entry.path for m in result.matches)
    assert all(
        Path(m.entry.path).resolve() != tree["outside"] / "centroid.yaml" for m in result.matches
    )
    globbed = files.find("*.slp")
    assert [Path(m.entry.path).name for m in globbed.matches] == ["labels.slp"]


@pytest.mark.parametrize("pattern", ["*", "*.*", "?", "**", "[a]*", " . "])
def test_find_refuses_patterns_that_match_everything(files: FileService, pattern: str) -> None:
    with pytest.raises(FsError) as caught:
        files.find(pattern)
    assert caught.value.code == "PATTERN_TOO_BROAD"


def test_find_is_bounded(tmp_path: Path) -> None:
    root = tmp_path / "deep"
    path = root
    for depth in range(20):
        path = path / f"d{depth}"
    path.mkdir(parents=True)
    (path / "target.yaml").touch()
    shallow = FileService(Mounts([Mount.create(root, "r")]), find_max_depth=5)
    assert shallow.find("target.yaml").matches == []
    deep = FileService(Mounts([Mount.create(root, "r")]), find_max_depth=30)
    assert [Path(m.entry.path).name for m in deep.find("target.yaml").matches] == ["target.yaml"]

    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(3000):
        (wide / f"labels_{i}.slp").touch()
    capped = FileService(Mounts([Mount.create(wide, "w")]), find_max_entries=1000)
    result = capped.find("labels*")
    assert result.truncated == "entries" and result.scanned == 1001
    few = FileService(Mounts([Mount.create(wide, "w")]), find_max_results=10)
    limited = few.find("labels*")
    assert len(limited.matches) == 10 and limited.truncated == "results"


def test_mounts_report_free_space(files: FileService, tree: dict[str, Path]) -> None:
    [info] = files.list_mounts()
    assert info.label == "data" and info.path == str(tree["mount"].resolve())
    assert info.free_bytes is not None and info.total_bytes is not None
    assert 0 < info.free_bytes <= info.total_bytes
    assert os.path.isdir(info.path)


def test_a_listing_is_read_again_when_the_folder_changes(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.slp").touch()
    service = FileService(Mounts([Mount.create(folder, "f")]))
    assert [e.name for e in service.list(str(folder)).entries] == ["a.slp"]
    (folder / "b.slp").touch()
    assert [e.name for e in service.list(str(folder)).entries] == ["a.slp", "b.slp"]
    (folder / "a.slp").unlink()
    page = service.list(str(folder))
    assert [e.name for e in page.entries] == ["b.slp"] and page.total == 1
    # A file that changes size without the folder changing is shown as it is now.
    (folder / "b.slp").write_bytes(b"12345")
    assert service.list(str(folder)).entries[0].size == 5


def _naive_best(names: list[str], query: str, keep: int) -> list[tuple[int, float, str]]:
    """Every name ranked the slow, obvious way: the reference for the bounded ranker."""
    import difflib

    stem, ext = os.path.splitext(query)
    ranked = []
    for name in names:
        low = name.lower()
        if low == query:
            ranked.append((0, 1.0, name))
            continue
        name_stem, name_ext = os.path.splitext(low)
        score = difflib.SequenceMatcher(None, name_stem, stem, autojunk=False).ratio()
        if ext and name_ext == ext:
            ranked.append((1, score, name))
        elif score >= 0.6:
            ranked.append((2, score, name))
    ranked.sort(key=lambda m: (m[0], -m[1], m[2]))
    return ranked[:keep]


@pytest.mark.parametrize("query", ["centroid.yaml", "labels_v2.slp", "session_0042.yaml"])
def test_bounded_ranking_keeps_the_same_best_as_ranking_everything(
    tmp_path: Path, query: str
) -> None:
    import random

    rng = random.Random(query)
    words = ["centroid", "centered", "labels", "session", "config", "frame", "model", "v2"]
    names = {query}
    while len(names) < 2000:
        stem = "_".join(rng.sample(words, rng.randint(1, 3))) + f"{rng.randint(0, 99)}"
        names.add(stem + rng.choice([".yaml", ".slp", ".yml", ".txt", ".json"]))
    folder = tmp_path / "many"
    folder.mkdir()
    for name in names:
        (folder / name).touch()
    service = FileService(Mounts([Mount.create(folder, "m")]), find_max_results=25)
    found = service.find(query)
    expected = _naive_best(sorted(names), query, 25)
    got = [(m.rank, round(m.score, 9), Path(m.entry.path).name) for m in found.matches]
    # Same ranks and scores in the same order; names may differ only among equal scores.
    assert [(r, s) for r, s, _ in got] == [(r, round(s, 9)) for r, s, _ in expected]
    assert got[0][2] == query and found.truncated == "results"


def test_a_link_retargeted_outside_after_listing_is_not_shown(tmp_path: Path) -> None:
    mount = tmp_path / "m"
    mount.mkdir()
    (mount / "inside.yaml").write_text("in")
    outside = tmp_path / "outside.yaml"
    outside.write_text("secret, and longer")
    link = mount / "link.yaml"
    link.symlink_to(mount / "inside.yaml")
    service = FileService(Mounts([Mount.create(mount, "m")]))
    assert [e.name for e in service.list(str(mount)).entries] == ["inside.yaml", "link.yaml"]
    # Swap the link's target without touching the folder's own mtime.
    stamp = os.stat(mount).st_mtime_ns
    link.unlink()
    link.symlink_to(outside)
    os.utime(mount, ns=(stamp, stamp))
    assert [e.name for e in service.list(str(mount)).entries] == ["inside.yaml"]


def test_a_file_swapped_for_a_link_after_listing_is_not_stat_ed_through_it(
    tmp_path: Path,
) -> None:
    """The names of a folder are cached; a plain file among them that is then replaced
    by a link to a file outside must not be stat'ed through the link (its size, time)."""
    mount = tmp_path / "m"
    mount.mkdir()
    (mount / "plain.yaml").write_text("in")
    outside = tmp_path / "outside.yaml"
    outside.write_text("secret, and much longer than the file it replaces")
    service = FileService(Mounts([Mount.create(mount, "m")]))
    assert [(e.name, e.size) for e in service.list(str(mount)).entries] == [("plain.yaml", 2)]
    stamp = os.stat(mount).st_mtime_ns
    (mount / "plain.yaml").unlink()
    (mount / "plain.yaml").symlink_to(outside)
    os.utime(mount, ns=(stamp, stamp))  # the cached names are used again
    assert service.list(str(mount)).entries == []
    with pytest.raises(FsError) as caught:
        service.stat(str(mount / "plain.yaml"))
    assert caught.value.code == "ACCESS_DENIED"


def test_loops_and_odd_names_give_clean_answers(tmp_path: Path) -> None:
    from sleap_rtc.protocol import jobs as p
    from sleap_rtc.worker.replies import file_reply as _file_reply

    mount = tmp_path / "m"
    mount.mkdir()
    (mount / "self").symlink_to(mount / "self")
    odd = os.fsencode(mount) + b"/bad\xffname.slp"
    with open(odd, "wb") as handle:
        handle.write(b"x")
    service = FileService(Mounts([Mount.create(mount, "m")]))
    with pytest.raises(FsError) as loop:
        service.stat(str(mount / "self"))
    assert loop.value.code == "PATH_NOT_FOUND"
    with pytest.raises(FsError) as listed:
        service.list(str(mount / "self"))
    assert listed.value.code in ("NOT_READABLE", "PATH_NOT_FOUND")
    # A name that isn't UTF-8 is shown escaped instead of breaking the reply.
    reply = _file_reply(service, p.FsList(request_id="r", path=str(mount)))
    assert isinstance(reply, p.FsListReply)
    assert [e.name for e in reply.entries] == ["bad\\xffname.slp"]
    p.encode(reply)
    found = _file_reply(service, p.FsFind(request_id="r", query="*.slp"))
    assert isinstance(found, p.FsFindReply) and len(found.matches) == 1
    p.encode(found)


def test_a_long_path_is_cut_in_error_messages(files: FileService, tree: dict[str, Path]) -> None:
    long = str(tree["mount"]) + "/" + "/".join(["d" * 200] * 18)
    for call in (lambda: files.stat(long), lambda: files.list(long)):
        with pytest.raises(FsError) as caught:
            call()
        assert caught.value.code == "PATH_NOT_FOUND"
        assert len(caught.value.message) < 300 and caught.value.message.endswith("…[cut]")
    with pytest.raises(FsError) as denied:
        files.stat("/etc/" + "/".join(["x" * 100] * 39))
    assert denied.value.code == "ACCESS_DENIED" and len(denied.value.message) < 300
    with pytest.raises(FsError) as relative:
        files.stat("r" * 4000)
    assert relative.value.code == "INVALID_PATH" and len(relative.value.message) < 400
