"""Driving a pipeline from here (``--chain=poll``): each stage is submitted once the
stages it needs have completed.

``--chain`` (afterok) hands the ordering to SLURM, with ``--dependency`` between
jobs; some sites don't allow dependencies between partitions or QOSes, or limit
how many pending jobs one may have. The driver stays running instead: it submits
every stage that needs nothing (or whose parents are done already) as a plain job,
then looks at the jobs in flight every ``interval`` seconds, with one
:meth:`~sleap_rtc.engine.backends.slurm.tools.SlurmClient.job_states` call for all
of them, and submits a
stage as soon as all its parents are COMPLETED. Stages skipped because their
outputs exist count as completed parents, and jobs still queued or running from
an earlier submission are followed rather than submitted again, so running the
same command again resumes where a stopped driver left off.

When a parent ends any other way (FAILED, TIMEOUT, OUT_OF_MEMORY, CANCELLED, …),
the stages that need it, and those that need them, are never submitted: they are
``NOT SUBMITTED``, with the parent, its job and its state as the reason.

Everything goes into ``slurm_jobs/{job}.runs.json`` as it happens: a job id for
each submission, ``WAITING`` (with this driver's host and pid) for a stage not
submitted yet, ``NOT SUBMITTED`` with the reason for one that never will be. A
driver that stops early marks its waiting stages ``NOT SUBMITTED`` ("the driver
stopped"); ``pipeline status`` shows all of it.

:class:`Schedule` is the bookkeeping alone (no SLURM, no files); :class:`Driver`
runs it against a SLURM client and the record; :func:`drive` runs a driver and
decides, once for every caller, what happens to the jobs it leaves when stopped.

The driver looks at its jobs itself, synchronously, one batched query per look;
the worker's SLURM backend has its own asynchronous watcher
(:mod:`sleap_rtc.engine.backends.slurm.watcher`) for the jobs it follows.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sleap_rtc.engine.backends.slurm.tools import (
    FINAL_STATES,
    LOST,
    LOST_AFTER_S,
    SlurmClient,
    SlurmError,
)
from sleap_rtc.pipeline.record import (
    NOT_SUBMITTED,
    WAITING,
    load_record,
    record_path,
    refuse_if_driven,
    stage_done,
    this_driver,
    update_record,
)
from sleap_rtc.pipeline.sbatch import Layout, generate
from sleap_rtc.pipeline.spec import Pipeline

DONE = "DONE"
#: A parent in one of these states lets the stages that need it go.
SUCCEEDED = frozenset({"COMPLETED", DONE})
STOPPED_REASON = "the driver stopped before submitting it; rerun to resume"

EventKind = Literal[
    "done", "queued", "waiting", "submitted", "completed", "failed", "skipped", "stopped", "retry"
]


@dataclass
class Node:
    """One stage as the schedule sees it."""

    key: str
    dataset: str
    stage: str
    #: Keys of the stages this one needs.
    parents: tuple[str, ...] = ()
    state: str = WAITING
    job_id: str | None = None
    reason: str = ""
    #: The stage whose failure kept this one from being submitted (stage, job_id, state).
    blocked_by: dict[str, str | None] | None = None
    #: Since when (monotonic) SLURM's answers have lacked this stage's job.
    missing_since: float | None = None

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
        """The parents that have not completed yet."""
        return [self.nodes[p] for p in node.parents if self.nodes[p].state not in SUCCEEDED]

    def ready(self) -> list[Node]:
        """Waiting stages whose parents all completed (or had nothing to do)."""
        return [n for n in self.waiting() if not self.pending_parents(n)]

    def block(self) -> list[Node]:
        """Mark NOT SUBMITTED every waiting stage with a parent that will never
        complete, transitively; the stages marked."""
        blocked: list[Node] = []
        changed = True
        while changed:
            changed = False
            for node in self.waiting():
                for parent in (self.nodes[p] for p in node.parents):
                    if parent.state == NOT_SUBMITTED and parent.blocked_by is not None:
                        node.reason = f"parent {parent.stage} not submitted: {parent.reason}"
                        node.blocked_by = parent.blocked_by
                    elif parent.state in FINAL_STATES and parent.state != "COMPLETED":
                        job = f" (job {parent.job_id})" if parent.job_id else ""
                        node.reason = f"parent {parent.stage} {parent.state}{job}"
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


@dataclass(frozen=True)
class Event:
    """One thing that happened to one stage (``retry``: to the driver itself)."""

    kind: EventKind
    dataset: str
    stage: str
    job_id: str | None
    state: str
    #: What happened, in words, e.g. "job 103 FAILED; log: …".
    text: str
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class StageResult:
    """Where a stage ended up: a SLURM state, DONE, or NOT SUBMITTED with the reason."""

    dataset: str
    stage: str
    job_id: str | None
    state: str
    reason: str = ""


class Driver:
    """Submits a pipeline's stages as their parents complete; see the module's description.

    ``slurm`` submits, queries and cancels the jobs (default: this machine's SLURM tools).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        layout: Layout,
        *,
        force: bool = False,
        interval: float = 10.0,
        on_event: Callable[[Event], None] | None = None,
        slurm: SlurmClient | None = None,
        max_poll_errors: int = 5,
    ) -> None:
        self.pipeline = pipeline
        self.layout = layout
        self.force = force
        self.interval = interval
        self.on_event = on_event
        self.slurm = slurm or SlurmClient()
        self.max_poll_errors = max_poll_errors
        self.record = record_path(pipeline, layout)
        self.schedule = Schedule([])
        self.scripts: dict[str, Path] = {}
        #: True once a run returned because it was asked to stop.
        self.stopped = False
        self.polls = 0
        #: The jobs :meth:`cancel_in_flight` cancelled.
        self.cancelled: list[str] = []

    # -- the loop -------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> list[StageResult]:
        """Drive until nothing is left to submit or follow, or ``stop`` is set (the
        submitted jobs are left running then); every stage's outcome."""
        stop = stop or threading.Event()
        self.stopped = False
        self._start()
        try:
            self._advance(stop)
            for node in self.schedule.waiting():
                names = ", ".join(p.stage for p in self.schedule.pending_parents(node))
                self._emit("waiting", node, f"waiting for {names}")
            errors = 0
            while self.schedule.in_flight() and not stop.wait(self.interval):
                try:
                    self._poll()
                    errors = 0
                except SlurmError as exc:
                    errors += 1
                    if errors >= self.max_poll_errors:
                        raise
                    self._emit(
                        "retry", None, f"{exc}; trying again ({errors}/{self.max_poll_errors})"
                    )
                    continue
                self._advance(stop)
            self.stopped = stop.is_set()
            for node in self.schedule.stuck():
                if not self.stopped:
                    self._give_up(node, "its parents never ran (they wait on each other)")
        finally:
            for node in self.schedule.waiting():
                self._give_up(node, STOPPED_REASON, kind="stopped")
        return self.results()

    def _start(self) -> None:
        """Write missing scripts; find what is done or still queued; record the rest WAITING."""
        self.scripts = {w.stage.key: w.script for w in generate(self.pipeline, self.layout)}
        record = load_record(self.record)
        refuse_if_driven(self.record, record)
        earlier = {k: str(v["job_id"]) for k, v in record.items() if v.get("job_id")}
        live = {
            job_id: state
            for job_id, state in self.slurm.job_states(list(earlier.values())).items()
            if state not in FINAL_STATES
        }
        nodes: list[Node] = []
        for dataset in self.pipeline.datasets:
            stages = self.pipeline.for_dataset(dataset.name)
            keys = {s.name: s.key for s in stages}
            for stage in stages:
                parents = tuple(keys[name] for name in stage.after if name in keys)
                nodes.append(Node(stage.key, dataset.name, stage.name, parents))
        self.schedule = Schedule(nodes)
        waiting: dict[str, dict[str, object]] = {}
        for stage in self.pipeline.stages:
            node = self.schedule.nodes[stage.key]
            previous = earlier.get(stage.key)
            if previous in live:
                node.job_id, node.state = previous, live[previous]
                self._emit("queued", node, f"already {node.state.lower()} as job {previous}")
                continue
            done = None if self.force else stage_done(stage, self.layout)
            if done:
                node.state, node.reason = DONE, done
                self._emit("done", node, f"skipped: {done}")
                continue
            waiting[node.key] = self._waiting_entry(node)
        if waiting:
            update_record(self.record, waiting)

    def _waiting_entry(self, node: Node) -> dict[str, object]:
        return {
            "job_id": None,
            "state": WAITING,
            "waits_for": [self.schedule.nodes[p].stage for p in node.parents],
            "driver": this_driver(),
            "updated_at": time.time(),
        }

    def _advance(self, stop: threading.Event) -> None:
        """Give up on stages a failure blocks, and submit every stage that is ready."""
        blocked = self.schedule.block()
        if blocked:
            update_record(self.record, {n.key: self._blocked_entry(n) for n in blocked})
        for node in blocked:
            self._emit("skipped", node, f"not submitted: {node.reason}")
        for node in self.schedule.ready():
            if stop.is_set():
                return
            try:
                self._submit(node)
            except SlurmError:
                if stop.is_set():  # the Ctrl-C that stops us reached sbatch too
                    return
                raise

    def _submit(self, node: Node) -> None:
        job_id = self.slurm.sbatch(self.scripts[node.key], cwd=self.layout.scripts.parent)
        node.job_id, node.state = job_id, "PENDING"
        parents = [self.schedule.nodes[p].stage for p in node.parents]
        entry: dict[str, object] = {
            "job_id": job_id,
            "submitted_at": time.time(),
            "after": [],  # no SLURM dependency: the driver waited for the parents itself
            "chain": "poll",
            "parents": parents,
        }
        update_record(self.record, {node.key: entry})
        done = f" ({', '.join(parents)} done)" if parents else ""
        self._emit("submitted", node, f"submitted job {job_id}{done}")

    def _poll(self) -> None:
        """One state query for every job in flight."""
        flying = self.schedule.in_flight()
        states = self.slurm.job_states([str(n.job_id) for n in flying])
        self.polls += 1
        for node in self.schedule.observe(states):
            if node.state == "COMPLETED":
                self._emit("completed", node, f"job {node.job_id} COMPLETED")
            else:
                log = self.layout.logs / f"{node.key}-{node.job_id}.out"
                self._emit("failed", node, f"job {node.job_id} {node.state}; log: {log}")

    def _blocked_entry(self, node: Node) -> dict[str, object]:
        return {
            "job_id": None,
            "state": NOT_SUBMITTED,
            "reason": node.reason,
            "blocked_by": node.blocked_by,
            "updated_at": time.time(),
        }

    def _give_up(self, node: Node, reason: str, kind: EventKind = "skipped") -> None:
        node.state, node.reason = NOT_SUBMITTED, reason
        update_record(self.record, {node.key: self._blocked_entry(node)})
        self._emit(kind, node, f"not submitted: {reason}")

    def _emit(self, kind: EventKind, node: Node | None, text: str) -> None:
        if self.on_event is None:
            return
        if node is None:
            self.on_event(Event(kind, "", "", None, "", text))
        else:
            self.on_event(Event(kind, node.dataset, node.stage, node.job_id, node.state, text))

    # -- afterwards -----------------------------------------------------------------

    def results(self) -> list[StageResult]:
        return [
            StageResult(n.dataset, n.stage, n.job_id, n.state, n.reason)
            for n in self.schedule.nodes.values()
        ]

    def succeeded(self) -> bool:
        return self.schedule.succeeded()

    def in_flight_ids(self) -> list[str]:
        return [str(n.job_id) for n in self.schedule.in_flight()]

    def cancel_in_flight(self) -> list[str]:
        """Cancel the jobs still queued or running; their ids."""
        ids = self.in_flight_ids()
        if not ids:
            return []
        self.slurm.scancel(ids)
        self.cancelled += ids
        with contextlib.suppress(SlurmError):  # one that ended meanwhile keeps its state
            self.schedule.observe(self.slurm.job_states(ids))
        for node in self.schedule.in_flight():
            node.state, node.reason = "CANCELLED", "cancelled when the driver stopped"
        return ids


def drive(
    driver: Driver,
    *,
    stop: threading.Event | None = None,
    cancel_on_exit: bool = False,
    ask: Callable[[list[str]], bool] | None = None,
) -> list[StageResult]:
    """Run ``driver`` (see :meth:`Driver.run`); what happens to the jobs it leaves.

    When it returns because ``stop`` was set, the jobs still queued or running are
    cancelled with ``cancel_on_exit``, else when ``ask`` (given their ids) says so,
    else left running for a later run to follow. When it raises (Ctrl-C included),
    they are cancelled with ``cancel_on_exit`` and the exception goes on; a failing
    ``scancel`` then doesn't hide it. :attr:`Driver.cancelled` says what was cancelled.
    """
    try:
        driver.run(stop=stop)
    except BaseException:
        if cancel_on_exit and driver.in_flight_ids():
            with contextlib.suppress(SlurmError):
                driver.cancel_in_flight()
        raise
    left = driver.in_flight_ids()
    if left and (cancel_on_exit or (ask is not None and ask(left))):
        driver.cancel_in_flight()
    return driver.results()


def summary(results: Sequence[StageResult]) -> str:
    """E.g. "6 stage(s): 3 completed, 2 already done, 1 FAILED" (non-zero counts only)."""
    counts: dict[str, int] = dict.fromkeys(["completed", "already done"], 0)
    for result in results:
        if result.state == "COMPLETED":
            what = "completed"
        elif result.state == DONE:
            what = "already done"
        elif result.state == NOT_SUBMITTED:
            what = "not submitted"
        elif result.state in FINAL_STATES:
            what = result.state
        else:
            what = "still queued or running"
        counts[what] = counts.get(what, 0) + 1
    last = ["not submitted", "still queued or running"]
    order = [w for w in counts if w not in last] + [w for w in last if w in counts]
    parts = ", ".join(f"{counts[w]} {w}" for w in order if counts[w])
    return f"{len(results)} stage(s): {parts}"
