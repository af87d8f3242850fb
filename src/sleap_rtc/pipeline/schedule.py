"""Which stages of a pipeline may be submitted, given how their parents ended: no I/O.

The bookkeeping of the ``--chain=poll`` driver (:mod:`sleap_rtc.pipeline.driver`):
one :class:`Node` per stage, and a :class:`Schedule` that says which are ready by
their dependency type, blocks those a failure keeps out, and takes SLURM's states.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sleap_rtc.engine.backends.slurm.tools import FINAL_STATES, LOST, LOST_AFTER_S
from sleap_rtc.pipeline.record import NOT_SUBMITTED, WAITING

DONE = "DONE"
#: An afternotok stage whose parents all completed: nothing to clean up or report.
NOT_NEEDED = "NOT NEEDED"
#: A parent in one of these states lets the afterok stages that need it go.
SUCCEEDED = frozenset({"COMPLETED", DONE, NOT_NEEDED})
#: Dependency types that need their parents to succeed. The driver waits for a whole
#: array (aftercorr's task-by-task wait is SLURM's, with ``--chain``).
WAIT_FOR_SUCCESS = frozenset({"afterok", "aftercorr"})
#: A parent in one of these states has ended, one way or another.
ENDED = FINAL_STATES | {DONE, NOT_SUBMITTED, NOT_NEEDED}


@dataclass
class Node:
    """One stage as the schedule sees it."""

    key: str
    dataset: str
    stage: str
    #: Keys of the stages this one needs, and how it waits for them.
    parents: tuple[str, ...] = ()
    dependency: str = "afterok"
    state: str = WAITING
    job_id: str | None = None
    reason: str = ""
    #: The stage whose failure kept this one from being submitted (stage, job_id, state).
    blocked_by: dict[str, str | None] | None = None
    #: Since when (monotonic) SLURM's answers have lacked this stage's job.
    missing_since: float | None = None
    #: Which attempt its job is (1 for the first), and how the earlier ones ended.
    attempt: int = 1
    attempts: list[dict[str, object]] = field(default_factory=list)

    @property
    def in_flight(self) -> bool:
        return self.job_id is not None and self.state not in FINAL_STATES


class Schedule:
    """Which stages may be submitted, given what their parents did; no I/O.

    States: ``WAITING`` (not submitted yet), ``DONE`` (outputs there already), a
    SLURM state once submitted, ``NOT SUBMITTED`` (never will be, see ``reason``).
    """

    def __init__(self, nodes: Iterable[Node]) -> None:
        self.nodes: dict[str, Node] = {}
        for node in nodes:
            self.nodes[node.key] = node
        for node in self.nodes.values():  # a parent outside the pipeline holds nothing up
            node.parents = tuple(p for p in node.parents if p in self.nodes and p != node.key)

    def waiting(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.state == WAITING]

    def in_flight(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.in_flight]

    def pending_parents(self, node: Node) -> list[Node]:
        """The parents that keep ``node`` waiting (not completed; for afterany and
        afternotok, not ended)."""
        wanted = SUCCEEDED if node.dependency in WAIT_FOR_SUCCESS else ENDED
        return [self.nodes[p] for p in node.parents if self.nodes[p].state not in wanted]

    def ready(self) -> list[Node]:
        """Waiting stages whose parents allow them to go (see the module's description)."""
        found = []
        for node in self.waiting():
            if self.pending_parents(node):
                continue
            if node.dependency == "afternotok" and not self._a_parent_failed(node):
                continue  # block() marks it NOT NEEDED
            found.append(node)
        return found

    def _a_parent_failed(self, node: Node) -> bool:
        return any(self.nodes[p].state not in SUCCEEDED for p in node.parents)

    def block(self) -> list[Node]:
        """Mark NOT SUBMITTED every waiting afterok stage with a parent that will never
        complete, transitively, and NOT NEEDED every afternotok stage whose parents all
        completed; the stages marked."""
        blocked: list[Node] = []
        changed = True
        while changed:
            changed = False
            for node in self.waiting():
                if node.dependency == "afternotok":
                    settled = node.parents and not self.pending_parents(node)
                    if settled and not self._a_parent_failed(node):
                        node.state = NOT_NEEDED
                        node.reason = "every stage it needs completed (afternotok)"
                        blocked.append(node)
                        changed = True
                    continue
                if node.dependency not in WAIT_FOR_SUCCESS:
                    continue
                for parent in (self.nodes[p] for p in node.parents):
                    name = parent.stage if parent.dataset == node.dataset else parent.key
                    if parent.state == NOT_SUBMITTED and parent.blocked_by is not None:
                        node.reason = f"parent {name} not submitted: {parent.reason}"
                        node.blocked_by = parent.blocked_by
                    elif parent.state in ENDED and parent.state not in SUCCEEDED:
                        job = f" (job {parent.job_id})" if parent.job_id else ""
                        node.reason = f"parent {name} {parent.state}{job}"
                        node.blocked_by = {
                            "stage": parent.stage,
                            "job_id": parent.job_id,
                            "state": parent.state,
                        }
                    else:
                        continue
                    node.state = NOT_SUBMITTED
                    blocked.append(node)
                    changed = True
                    break
        return blocked

    def observe(
        self,
        states: Mapping[str, str],
        now: float | None = None,
        lost_after_s: float = LOST_AFTER_S,
    ) -> list[Node]:
        """Take the jobs' latest states; the stages whose jobs just ended. A job missing
        from them is still in flight, until it has been missing for ``lost_after_s``:
        then it is LOST (SLURM forgot it, so its outcome can't be known)."""
        now = time.monotonic() if now is None else now
        ended = []
        for node in self.in_flight():
            state = states.get(str(node.job_id))
            if state is None:
                node.missing_since = node.missing_since or now
                if now - node.missing_since < lost_after_s:
                    continue
                state = LOST
                node.reason = f"SLURM no longer knows job {node.job_id}; its outcome is unknown"
            node.missing_since = None
            node.state = state
            if state in FINAL_STATES:
                ended.append(node)
        return ended

    def stuck(self) -> list[Node]:
        """Waiting stages nothing will ever release (nothing in flight, none ready):
        only with parents that wait on each other."""
        if self.in_flight() or self.ready():
            return []
        return self.waiting()

    def succeeded(self) -> bool:
        return all(n.state in SUCCEEDED for n in self.nodes.values())
