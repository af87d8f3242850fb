"""The job state machine.

Invariant: a job only moves along the edges in ``_ALLOWED``; once it is in a
terminal state it never changes again. The worker's store enforces this on every
write, so a late event from a dying process can't turn CANCELLED into FAILED.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    REJECTED = "REJECTED"  # validation failed; nothing ran
    QUEUED = "QUEUED"  # accepted, waiting for a free slot
    RUNNING = "RUNNING"  # a sleap-nn process is (or may be) alive
    COMPLETE = "COMPLETE"  # every step finished with exit code 0 (stop-early included)
    FAILED = "FAILED"  # a step failed, or the worker lost the process
    CANCELLED = "CANCELLED"  # cancelled by the user before or while running


TERMINAL_STATES = frozenset(
    {JobState.REJECTED, JobState.COMPLETE, JobState.FAILED, JobState.CANCELLED}
)

_ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.COMPLETE, JobState.FAILED, JobState.CANCELLED}),
}


class TransitionError(RuntimeError):
    """An attempt to move a job along an edge the state machine doesn't have."""


def check_transition(current: JobState, new: JobState) -> None:
    """Raise :class:`TransitionError` unless ``current -> new`` is allowed."""
    if new not in _ALLOWED.get(current, frozenset()):
        raise TransitionError(f"job can't go from {current} to {new}")
