"""Which stages a stage needs: the job file's ``needs``, checked and put in order.

Stages are named once in a job file and run once per dataset, or once for the
whole job (``scope: pipeline``). A stage that needs another of the same dataset
waits for that dataset's; one that needs a pipeline stage waits for the one there
is (fan-out); a pipeline stage that needs a dataset stage waits for every
dataset's (fan-in). This module checks the names (known, not the stage itself, no
cycles: each problem names the stage) and orders stages and their instances so a
parent always comes before the stages that need it, otherwise keeping the order
they were written in. Pure functions, no I/O.
"""

from __future__ import annotations

import graphlib
import heapq
from collections.abc import Mapping, Sequence

from sleap_rtc.jobs.problems import Problem, ProblemCode


def check_needs(stages: Sequence[str], needs: Mapping[str, Sequence[str]]) -> list[Problem]:
    """Problems with ``needs`` (stage → the stages it names): unknown names, a stage
    that needs itself, cycles."""
    problems = []
    known = set(stages)
    for stage, named in needs.items():
        for index, parent in enumerate(named):
            where = f"stages.{stage}.needs[{index}]"
            if parent == stage:
                message = f"stage {stage!r} can't need itself"
            elif parent not in known:
                message = (
                    f"stage {stage!r} needs {parent!r}, which this job doesn't run; "
                    f"its stages: {', '.join(stages)}"
                )
            else:
                continue
            problems.append(
                Problem(field=where, value=parent, code=ProblemCode.INVALID_VALUE, message=message)
            )
    graph = {s: [p for p in needs.get(s, ()) if p in known and p != s] for s in stages}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = list(exc.args[1])  # [a, b, ..., a]: each needs the one before it
        path = " → ".join(reversed(cycle))
        problems.append(
            Problem(
                field=f"stages.{cycle[0]}.needs",
                value=", ".join(needs.get(cycle[0], ())),
                code=ProblemCode.CONFLICT,
                message=f"stages need each other in a cycle ({path}); drop one of these needs",
            )
        )
    return problems


def stable_order(items: Sequence[str], parents: Mapping[str, Sequence[str]]) -> list[str]:
    """``items`` with every item after its parents, otherwise in their given order.

    ``parents`` must have no cycle (see :func:`check_needs`); parents not among
    ``items`` are ignored.
    """
    present = set(items)
    waiting = {item: {p for p in parents.get(item, ()) if p in present} for item in items}
    children: dict[str, list[str]] = {}
    for item, needed in waiting.items():
        for parent in needed:
            children.setdefault(parent, []).append(item)
    position = {item: index for index, item in enumerate(items)}
    ready = [position[i] for i, needed in waiting.items() if not needed]
    heapq.heapify(ready)
    ordered: list[str] = []
    while ready:
        item = items[heapq.heappop(ready)]
        ordered.append(item)
        for child in children.get(item, ()):
            waiting[child].discard(item)
            if not waiting[child]:
                heapq.heappush(ready, position[child])
    if len(ordered) != len(items):
        raise ValueError("stable_order: the parents form a cycle")
    return ordered
