"""Every leaf command's ``--help`` shows an example of itself, and shell completion works."""

from __future__ import annotations

from collections.abc import Iterator

import click
from click.testing import CliRunner

from sleap_rtc.cli import cli

PROG = "sleap-rtc"


def _leaves(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The full path of every command that is not a group, depth first."""
    for name, command in sorted(group.commands.items()):
        here = (*path, name)
        if isinstance(command, click.Group):
            yield from _leaves(command, here)
        else:
            yield here


def _example_block(help_text: str) -> list[str] | None:
    """The lines under the first ``Example:`` / ``Examples:`` header, up to a blank line."""
    lines = help_text.splitlines()
    for at, line in enumerate(lines):
        if line.strip() in ("Example:", "Examples:"):
            block = []
            for item in lines[at + 1 :]:
                if not item.strip():
                    break
                block.append(item.strip())
            return block
    return None


def _example_problem(path: tuple[str, ...]) -> str | None:
    """Why the help of the command at ``path`` has no proper example, or None."""
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name=PROG)
    if result.exit_code != 0:
        return f"--help exited {result.exit_code}: {result.output[-300:]}"
    block = _example_block(result.output)
    if block is None:
        return "no Example(s): block"
    own = " ".join((PROG, *path))
    commands = [line for line in block if line.split(" ", 1)[0] == PROG]
    if not commands:
        return f"no line in the example block runs {own!r}"
    wrong = [line for line in commands if line != own and not line.startswith(own + " ")]
    if wrong:
        return f"example lines that don't run {own!r}: {wrong}"
    return None


def test_the_walk_reaches_nested_commands() -> None:
    leaves = {" ".join(path) for path in _leaves(cli)}
    assert {"train", "rooms create", "local jobs list", "pipeline manifest write"} <= leaves
    assert "rooms" not in leaves and "local jobs" not in leaves


def test_example_block_parsing() -> None:
    text = "Usage: x\n\n  Examples:\n    sleap-rtc a b --c\n    echo d\n\n  More text.\n"
    assert _example_block(text) == ["sleap-rtc a b --c", "echo d"]
    assert _example_block("Usage: x\n\n  No example here.\n") is None


def test_every_leaf_command_help_has_its_own_example() -> None:
    problems = {path: _example_problem(path) for path in _leaves(cli)}
    missing = sorted(" ".join((PROG, *p)) for p, why in problems.items() if why is not None)
    details = "\n".join(
        f"  {PROG} {' '.join(p)}: {why}" for p, why in sorted(problems.items()) if why is not None
    )
    assert not missing, (
        f"{len(missing)} leaf command(s) lack a proper example in --help "
        f"(add a '\\b' line, then 'Examples:' and indented '{PROG} ...' lines "
        f"to the docstring): {', '.join(missing)}\n{details}"
    )


def _complete(words: str, cword: int, shell: str = "bash") -> list[str]:
    result = CliRunner().invoke(
        cli,
        [],
        prog_name=PROG,
        env={
            "_SLEAP_RTC_COMPLETE": f"{shell}_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(cword),
        },
    )
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_bash_completion_offers_commands() -> None:
    # click's bash format: one "type,value" line per candidate.
    assert "plain,jobs" in _complete("sleap-rtc jo", 1)
    assert "plain,create" in _complete("sleap-rtc rooms cr", 2)
    assert "plain,--room" in _complete("sleap-rtc rooms workers --", 3)


def test_completion_scripts_name_the_entry_point() -> None:
    for shell in ("bash", "zsh", "fish"):
        result = CliRunner().invoke(
            cli, [], prog_name=PROG, env={"_SLEAP_RTC_COMPLETE": f"{shell}_source"}
        )
        assert result.exit_code == 0, result.output
        assert "_SLEAP_RTC_COMPLETE" in result.output
        assert "_sleap_rtc_completion" in result.output
