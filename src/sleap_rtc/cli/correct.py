"""Interactive path correction: after a rejection for a bad path, find the right one.

For each path the worker rejected, the user is asked whether to browse; files
named like the bad one (for a model: complete model folders) are offered first,
then the browser opens at the nearest folder that exists inside a mount, filtered
for the kind of file the field takes (for a model, folders are marked as models or
incomplete runs, and only a complete model can be picked). A video the labels
name where the worker has none is picked the same way, and becomes a path map
(``--path-map OLD NEW``) on the job, printed to reuse.
The corrected spec is returned for resubmission.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Sequence

from rich.console import Console
from rich.filesize import decimal

from sleap_rtc.cli.ask import choose, confirm
from sleap_rtc.cli.browser import browse
from sleap_rtc.cli.render import safe
from sleap_rtc.client.browse import BrowserModel, SessionSource
from sleap_rtc.client.jobs import WorkerError, WorkerSession
from sleap_rtc.client.pathfix import (
    PathTarget,
    apply_path,
    current_value,
    likely_models,
    nearest_folder,
    path_problems,
    start_candidates,
    target_for,
)
from sleap_rtc.client.remap import (
    covered,
    labels_folder,
    stored_path,
    video_filter,
    video_name,
    video_problems,
    with_video,
)
from sleap_rtc.jobs.paths import MODEL_CONFIG_NAMES, MODEL_WEIGHT_NAMES
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.protocol import jobs as p

#: Files offered by name before the browser opens.
MAX_CANDIDATES = 5


async def correct_paths(
    session: WorkerSession,
    spec: TrainSpec | TrackSpec,
    errors: Sequence[p.ProblemView],
    console: Console,
) -> TrainSpec | TrackSpec | None:
    """Walk the user through each rejected path; the corrected spec, or None to give up."""
    videos = video_problems(errors)
    fixable = [e for e in path_problems(errors) if e not in videos]
    targets = [(e, target_for(e.field, spec)) for e in fixable]
    handled = {e.field for e in fixable} | {e.field for e in videos}
    others = [e for e in errors if e.field not in handled]
    if not (fixable or videos) or others or any(t is None for _, t in targets):
        if fixable:
            console.print(
                "Fix the problems above on the command line and submit again; the browser "
                "can only correct paths.",
                highlight=False,
            )
        return None
    source = SessionSource(session)
    changes: list[tuple[str, str, str]] = []
    for error, target in targets:
        assert target is not None
        bad = error.path or current_value(spec, target) or ""
        console.print()
        console.print(
            f"Path error detected for '{safe(error.field)}': {safe(bad)}",
            highlight=False,
            soft_wrap=True,
        )
        agreed = await confirm(
            "Would you like to browse the worker filesystem to find the correct path?"
        )
        if not agreed:
            return None
        chosen = await _offer_candidates(session, bad, target, console)
        if chosen is None:
            start = await nearest_folder(source, start_candidates(bad, spec))
            model = BrowserModel(
                source, want=target.want, filter_text=target.filter, models=target.model
            )
            await model.start(start)
            chosen = await browse(model, f"Select correct path for '{error.field}':")
        if chosen is None:
            console.print("cancelled; the job was not submitted")
            return None
        spec = apply_path(spec, target, chosen)
        changes.append((error.field, bad, current_value(spec, target) or chosen))
    maps: list[tuple[str, str]] = []
    for error in videos:
        if covered(error, maps):
            continue  # the map picked for a neighbour finds it too
        chosen = await _pick_video(session, source, spec, error, console)
        if chosen is None:
            console.print("cancelled; the job was not submitted")
            return None
        spec, pair = with_video(spec, error, chosen)
        maps.append(pair)
        changes.append((error.field, stored_path(error), chosen))
    for field, old, new in changes:
        console.print(
            f"  {safe(field)}: {safe(old)} → {safe(new)}", highlight=False, soft_wrap=True
        )
    if maps:
        flags = " ".join(f"--path-map {shlex.quote(old)} {shlex.quote(new)}" for old, new in maps)
        console.print(
            f"To reuse (next time, or for other labels made there): {safe(flags)}",
            highlight=False,
            soft_wrap=True,
        )
    return spec


async def _pick_video(
    session: WorkerSession,
    source: SessionSource,
    spec: TrainSpec | TrackSpec,
    error: p.ProblemView,
    console: Console,
) -> str | None:
    """The file on the worker the user picks for a missing video (None: gave up)."""
    console.print()
    console.print(
        f"Video not found for '{safe(error.field)}': {safe(stored_path(error))}",
        highlight=False,
        soft_wrap=True,
    )
    if not await confirm("Would you like to browse the worker filesystem to find the video?"):
        return None
    pattern = video_filter(error)
    target = PathTarget(error.field, "path_map", None, "file", pattern)
    chosen = await _offer_candidates(session, stored_path(error), target, console)
    if chosen is not None:
        return chosen
    start = labels_folder(spec)
    model = BrowserModel(source, want="file", filter_text=pattern)
    await model.start(await nearest_folder(source, [start]) if start else None)
    return await browse(model, f"Select the video {video_name(error)} for '{error.field}':")


async def _offer_candidates(
    session: WorkerSession, bad: str, target: PathTarget, console: Console
) -> str | None:
    """Files (or complete model folders) on the worker named like the bad one; the one
    the user picks, if any."""
    name = posixpath.basename(bad.rstrip("/"))
    if target.model:
        if name in MODEL_CONFIG_NAMES + MODEL_WEIGHT_NAMES:  # .../model/best.ckpt
            name = posixpath.basename(posixpath.dirname(bad.rstrip("/")))
        folders = await likely_models(SessionSource(session), name, limit=MAX_CANDIDATES)
        offered = [(folder, "") for folder in folders]
    elif target.want == "file":
        try:
            found = await session.fs_find(name, limit=MAX_CANDIDATES * 4)
        except WorkerError:
            return None  # a name too short to search for: browse instead
        wanted_ext = target.filter.lstrip("*") if target.filter.startswith("*.") else ""
        offered = [
            (m.entry.path, f"  ({decimal(m.entry.size)})" if m.entry.size is not None else "")
            for m in found.matches
            if m.rank <= 2 and m.entry.path and m.entry.path.lower().endswith(wanted_ext)
        ][:MAX_CANDIDATES]
    else:
        return None
    if not offered:
        return None
    what = "models" if target.model else "matches"
    console.print(
        f"Likely {what} for '{safe(name)}' on the worker:", highlight=False, soft_wrap=True
    )
    for number, (path, size) in enumerate(offered, 1):
        console.print(f"  {number}. {safe(path)}{size}", highlight=False, soft_wrap=True)
    choices = [str(n) for n in range(1, len(offered) + 1)] + ["b"]
    answer = await choose(f"Use one [1-{len(offered)}], or b to browse", choices, default="b")
    if answer == "b":
        return None
    return offered[int(answer) - 1][0]
