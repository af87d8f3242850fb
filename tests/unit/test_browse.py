"""The file browser's model and keys, and the path-correction mapping.

The model runs against the real file service over a real folder tree (the same
replies the worker sends); the terminal front end is driven by key presses
through a pipe, with prompt_toolkit's dummy output.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from sleap_rtc.cli.browser import Browser, _fit
from sleap_rtc.client.browse import BrowseError, BrowserModel, glob_for
from sleap_rtc.client.pathfix import (
    apply_path,
    nearest_folder,
    path_problems,
    start_candidates,
    target_for,
)
from sleap_rtc.jobs.mounts import Mount, Mounts
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.protocol import jobs as p
from sleap_rtc.worker.files import FileService, FsError
from sleap_rtc.worker.replies import file_reply as _file_reply


class LocalSource:
    """The worker's file service answering in-process, with the replies it sends on the wire."""

    def __init__(self, files: FileService) -> None:
        self.files = files
        self.calls: list[str] = []

    def _ask(self, message: p.FsMounts | p.FsList | p.FsStat) -> p._Msg:
        self.calls.append(message.type)
        try:
            return _file_reply(self.files, message)
        except FsError as exc:
            raise BrowseError(exc.code, exc.message) from None

    async def mounts(self) -> list[p.FsMount]:
        reply = self._ask(p.FsMounts(request_id="r"))
        assert isinstance(reply, p.FsMountsReply)
        return list(reply.mounts)

    async def list(
        self, path: str, *, offset: int, limit: int, pattern: str | None, dirs_only: bool
    ) -> p.FsListReply:
        reply = self._ask(
            p.FsList(
                request_id="r",
                path=path,
                offset=offset,
                limit=limit,
                pattern=pattern,
                dirs_only=dirs_only,
            )
        )
        assert isinstance(reply, p.FsListReply)
        return reply

    async def stat(self, path: str) -> p.FsEntry:
        reply = self._ask(p.FsStat(request_id="r", path=path))
        assert isinstance(reply, p.FsStatReply)
        return reply.entry


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = (tmp_path / "project").resolve()
    (root / "configs").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "models" / "centroid").mkdir(parents=True)
    (root / "centroid.yaml").write_text("a: 1\n")
    (root / "topdown.yaml").write_text("b: 2\n" * 400)
    (root / "labels.slp").write_bytes(b"\0" * 10)
    (root / "configs" / "bottomup.yaml").write_text("c: 3\n")
    (root / "data" / "session1.slp").write_bytes(b"\0" * 5)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "passwords.yaml").write_text("x")
    os.symlink(outside, root / "escape")
    os.symlink(outside / "passwords.yaml", root / "leak.yaml")
    return root


@pytest.fixture
def source(tree: Path) -> LocalSource:
    return LocalSource(FileService(Mounts([Mount(path=tree, label="project")])))


def names(model: BrowserModel) -> list[str]:
    return [row.name for row in model.rows]


async def test_model_opens_filters_and_selects_a_file(tree: Path, source: LocalSource) -> None:
    model = BrowserModel(source, want="file", filter_text="*.yaml")
    await model.start(str(tree))
    assert model.path == str(tree)
    # Folders first (all of them, so the user can move through), then matching files only.
    # The links that lead outside the mount are not shown at all.
    assert names(model) == ["configs", "data", "models", "centroid.yaml", "topdown.yaml"]
    await model.move(3)
    assert await model.enter() == str(tree / "centroid.yaml")
    # Open a folder, then go back up: the folder we came from is highlighted.
    await model.move(-3)
    assert await model.enter() is None
    assert model.path == str(tree / "configs") and names(model) == ["bottomup.yaml"]
    await model.back()
    assert model.path == str(tree) and model.current is not None
    assert model.current.name == "configs"


async def test_typing_edits_the_filter_and_backspace_erases_then_goes_up(
    tree: Path, source: LocalSource
) -> None:
    model = BrowserModel(source, want="file")
    await model.start(str(tree / "configs"))
    await model.type("top")
    assert model.filter == "top" and names(model) == []  # no 'top' in configs/
    await model.erase()
    await model.erase()
    await model.erase()
    assert model.filter == "" and names(model) == ["bottomup.yaml"]
    await model.erase()  # the filter is empty now: up a folder
    assert model.path == str(tree)
    await model.type("top")
    assert [r.name for r in model.rows if r.kind == "file"] == ["topdown.yaml"]
    await model.clear_filter()
    assert "labels.slp" in names(model)


async def test_a_starting_filter_is_replaced_by_typing_or_dropped_by_backspace(
    tree: Path, source: LocalSource
) -> None:
    model = BrowserModel(source, filter_text="*.yaml")
    await model.start(str(tree))
    await model.type("lab")
    assert model.filter == "lab" and [r.name for r in model.rows if r.kind == "file"] == [
        "labels.slp"
    ]
    model = BrowserModel(source, filter_text="*.yaml")
    await model.start(str(tree))
    await model.erase()
    assert model.filter == "" and model.path == str(tree) and "labels.slp" in names(model)


async def test_folders_mode_selects_the_folder_shown(tree: Path, source: LocalSource) -> None:
    model = BrowserModel(source, want="dir")
    await model.start(str(tree / "models"))
    assert names(model) == ["[ use this folder ]", "centroid"]
    await model.move(1)
    await model.enter()
    assert model.path == str(tree / "models" / "centroid")
    assert await model.enter() == str(tree / "models" / "centroid")


async def test_model_never_leaves_the_mounts(tree: Path, source: LocalSource) -> None:
    model = BrowserModel(source)
    # A start outside the mounts shows the mounts, with the worker's reason.
    await model.start("/etc")
    assert model.path is None and "Access denied" in model.message
    assert [r.path for r in model.rows] == [str(tree)]
    # From a mount's top folder, back goes to the list of mounts, not its parent.
    await model.open(str(tree))
    await model.back()
    assert model.path is None
    # Opening a link that leads out is refused, and the listing stays where it was.
    await model.open(str(tree))
    await model.open(str(tree / "escape"))
    assert model.path == str(tree) and "outside the worker's mounts" in model.message


async def test_paging_through_a_large_folder(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    for i in range(1234):
        (big / f"frame{i:05d}.slp").touch()
    source = LocalSource(FileService(Mounts([Mount(path=big.resolve(), label="big")])))
    model = BrowserModel(source, page_size=500)
    await model.start(str(big.resolve()))
    assert model.total == 1234 and len(model.rows) == 500
    await model.end()
    assert model.cursor == 1233 and len(model.rows) == 1234
    assert model.current is not None and model.current.name == "frame01233.slp"
    rows, cursor = model.window(16)
    assert len(rows) == 16 and rows[cursor].name == "frame01233.slp"
    await model.home()
    rows, cursor = model.window(16)
    assert cursor == 0 and rows[0].name == "frame00000.slp"
    assert source.calls.count("FS_LIST") == 3  # pages fetched once each


async def test_the_terminal_browser_is_driven_by_keys(tree: Path, source: LocalSource) -> None:
    model = BrowserModel(source, want="file", filter_text="*.yaml")
    await model.start(str(tree))
    with create_pipe_input() as keys:
        browser = Browser(
            model, "Select correct path for 'config_path':", input=keys, output=DummyOutput()
        )
        # down ×4 (configs, data, models, centroid.yaml → topdown.yaml), Enter selects.
        keys.send_text("\x1b[B" * 4 + "\r")
        assert await asyncio.wait_for(browser.run(), 10) == str(tree / "topdown.yaml")


async def test_the_terminal_browser_opens_folders_types_filters_and_cancels(
    tree: Path, source: LocalSource
) -> None:
    model = BrowserModel(source, want="file")
    await model.start(str(tree))
    with create_pipe_input() as keys:
        browser = Browser(model, "pick", input=keys, output=DummyOutput())
        # Enter opens configs/, typing narrows, backspace ×3 widens, left goes back up.
        keys.send_text("\r" + "bot" + "\x7f" * 3 + "\x1b[D" + "\x1b[B")
        task = asyncio.ensure_future(browser.run())
        await asyncio.sleep(0.5)
        assert model.path == str(tree) and model.filter == ""
        assert model.current is not None and model.current.name == "data"
        keys.send_text("\x1b")  # Esc
        assert await asyncio.wait_for(task, 10) is None


def test_names_are_shortened_to_fit_keeping_the_extension() -> None:
    long = "a_very_long_name_of_a_training_configuration_file_for_centroids.yaml"
    short = _fit(long, 30)
    assert len(short) == 30 and short.endswith(".yaml") and "…" in short
    assert _fit("short.yaml", 30) == "short.yaml"


def test_glob_for_typed_text() -> None:
    assert glob_for("") is None
    assert glob_for("*.yaml") == "*.yaml"
    assert glob_for("cent") == "*cent*"
    assert glob_for("frame[0-9]") == "frame[0-9]"


# -- path correction ----------------------------------------------------------------------


def test_problem_fields_map_to_spec_fields() -> None:
    one = TrainSpec(config_paths=["/a/x.yaml"])
    two = TrainSpec(config_paths=["/a/x.yaml", "/a/y.yaml"], labels_path="/l.slp")
    target = target_for("config_path", one)
    assert target is not None and (target.attr, target.index, target.filter) == (
        "config_paths",
        0,
        "*.yaml",
    )
    fixed = apply_path(two, target_for("config_paths[1]", two), "/b/y.yaml")  # type: ignore[arg-type]
    assert isinstance(fixed, TrainSpec) and fixed.config_paths == ["/a/x.yaml", "/b/y.yaml"]
    labels = target_for("labels_path", two)
    assert labels is not None and labels.filter == "*.slp" and labels.want == "file"
    assert target_for("config_paths[5]", two) is None  # no such config
    assert target_for("max_epochs", two) is None  # not a path
    assert target_for("data_path", two) is None  # not a train field

    track = TrackSpec(data_path="/d.slp", model_paths=["/m/a"], output_path="/out/pred.slp")
    model = target_for("model_paths", track)
    assert model is not None and model.want == "dir"
    output = target_for("output_path", track)
    assert output is not None and output.keep_name
    moved = apply_path(track, output, "/data/results")
    assert isinstance(moved, TrackSpec) and moved.output_path == "/data/results/pred.slp"


def test_only_path_problems_are_corrected_once_per_field() -> None:
    errors = [
        p.ProblemView(field="labels_path", path="a.slp", code="PATH_NOT_FOUND", message="m"),
        p.ProblemView(field="labels_path", path="b.slp", code="PATH_NOT_FOUND", message="m"),
        p.ProblemView(field="max_epochs", path="0", code="OUT_OF_RANGE", message="m"),
        p.ProblemView(field="config_path", path="/x", code="ACCESS_DENIED", message="m"),
        p.ProblemView(field="config_paths[1]", path="/y", code="CONFIG_INVALID", message="m"),
        p.ProblemView(field="frames", path="9-1", code="FRAMES_INVALID", message="m"),
    ]
    assert [e.field for e in path_problems(errors)] == [
        "labels_path",
        "config_path",
        "config_paths[1]",
    ]


async def test_the_browser_starts_at_the_nearest_folder_inside_a_mount(
    tree: Path, source: LocalSource
) -> None:
    spec = TrainSpec(config_paths=[str(tree / "configs" / "wrong" / "deeper" / "x.yaml")])
    folder = await nearest_folder(source, start_candidates(spec.config_paths[0], spec))
    assert folder == str(tree / "configs")
    # A path named relative to the config's folder starts from there.
    spec = TrainSpec(config_paths=[str(tree / "configs" / "bottomup.yaml")])
    assert await nearest_folder(source, start_candidates("../data/nope.slp", spec)) == str(
        tree / "data"
    )
    # Outside every mount, but above exactly one: that mount (the user documents' example).
    outside = start_candidates(str(tree.parent / "w" / "p.yaml"), spec)
    assert await nearest_folder(source, outside) == str(tree)
    # Nowhere near the mounts: the only mount, or the list of mounts when there are several.
    assert await nearest_folder(source, start_candidates("/etc/passwd", spec)) == str(tree)
    other = tree.parent / "other"
    other.mkdir()
    two = LocalSource(
        FileService(Mounts([Mount(path=tree, label="a"), Mount(path=other, label="b")]))
    )
    assert await nearest_folder(two, start_candidates("/etc/passwd", spec)) is None
    assert await nearest_folder(two, []) is None


# -- picking a folder: typing filters, models are marked ----------------------------------


class FindingSource(LocalSource):
    """:class:`LocalSource` that also searches, as the worker answers FS_FIND."""

    async def find(self, query: str, *, limit: int) -> p.FsFindReply:
        reply = self._ask(p.FsFind(request_id="r", query=query, limit=limit))  # type: ignore[arg-type]
        assert isinstance(reply, p.FsFindReply)
        return reply


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """A models folder as training leaves it: two complete models (both layouts), a run
    cancelled before it saved best weights, and a folder that is no model at all."""
    root = (tmp_path / "lab").resolve()
    models = root / "models"
    for name, files in {
        "mice_centroid": ["training_config.yaml", "best.ckpt", "initial_config.yaml"],
        "mice_centroid-2": ["training_config.yaml", "initial_config.yaml", "labels_gt.train.slp"],
        "legacy_mice": ["training_config.json", "best_model.h5"],
        "notes": ["readme.txt"],
    }.items():
        (models / name).mkdir(parents=True)
        for file in files:
            (models / name / file).write_bytes(b"x")
    (models / "mice_centroid" / "viz").mkdir()
    return root


async def test_typing_in_folder_mode_filters_the_folders_and_jumps_to_the_first(
    tree: Path, source: LocalSource
) -> None:
    model = BrowserModel(source, want="dir")
    await model.start(str(tree))
    assert names(model) == ["[ use this folder ]", "configs", "data", "models"]
    await model.type("d")
    assert model.filter == "d" and names(model) == ["[ use this folder ]", "data", "models"]
    assert model.current is not None and model.current.name == "data"
    await model.type("at")
    assert names(model) == ["[ use this folder ]", "data"]
    await model.type("zz")
    assert names(model) == ["[ use this folder ]"] and model.total == 1
    await model.clear_filter()
    assert names(model) == ["[ use this folder ]", "configs", "data", "models"]
    # A glob works as in the file browser, and Enter opens the match.
    await model.type("mod*")
    assert await model.enter() is None and model.path == str(tree / "models")
    # The filter is of one folder's names: the folder opened starts unfiltered.
    assert model.filter == "" and names(model) == ["[ use this folder ]", "centroid"]
    await model.type("cen")
    await model.erase()
    await model.erase()
    await model.erase()
    assert model.filter == "" and names(model) == ["[ use this folder ]", "centroid"]
    await model.erase()  # no filter: up a folder, back where we came from
    assert model.path == str(tree) and model.current is not None
    assert model.current.name == "models"


async def test_folder_filter_sees_every_page_of_a_large_folder(tmp_path: Path) -> None:
    big = (tmp_path / "big").resolve()
    for i in range(450):
        (big / f"run{i:04d}").mkdir(parents=True)
    source = LocalSource(FileService(Mounts([Mount(path=big, label="big")])))
    model = BrowserModel(source, want="dir", page_size=100)
    await model.start(str(big))
    assert len(model.rows) == 101 and model.total == 451
    await model.type("0449")  # on the last page, not loaded yet
    assert names(model) == ["[ use this folder ]", "run0449"]
    await model.clear_filter()
    assert model.total == 451
    await model.end()
    assert model.current is not None and model.current.name == "run0449"


async def test_the_terminal_folder_browser_filters_as_keys_are_typed(
    tree: Path, source: LocalSource
) -> None:
    model = BrowserModel(source, want="dir")
    await model.start(str(tree))
    with create_pipe_input() as keys:
        browser = Browser(model, "pick a folder", input=keys, output=DummyOutput())
        # Type "mod": the cursor lands on models/; Enter opens it; Enter on the first
        # row picks it.
        keys.send_text("mod" + "\r")
        task = asyncio.ensure_future(browser.run())
        await asyncio.sleep(0.5)
        assert model.path == str(tree / "models") and model.filter == ""
        assert browser._filter_line()[1] == ("class:filter", "")
        keys.send_text("\r")
        assert await asyncio.wait_for(task, 10) == str(tree / "models")


async def test_picking_a_model_marks_models_and_refuses_an_incomplete_one(runs: Path) -> None:
    source = LocalSource(FileService(Mounts([Mount(path=runs, label="lab")])))
    model = BrowserModel(source, want="dir", models=True)
    await model.start(str(runs / "models"))
    notes = {row.name: row.note for row in model.rows}
    assert notes == {
        "[ use this folder ]": "",
        "legacy_mice": "model",
        "mice_centroid": "model",
        "mice_centroid-2": "incomplete",
        "notes": "",
    }
    await model.type("-2")
    assert await model.enter() is None and model.path == str(runs / "models" / "mice_centroid-2")
    assert model.rows[0].note == "incomplete"
    assert await model.enter() is None  # "use this folder" on the cancelled run
    assert "is an incomplete model" in model.message and "best.ckpt" in model.message
    assert (runs / "models" / "mice_centroid-2").is_dir()  # nothing is deleted
    await model.back()
    await model.open(str(runs / "models" / "notes"))
    assert await model.enter() is None and "is not a model folder" in model.message
    await model.open(str(runs / "models" / "mice_centroid"))
    assert model.rows[0].note == "model"
    assert await model.enter() == str(runs / "models" / "mice_centroid")
    # Without models=True a folder is a folder: nothing is marked or refused.
    plain_pick = BrowserModel(source, want="dir")
    await plain_pick.start(str(runs / "models" / "mice_centroid-2"))
    assert plain_pick.rows[0].note == ""
    assert await plain_pick.enter() == str(runs / "models" / "mice_centroid-2")


async def test_likely_models_are_complete_models_named_like_the_one_asked_for(
    runs: Path,
) -> None:
    from sleap_rtc.client.pathfix import likely_models

    source = FindingSource(FileService(Mounts([Mount(path=runs, label="lab")])))
    found = await likely_models(source, "mice_centroid-2")
    # The cancelled run of that very name is not offered; the complete one is.
    assert found == [str(runs / "models" / "mice_centroid")]
    assert set(await likely_models(source, "mice")) == {
        str(runs / "models" / "legacy_mice"),
        str(runs / "models" / "mice_centroid"),
    }
    assert await likely_models(source, "zebrafish") == []


def test_a_model_path_target_is_marked_as_a_model() -> None:
    track = TrackSpec(data_path="/d.slp", model_paths=["/m/a"], output_path="/out/pred.slp")
    model = target_for("model_paths[0]", track)
    output = target_for("output_path", track)
    assert model is not None and model.model and output is not None and not output.model
