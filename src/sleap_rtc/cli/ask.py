"""Questions on the terminal that don't stop the event loop.

While a question waits for the user, the peer channel must keep running (WebRTC
consent checks, keepalives, job events). These prompts are prompt_toolkit's
async prompts on the same loop; Ctrl-C raises KeyboardInterrupt (exit 130) and
Ctrl-D counts as the default answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from prompt_toolkit import PromptSession


async def _ask(message: str) -> str | None:
    try:
        return await PromptSession[str]().prompt_async(message)
    except EOFError:
        return None


async def confirm(question: str, *, default: bool = False) -> bool:
    """``question``, then ``[y/N]: `` on the next line, until the answer is yes or no.

    Enter takes the default.
    """
    hint = "[Y/n]" if default else "[y/N]"
    while True:
        answer = await _ask(f"{question}\n{hint}: ")
        if answer is None:
            return default
        answer = answer.strip().lower()
        if not answer:
            return default
        if answer in ("y", "yes"):
            return True
        if answer in ("n", "no"):
            return False


async def choose(question: str, choices: Sequence[str], *, default: str) -> str:
    """``question [default]: `` until the answer is one of ``choices``."""
    while True:
        answer = await _ask(f"{question} [{default}]: ")
        if answer is None:
            return default
        answer = answer.strip().lower()
        if not answer:
            return default
        if answer in choices:
            return answer
