"""Driving a pipeline from here (``--chain=poll``): each stage is submitted once the
stages it needs have ended as it needs.

``--chain`` (afterok) hands the ordering to SLURM, with ``--dependency`` between
jobs; some sites don't allow dependencies between partitions or QOSes, or limit
how many pending jobs one may have. The driver stays running instead: it submits
every stage that needs nothing (or whose parents are done already) as a plain job,
then looks at the jobs in flight every ``interval`` seconds, with one
:meth:`~sleap_rtc.engine.backends.slurm.tools.SlurmClient.job_states` call for all
of them, and submits a stage as soon as its parents allow, by its dependency
type: ``afterok`` once all COMPLETED, ``afterany`` once all ended however they
ended, ``afternotok`` once all ended and one of them did not complete. Stages
skipped because their outputs are current count as completed parents, and jobs
still queued or running from an earlier submission are followed rather than
submitted again, so running the same command again resumes where a stopped
driver left off (:mod:`sleap_rtc.pipeline.plan` decides all of that).

A job file's ``throttle`` spaces the sbatch calls and caps the jobs in the queue (the
rest go in as room frees, :mod:`sleap_rtc.pipeline.throttle`); the interval between
looks doubles while nothing changes, up to 8 times ``interval``, and drops back when
something does.

When a parent ends any other way (FAILED, TIMEOUT, OUT_OF_MEMORY, CANCELLED, …),
the ``afterok`` stages that need it, and those that need them, are never
submitted: they are ``NOT SUBMITTED``, with the parent, its job and its state as
the reason. An ``afternotok`` stage whose parents all completed is ``NOT
NEEDED``, which counts as a success.

Everything goes into ``slurm_jobs/{job}/runs.json`` as it happens: a job id for
each submission, ``WAITING`` (with this driver's host and pid) for a stage not
submitted yet, ``NOT SUBMITTED`` with the reason for one that never will be. A
driver that stops early marks its waiting stages ``NOT SUBMITTED`` ("the driver
stopped"); ``pipeline status`` shows all of it.

:class:`~sleap_rtc.pipeline.schedule.Schedule` is the bookkeeping alone (no SLURM,
no files); :class:`Driver`
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sleap_rtc.engine.backends.slurm.tools import (
    FINAL_STATES,
    SlurmClient,
    SlurmError,
    explain,
)
from sleap_rtc.pipeline.plan import make_plan
from sleap_rtc.pipeline.record import (
    NOT_SUBMITTED,
    WAITING,
    load_record,
    record_path,
    refuse_if_driven,
    this_driver,
    update_record,
)
from sleap_rtc.pipeline.sbatch import Layout
from sleap_rtc.pipeline.schedule import (
    DONE,
    NOT_NEEDED,
    Node,
    Schedule,
)
from sleap_rtc.pipeline.scripts import Written, generate
from sleap_rtc.pipeline.spec import Pipeline, Stage
from sleap_rtc.pipeline.throttle import Backoff, Throttle

STOPPED_REASON = "the driver stopped before submitting it; rerun to resume"

EventKind = Literal[
    "done", "queued", "waiting", "submitted", "completed", "failed", "skipped", "stopped", "retry"
]


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
        self.written: dict[str, Written] = {}
        #: sbatch options a stage adds to its script's (the tasks of an array to run).
        self.options: dict[str, list[str]] = {}
        #: True once a run returned because it was asked to stop.
        self.stopped = False
        self.polls = 0
        #: The jobs :meth:`cancel_in_flight` cancelled.
        self.cancelled: list[str] = []
        #: Spaces submissions and caps the jobs queued (the job file's ``throttle``).
        self.throttle = Throttle(pipeline.throttle)

    # -- the loop -------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> list[StageResult]:
        """Drive until nothing is left to submit or follow, or ``stop`` is set (the
        submitted jobs are left running then); every stage's outcome."""
        stop = stop or threading.Event()
        self.stopped = False
        self.throttle = Throttle(self.pipeline.throttle, sleep=stop.wait)
        self._start()
        try:
            self._advance(stop)
            for node in self.schedule.waiting():
                names = ", ".join(p.stage for p in self.schedule.pending_parents(node))
                self._emit("waiting", node, f"waiting for {names}")
            errors = 0
            backoff = Backoff(self.interval)
            wait = self.interval
            while self.schedule.in_flight() and not stop.wait(wait):
                try:
                    ended = self._poll()
                    errors = 0
                except SlurmError as exc:
                    errors += 1
                    if errors >= self.max_poll_errors:
                        raise
                    self._emit(
                        "retry", None, f"{exc}; trying again ({errors}/{self.max_poll_errors})"
                    )
                    continue
                advanced = self._advance(stop)
                wait = backoff.next(changed=ended or advanced)
            self.stopped = stop.is_set()
            for node in self.schedule.stuck():
                if not self.stopped:
                    self._give_up(node, "its parents never ran (they wait on each other)")
        finally:
            for node in self.schedule.waiting():
                self._give_up(node, STOPPED_REASON, kind="stopped")
        return self.results()

    def _start(self) -> None:
        """Bring the scripts up to date; plan; follow what is queued, record the rest
        WAITING."""
        written = generate(self.pipeline, self.layout, slurm=self.slurm)
        self.written = {w.stage.key: w for w in written}
        record = load_record(self.record)
        refuse_if_driven(self.record, record)
        steps = make_plan(self.pipeline, written, self.layout, record, self.slurm, force=self.force)
        self.schedule = Schedule(
            Node(s.key, s.group, s.name, s.parents, s.dependency) for s in self.pipeline.stages
        )
        waiting: dict[str, dict[str, object]] = {}
        for step in steps:
            node = self.schedule.nodes[step.stage.key]
            if step.action == "queued":
                node.job_id, node.state = step.job_id, "PENDING"
                self._emit("queued", node, step.reason)
            elif step.action == "skip":
                node.state, node.reason = DONE, step.reason
                self._emit("done", node, f"skipped: {step.reason}")
            else:
                node.reason = step.reason
                self.options[node.key] = step.options()
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

    def _advance(self, stop: threading.Event) -> bool:
        """Give up on stages a failure blocks, and submit the stages that are ready, as
        many as the throttle leaves room for; whether anything changed."""
        blocked = self.schedule.block()
        if blocked:
            update_record(self.record, {n.key: self._blocked_entry(n) for n in blocked})
        for node in blocked:
            self._emit("skipped", node, f"not submitted: {node.reason}")
        ready = self.schedule.ready()
        room = self.throttle.room(len(self.schedule.in_flight()))
        submitted = 0
        for node in ready if room is None else ready[:room]:
            self.throttle.wait_turn()
            if stop.is_set():
                break
            try:
                self._submit(node)
            except SlurmError:
                if stop.is_set():  # the Ctrl-C that stops us reached sbatch too
                    break
                raise
            submitted += 1
        return bool(blocked) or submitted > 0

    def _submit(self, node: Node) -> None:
        written = self.written[node.key]
        stage = written.stage
        options = [*self.options.get(node.key, []), *stage.attempt_options(node.attempt)]
        if stage.retries:
            options.append(f"--export=ALL,SLEAP_RTC_ATTEMPT={node.attempt}")
        job_id = self.slurm.sbatch(
            written.script,
            singleton=stage.singleton,
            cwd=self.layout.scripts.parent,
            options=options,
        )
        node.job_id, node.state, node.reason = job_id, "PENDING", ""
        parents = [self.schedule.nodes[p].stage for p in node.parents]
        entry: dict[str, object] = {
            "job_id": job_id,
            "submitted_at": time.time(),
            "after": [],  # no SLURM dependency: the driver waited for the parents itself
            "chain": "poll",
            "parents": parents,
            "dependency": node.dependency,
            "inputs_key": written.key,
        }
        if stage.retries:
            entry["attempt"] = node.attempt
            entry["attempts"] = [*node.attempts, {"job_id": job_id, "options": options}]
        update_record(self.record, {node.key: entry})
        if node.attempt > 1:
            return
        done = f" ({', '.join(parents)} done)" if parents else ""
        self._emit("submitted", node, f"submitted job {job_id}{done}")

    def _retry(self, node: Node, stage: Stage) -> None:
        """Submit the next attempt of a stage whose job ended in one of its ``retry_on``."""
        node.attempts.append({"job_id": node.job_id, "state": node.state, "reason": node.reason})
        before = f"job {node.job_id} {node.state}"
        node.attempt += 1
        self._submit(node)
        more = stage.retry_resources.for_attempt(node.attempt)
        using = f" with {', '.join(f'{k} {v}' for k, v in more.items())}" if more else ""
        self._emit(
            "submitted",
            node,
            f"attempt {node.attempt} of {stage.attempts}: submitted job {node.job_id}{using} "
            f"after {before}",
        )

    def _arrays(self, nodes: list[Node]) -> set[str]:
        """The jobs of ``nodes`` that are array jobs (track over several files)."""
        return {str(n.job_id) for n in nodes if self.written[n.key].stage.files}

    def _poll(self) -> bool:
        """One state query for every job in flight; whether one of them ended."""
        flying = self.schedule.in_flight()
        details = self.slurm.job_details(
            [str(n.job_id) for n in flying], arrays=self._arrays(flying)
        )
        self.polls += 1
        states = {job_id: info.state for job_id, info in details.items()}
        ended = self.schedule.observe(states)
        for node in ended:
            if node.state == "COMPLETED":
                self._emit("completed", node, f"job {node.job_id} COMPLETED")
                continue
            stage = self.written[node.key].stage
            info = details.get(str(node.job_id))
            asked = {"mem": stage.resources.mem, "time": stage.resources.time}
            asked.update(stage.retry_resources.for_attempt(node.attempt))
            if info is not None:
                node.reason = explain(info, mem=asked["mem"], time=asked["time"])
            why = f" ({node.reason})" if node.reason else ""
            log = self.layout.log(stage, node.job_id)
            self._emit("failed", node, f"job {node.job_id} {node.state}{why}; log: {log}")
            if node.state in stage.retry_on and node.attempt < stage.attempts:
                self._retry(node, stage)
        return bool(ended)

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
            flying = self.schedule.in_flight()
            self.schedule.observe(self.slurm.job_states(ids, arrays=self._arrays(flying)))
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
        elif result.state == NOT_NEEDED:
            what = "not needed"
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
