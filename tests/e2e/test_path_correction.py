"""Path correction and the file browser in a real terminal (tmux), against a real
server and worker, with real training.

Each test types into an 80×24 tmux pane and asserts on what the screen shows.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sleap_rtc.demo.data import make_demo_data
from tests.labels import labels_from_elsewhere
from tests.servers import Room, cli_env, open_room
from tests.tmux import Terminal, need_tmux

pytestmark = pytest.mark.slow

#: The project folder inside the worker's mount (a space, as real lab folders have).
PROJECT = "lab data"


@pytest.fixture(scope="module")
def mount() -> Iterator[Path]:
    """A short mount path, so whole paths fit an 80-column screen."""
    root = Path(tempfile.mkdtemp(prefix="srtc-")).resolve()
    try:
        make_demo_data(root / PROJECT)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def room(mount: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    need_tmux()
    with open_room(tmp_path_factory.mktemp("correction"), mount) as opened:
        yield opened


@pytest.fixture
def term(tmp_path: Path) -> Iterator[Terminal]:
    with Terminal(tmp_path / "terminal") as terminal:
        yield terminal


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sleap_rtc", *args]


def env(room: Room) -> dict[str, str]:
    return cli_env(room.users.home("alice"), SLEAP_RTC_ICE_HOSTS="127.0.0.1")


def highlighted(screen: str) -> str:
    """The name on the browser's highlighted row."""
    rows = [line for line in screen.splitlines() if line.startswith("> ")]
    assert len(rows) == 1, screen
    return rows[0]


def test_a_wrong_config_is_fixed_in_the_browser_and_the_job_completes(
    room: Room, mount: Path, term: Terminal
) -> None:
    project = mount / PROJECT
    wrong = project / "wrong" / "single_instance.yaml"
    argv = cli(
        "train",
        "--room",
        "lab",
        "--config",
        str(wrong),
        "--max-epochs",
        "1",
        "--run-name",
        "fixed-in-browser",
        "--no-logs",
    )
    term.start(argv, env(room))

    screen = term.wait_for(r"\[y/N\]:$", 90)
    assert "Job rejected by worker:" in screen
    assert f"  - config_path: Path not found: {wrong}" in screen
    assert f"Path error detected for 'config_path': {wrong}" in screen
    assert (
        "Would you like to browse the worker filesystem to find the correct path?\n[y/N]:" in screen
    )
    term.type("y")
    term.send("Enter")

    # Files named like the bad one come first; the user browses instead.
    screen = term.wait_for(r"Use one \[1-\d\], or b to browse")
    assert "Likely matches for 'single_instance.yaml' on the worker:" in screen
    assert f"  1. {project}/configs/single_instance.yaml" in screen
    term.type("b")
    term.send("Enter")

    # The browser opens at the nearest folder that exists, filtered for configs.
    screen = term.wait_for(r"\[Esc\] Cancel")
    assert "Select correct path for 'config_path':" in screen
    assert f"Path: {project}" in screen
    assert "Filter: *.yaml" in screen
    assert "configs/" in highlighted(screen)
    assert "demo.pkg.slp" not in screen  # filtered out: not a config
    assert len(screen.splitlines()) <= 24

    term.send("Enter")  # open configs/
    screen = term.wait_for(r"Path: .*/configs$")
    for name in ("centered_instance.yaml", "centroid.yaml", "single_instance.yaml"):
        assert re.search(rf"{name}  \(\d+(\.\d)? (bytes|kB)\)", screen), screen
    term.send("Down", "Down")
    screen = term.wait_for(r"^> .*single_instance\.yaml")
    term.send("Enter")

    # Resubmitted with the chosen path; accepted; trained to the end.
    screen = term.wait_for(r"accepted by lab-cpu", 60)
    assert f"config_path: {wrong} → {project}/configs/single_instance.yaml" in screen
    assert "Resubmitting the job with the corrected path(s)" in screen
    assert "Select correct path" not in screen  # the browser cleared itself
    assert term.exit_code(timeout=240) == 0, term.screen()
    assert re.search(r"job \w+ complete", term.screen())
    assert (mount / "models" / "fixed-in-browser" / "best.ckpt").is_file()


def test_a_likely_file_is_offered_by_name_and_picked_by_number(
    room: Room, mount: Path, term: Terminal
) -> None:
    project = mount / PROJECT
    wrong = mount / "old-project" / "demo.pkg.slp"
    argv = cli(
        "train",
        "--room",
        "lab",
        "--config",
        str(project / "configs" / "single_instance.yaml"),
        "--labels",
        str(wrong),
        "--max-epochs",
        "1",
        "--run-name",
        "fixed-by-name",
        "--no-logs",
    )
    term.start(argv, env(room))
    term.wait_for(r"Path error detected for 'labels_path'", 90)
    term.wait_for(r"\[y/N\]:$")
    term.type("y")
    term.send("Enter")
    screen = term.wait_for(r"Use one \[1-\d\], or b to browse")
    assert f"  1. {project}/demo.pkg.slp" in screen
    term.type("1")
    term.send("Enter")
    screen = term.wait_for(r"accepted by lab-cpu", 60)
    assert f"labels_path: {wrong} → {project}/demo.pkg.slp" in screen
    assert term.exit_code(timeout=240) == 0, term.screen()
    assert (mount / "models" / "fixed-by-name" / "best.ckpt").is_file()


def test_saying_no_interrupting_or_having_no_terminal_ends_the_command(
    room: Room, mount: Path, term: Terminal, tmp_path: Path
) -> None:
    wrong = str(mount / PROJECT / "nope.yaml")
    term.start(cli("train", "--room", "lab", "--config", wrong), env(room))
    term.wait_for(r"\[y/N\]:$", 90)
    term.send("Enter")  # the default is no
    assert term.exit_code() == 2
    assert "Select correct path" not in term.screen()

    # Ctrl-C at a question ends the command at once (130), whatever is on the screen.
    with Terminal(tmp_path / "interrupt") as interrupted:
        interrupted.start(cli("train", "--room", "lab", "--config", wrong), env(room))
        interrupted.wait_for(r"\[y/N\]:$", 90)
        interrupted.type("y")
        interrupted.send("Enter")
        interrupted.wait_for(r"or b to browse \[b\]:$")
        interrupted.send("C-c")
        assert interrupted.exit_code() == 130

    # Without a terminal nothing is asked: the problems, then exit 2.
    result = subprocess.run(
        cli("train", "--room", "lab", "--config", wrong),
        env=env(room),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 2
    assert f"config_path: Path not found: {wrong}" in result.stdout
    assert "Would you like" not in result.stdout + result.stderr


def test_browse_moves_filters_and_prints_the_chosen_path(
    room: Room, mount: Path, term: Terminal, tmp_path: Path
) -> None:
    project = mount / PROJECT
    out = tmp_path / "chosen.txt"
    # The path goes to stdout (here a file); the browser draws on the terminal.
    argv = ["sh", "-c", 'exec "$@" > ' + str(out), "sh"]
    argv += cli("browse", "--room", "lab", "--start", str(project), "--filter", "*.slp")
    term.start(argv, env(room))

    screen = term.wait_for(r"\[Esc\] Cancel", 60)
    assert "lab-cpu: select a file" in screen
    assert "Filter: *.slp  (type to replace)" in screen
    assert "demo.pkg.slp" in screen and "ground_truth.json" not in screen

    term.type("ground")  # replaces the starting filter
    screen = term.wait_for(r"Filter: ground_$")
    assert "ground_truth.json" in screen and "demo.pkg.slp" not in screen
    term.send(*["BSpace"] * 6)
    screen = term.wait_for(r"Filter: _$")
    assert "ground_truth.json" in screen and "demo.pkg.slp" in screen

    term.send("BSpace")  # no filter left: up to the mount's top folder
    screen = term.wait_for(rf"Path: {re.escape(str(mount))}$")
    assert f"{PROJECT}/" in highlighted(screen)  # where we came from
    term.send("Left")  # above a mount's top: the list of mounts
    screen = term.wait_for(r"Path: \(the worker's mounts\)")
    assert f"{mount}/  (data" in highlighted(screen)
    term.send("Enter")
    term.wait_for(rf"Path: {re.escape(str(mount))}$")
    term.send("Enter")  # into the project
    term.wait_for(rf"Path: {re.escape(str(project))}$")
    term.send("End")
    screen = term.wait_for(r"^> .*ground_truth\.json")
    term.send("Enter")
    assert term.exit_code() == 0, term.screen()
    assert out.read_text().strip() == str(project / "ground_truth.json")


def test_browse_picks_folders_and_esc_cancels(room: Room, mount: Path, tmp_path: Path) -> None:
    with Terminal(tmp_path / "folders") as term:
        term.start(cli("browse", "--room", "lab", "--start", str(mount), "--folders"), env(room))
        screen = term.wait_for(r"\[Esc\] Cancel", 60)
        assert "Folders only" in screen and "[ use this folder ]" in highlighted(screen)
        term.send("Down", "Enter")  # open lab data/
        screen = term.wait_for(rf"Path: {re.escape(str(mount / PROJECT))}$")
        assert "[ use this folder ]" in highlighted(screen)
        assert "configs/" in screen and "demo.pkg.slp" not in screen
        term.send("Enter")
        assert term.exit_code() == 0
        assert str(mount / PROJECT) in term.screen().splitlines()

    with Terminal(tmp_path / "cancel") as term:
        term.start(cli("browse", "--room", "lab"), env(room))
        term.wait_for(r"\[Esc\] Cancel", 60)
        term.send("Escape")
        assert term.exit_code() == 130
        assert "cancelled" in term.screen()


def test_ctrl_c_during_training_offers_to_stop_early_and_keeps_the_model(
    room: Room, mount: Path, term: Terminal
) -> None:
    config = mount / PROJECT / "configs" / "single_instance.yaml"
    argv = cli(
        "train",
        "--room",
        "lab",
        "--config",
        str(config),
        "--max-epochs",
        "200",
        "--run-name",
        "stopped-early",
        "--no-logs",
    )
    term.start(argv, env(room))
    term.wait_for(r"train single_instance .* [1-9]\d*/200", 120)  # an epoch done
    term.send("C-c")
    screen = term.wait_for(r"or \[w\]atch on \[w\]:$")
    assert "Interrupted. [s]top early and keep the model, [c]ancel, [d]etach" in screen
    term.type("s")
    term.send("Enter")
    assert term.exit_code(timeout=120) == 0, term.screen()
    assert re.search(r"job \w+ complete \(stopped early\)", term.screen())
    assert (mount / "models" / "stopped-early" / "best.ckpt").is_file()


def test_a_video_of_labels_made_elsewhere_is_picked_and_becomes_a_path_map(
    room: Room, mount: Path, term: Terminal
) -> None:
    """Labels saved on a Windows laptop name C:\\...; the worker has the video elsewhere.
    The user picks it from the files found by name; the job trains with the map it
    implies, and the CLI prints that map to reuse."""
    project = mount / PROJECT
    videos = mount / "mouse videos"  # beside the project, so other tests' folders keep
    labels = labels_from_elsewhere(
        project / "demo.pkg.slp",
        mount / "from laptop" / "laptop.slp",
        stored="C:\\Users\\ana\\mice\\demo.mp4",
        video=videos / "demo.mp4",
    )
    argv = cli(
        "train",
        "--room",
        "lab",
        "--config",
        str(project / "configs" / "single_instance.yaml"),
        "--labels",
        str(labels),
        "--max-epochs",
        "1",
        "--run-name",
        "mapped-in-terminal",
        "--no-logs",
    )
    term.start(argv, env(room))
    screen = term.wait_for(r"find the video\?\n\[y/N\]:$", 90)
    assert "labels_path.videos[0]: video 0 of" in screen
    assert "Video not found for 'labels_path.videos[0]': C:/Users/ana/mice/demo.mp4" in screen
    term.type("y")
    term.send("Enter")
    screen = term.wait_for(r"Use one \[1-\d\], or b to browse")
    assert "Likely matches for 'demo.mp4' on the worker:" in screen
    assert f"  1. {videos}/demo.mp4" in screen
    term.type("1")
    term.send("Enter")
    screen = term.wait_for(r"accepted by lab-cpu", 60)
    assert f"labels_path.videos[0]: C:/Users/ana/mice/demo.mp4 → {videos}/demo.mp4" in screen
    assert f"--path-map C:/Users/ana/mice '{videos}'" in screen  # quoted: a space
    assert term.exit_code(timeout=240) == 0, term.screen()
    assert (mount / "models" / "mapped-in-terminal" / "best.ckpt").is_file()
