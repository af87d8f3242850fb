"""The worker's file service on big trees: search against ``find``, paging a big folder.

1. **find**: a generated tree of ``--files`` files (default 1,000,000: 10 top folders ×
   100 sub-folders × N files, names like ``session_0042_frame_00017.slp`` with a few
   ``.yaml`` files among them). The same searches are run by ``find ROOT -name ...``
   (a subprocess, GNU findutils) and by :meth:`FileService.find` with its scan limits
   raised so both walk the whole tree; median of ``--repeat`` runs each, alternated,
   with a warm page cache (one unmeasured walk first). Searches: an exact name
   (``find -name NAME`` vs ranked find: exact, same extension, close names) and a
   glob (``*.yaml``). Also shown: what the default limits (200,000 entries, 5 s) return
   on the same tree.

2. **paging**: a folder of ``--folder-entries`` files (default 100,000) paged from
   start to end the way the browser and ``fs ls --all`` do (FS_LIST pages, each
   encoded as the worker sends it, shortened to fit one message), against one
   ``os.scandir`` + ``stat`` of the folder as the baseline.

The tree is built once under ``--tree DIR`` (kept for the next run) or in a temporary
folder that is removed at the end.

    .venv/bin/python bench/fs_browse.py --files 100000     # quick
    .venv/bin/python bench/fs_browse.py                    # 1,000,000 files
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sleap_rtc.jobs.mounts import Mount, Mounts
from sleap_rtc.protocol import jobs as p
from sleap_rtc.worker.files import FileService
from sleap_rtc.worker.service import _file_reply

TOP, MIDDLE = 10, 100


def build_tree(root: Path, files: int) -> None:
    """TOP × MIDDLE folders holding ``files`` files in all (empty, as names are what count)."""
    marker = root / f".complete-{files}"
    if marker.exists():
        return
    if root.exists():
        shutil.rmtree(root)
    per_leaf = max(1, files // (TOP * MIDDLE))
    started = time.perf_counter()
    made = 0
    for top in range(TOP):
        for middle in range(MIDDLE):
            leaf = root / f"project_{top:02d}" / f"session_{middle:04d}"
            leaf.mkdir(parents=True)
            for index in range(per_leaf):
                name = f"session_{middle:04d}_frame_{index:05d}.slp"
                if index == per_leaf // 2:
                    name = f"config_{top}_{middle}.yaml"
                os.close(os.open(leaf / name, os.O_CREAT | os.O_WRONLY, 0o644))
                made += 1
    (root / "project_03" / "session_0042" / "centroid.yaml").write_text("x: 1\n")
    marker.touch()
    print(f"built {made + 1:,} files in {time.perf_counter() - started:.0f} s under {root}")


def run_find(root: Path, *args: str) -> tuple[float, int]:
    started = time.perf_counter()
    out = subprocess.run(
        ["find", str(root), *args], capture_output=True, text=True, check=True
    ).stdout
    return time.perf_counter() - started, len(out.splitlines())


def run_service(files: FileService, query: str) -> tuple[float, int, int, str | None]:
    started = time.perf_counter()
    found = files.find(query)
    return time.perf_counter() - started, len(found.matches), found.scanned, found.truncated


def bench_find(root: Path, repeat: int) -> None:
    mounts = Mounts([Mount(path=root.resolve(), label="tree")])
    unlimited = FileService(
        mounts, find_max_depth=32, find_max_entries=10**9, find_time_limit_s=3600
    )
    run_find(root, "-name", "nothing")  # warm the page cache
    cases = [
        ("exact name", ["-name", "centroid.yaml"], "centroid.yaml"),
        ("glob", ["-name", "*.yaml"], "*.yaml"),
    ]
    print("\n== find over the whole tree (median of", repeat, "runs) ==")
    for label, find_args, query in cases:
        base, ours = [], []
        for _ in range(repeat):
            seconds, hits = run_find(root, *find_args)
            base.append(seconds)
            took, matches, scanned, truncated = run_service(unlimited, query)
            ours.append(took)
        b, o = statistics.median(base), statistics.median(ours)
        print(
            f"{label:<11} {query!r:<16} find {b:6.2f} s ({hits:,} hits)   "
            f"file service {o:6.2f} s ({matches} best of ranked matches, {scanned:,} entries)"
            f"   ratio {o / b:5.2f}x"
        )
    default = FileService(mounts)
    took, matches, scanned, truncated = run_service(default, "centroid.yaml")
    print(
        f"default limits, 'centroid.yaml': {took:.2f} s, {scanned:,} entries scanned, "
        f"{matches} matches, stopped early: {truncated}"
    )


def bench_paging(folder: Path, entries: int) -> None:
    if not (folder / f".complete-{entries}").exists():
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for index in range(entries):
            os.close(os.open(folder / f"frame_{index:06d}.png", os.O_CREAT | os.O_WRONLY))
        (folder / f".complete-{entries}").touch()
    files = FileService(Mounts([Mount(path=folder.resolve(), label="big")]))

    started = time.perf_counter()
    with os.scandir(folder) as scan:
        listed = [(item.name, item.stat()) for item in scan]
    baseline = time.perf_counter() - started

    started = time.perf_counter()
    offset = pages = size = 0
    first_page = 0.0
    while True:
        reply = _file_reply(
            files, p.FsList(request_id="bench", path=str(folder), offset=offset, limit=500)
        )
        assert isinstance(reply, p.FsListReply)
        size += len(p.encode(reply))
        pages += 1
        if pages == 1:
            first_page = time.perf_counter() - started
        offset += len(reply.entries)
        if not reply.entries or offset >= reply.total:
            break
    took = time.perf_counter() - started
    print(f"\n== paging a folder of {len(listed):,} entries ==")
    print(f"scandir + stat once (baseline): {baseline:.2f} s")
    print(
        f"FS_LIST start to end: {took:.2f} s in {pages} pages ({size / 1e6:.1f} MB encoded); "
        f"first page {first_page * 1000:.0f} ms; ratio {took / baseline:.2f}x"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--folder-entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tree", type=Path, help="Build (or reuse) the trees here.")
    args = parser.parse_args()
    if shutil.which("find") is None:
        print("find (findutils) is needed as the baseline", file=sys.stderr)
        return 1
    temporary = args.tree is None
    base = args.tree or Path(tempfile.mkdtemp(prefix="sleap-rtc-fs-bench-"))
    try:
        build_tree(base / "tree", args.files)
        bench_find(base / "tree", args.repeat)
        bench_paging(base / "big-folder", args.folder_entries)
    finally:
        if temporary:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
