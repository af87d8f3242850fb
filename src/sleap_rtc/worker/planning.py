"""From a spec to exactly what runs: the checks, the work folder, the sandbox, the argv.

The runner plans every job through a :class:`JobPlanner`, and a dry run
(``sleap-rtc local ... --dry-run``) asks the same planner for a :class:`Preview`; so
what a dry run shows is what a submitted job would run, from one path, and neither
needs the job store. A preview writes nothing: no work folder, no effective configs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import posixpath
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sleap_rtc.engine.backend import EngineJob
from sleap_rtc.engine.commands import build_track_job, build_train_job
from sleap_rtc.engine.sandbox import SandboxPolicy
from sleap_rtc.jobs.devices import Devices
from sleap_rtc.jobs.labels import VIDEO_ADVICE
from sleap_rtc.jobs.mounts import Mount, Mounts
from sleap_rtc.jobs.pathmaps import implied_map, normalized
from sleap_rtc.jobs.problems import JobRejected, Problem, ProblemCode
from sleap_rtc.jobs.specs import TrackSpec, TrainSpec
from sleap_rtc.jobs.validation import TrackPlan, TrainPlan, plan_track, plan_train
from sleap_rtc.worker.config import WorkerConfig, WorkerConfigError
from sleap_rtc.worker.files import FileService, FsError
from sleap_rtc.worker.uploads import user_folder_name

#: The job id a preview plans under (a real job gets its id when it is submitted).
PREVIEW_JOB_ID = "dry-run-0000"


@dataclass(frozen=True)
class Preview:
    """What a job would run, checked as it would be when submitted."""

    plan: TrainPlan | TrackPlan
    #: The steps (argv, effective config of each training step), confined as they would be.
    job: EngineJob
    #: The job's own folder (working directory, HOME, TMPDIR), named by a job id it
    #: does not have yet.
    work_dir: Path
    #: How the job would be confined, in one line (or why it could not start here).
    sandbox: str


#: Videos found by name for one missing video, named in its problem.
MAX_LIKELY_VIDEOS = 3


def with_likely_videos(problems: list[Problem], mounts: Mounts) -> list[Problem]:
    """``problems``, each missing video's message ending with the files of its name found
    in ``mounts`` and the path map that would use the first."""
    files = FileService(mounts, find_time_limit_s=2.0, find_max_results=MAX_LIKELY_VIDEOS * 4)
    out = []
    for problem in problems:
        name = posixpath.basename(normalized(problem.value or ""))
        if problem.code is not ProblemCode.VIDEO_NOT_FOUND or len(name) < 2:
            out.append(problem)
            continue
        try:
            found = files.find(name, limit=MAX_LIKELY_VIDEOS * 4)
        except FsError:
            out.append(problem)
            continue
        same = [m.entry.path for m in found.matches if m.rank == 0][:MAX_LIKELY_VIDEOS]
        if not same:
            out.append(problem)
            continue
        old, new = implied_map(problem.value or "", same[0])
        hint = (
            f"; found by name on this worker: {', '.join(same)} — to use "
            f"{'it' if len(same) == 1 else 'the first'}, add --path-map {shlex.quote(old)} "
            f"{shlex.quote(new)}"
        )
        message = problem.message.removesuffix(VIDEO_ADVICE) + hint
        out.append(problem.model_copy(update={"message": message}))
    return out


class JobPlanner:
    """One worker's rules for turning a spec into an engine job."""

    def __init__(
        self,
        config: WorkerConfig,
        work_root: Path | None = None,
        gpu_count: Callable[[], int | None] | None = None,
    ) -> None:
        """``gpu_count`` says how many GPUs jobs can use (by default detected the first
        time a job asks for ``--gpus``)."""
        self.config = config
        self._gpu_count = functools.cache(gpu_count or config.job_gpu_count)
        self.mounts: Mounts = config.build_mounts()
        self.models_dir = config.resolved_models_dir()
        self.uploads_dir = config.resolved_upload_dir().resolve()
        self.work_root = work_root or config.resolved_state_dir() / "work"

    def mounts_for(self, owner: str | None) -> Mounts:
        """The mounts one user's job may name: the upload folder is narrowed to theirs.

        Without a sandbox, checkpoints that are loaded (they may hold code) may not come
        from the upload folder at all.
        """
        narrowed: list[Mount] = []
        for mount in self.mounts:
            if mount.path == self.uploads_dir:
                own = mount.path / user_folder_name(owner or "local")
                mount = Mount(
                    path=own,
                    label=mount.label,
                    read_only=mount.read_only,
                    trusted=self.config.sandbox != "off",
                )
            narrowed.append(mount)
        return Mounts(narrowed)

    def plan(self, spec: TrainSpec | TrackSpec, owner: str | None) -> TrainPlan | TrackPlan:
        """Check ``spec`` for ``owner``; raises :class:`~sleap_rtc.jobs.problems.JobRejected`.

        A video that is not where its labels say is looked for by name in the owner's
        mounts; the rejection then names what was found and the ``--path-map`` that
        would use it.
        """
        mounts = self.mounts_for(owner)
        maps = self.config.worker_path_maps()
        try:
            if isinstance(spec, TrainSpec):
                gpus = self._gpu_count() if spec.gpus is not None else None
                devices = Devices(device=self.config.device, gpus=gpus)
                return plan_train(spec, mounts, maps, devices)
            return plan_track(spec, mounts, maps)
        except JobRejected as exc:
            raise JobRejected(with_likely_videos(exc.problems, mounts), exc.job_id) from None

    def _work_dir(self, job_id: str) -> Path:
        """The job's own folder (HOME, TMPDIR, effective configs), made by the worker."""
        self.work_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = self.work_root / job_id
        if folder.parent != self.work_root or not job_id.isalnum():
            raise RuntimeError(f"job id {job_id!r} can't name a work folder")
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

    def _policy(self, owner: str | None, work_dir: Path) -> SandboxPolicy | None:
        if self.config.sandbox == "off":
            return None
        read: list[str] = []
        write = [str(work_dir)]
        for mount in self.mounts_for(owner):
            (read if mount.read_only else write).append(str(mount.path))
        read += [os.path.realpath(p) for p in self.config.sandbox_read]
        return SandboxPolicy(read=tuple(read), write=tuple(write))

    def _steps(
        self,
        job_id: str,
        plan: TrainPlan | TrackPlan,
        work_dir: Path | None,
        reserved: set[str] | None,
    ) -> EngineJob:
        command = self.config.sleap_nn_command
        if isinstance(plan, TrainPlan):
            return build_train_job(
                plan,
                job_id=job_id,
                models_dir=self.models_dir,
                work_dir=work_dir,
                sleap_nn=command,
                device=self.config.device,
                reserved=reserved,
                stop_early=self.config.stop_early,
            )
        return build_track_job(
            plan, job_id=job_id, sleap_nn=command, device=self.config.device, work_dir=work_dir
        )

    def engine_job(
        self, job_id: str, plan: TrainPlan | TrackPlan, owner: str | None, reserved: set[str]
    ) -> EngineJob:
        """The job to hand a backend: its work folder made, its effective configs written.

        ``reserved`` holds the run names other live jobs are about to create; this job's
        are added to it.
        """
        work_dir = self._work_dir(job_id)
        if isinstance(plan, TrainPlan):
            self.models_dir.mkdir(parents=True, exist_ok=True)
        return dataclasses.replace(
            self._steps(job_id, plan, work_dir, reserved),
            cwd=work_dir,
            sandbox=self._policy(owner, work_dir),
            env_allow=tuple(self.config.job_env),
        )

    def preview(
        self, spec: TrainSpec | TrackSpec, owner: str | None = None, *, sandbox: str | None = None
    ) -> Preview:
        """What ``spec`` would run for ``owner``, checked, with nothing written.

        Raises :class:`~sleap_rtc.jobs.problems.JobRejected` as a submit would.
        ``sandbox`` is the runner's own line on confinement; without it the line says
        how a one-person worker here (``sleap-rtc local``) would confine the job.
        """
        plan = self.plan(spec, owner)
        if sandbox is None:
            try:
                sandbox = self.config.check_sandbox(self.mounts, shared=False)
            except WorkerConfigError as exc:
                sandbox = f"the job could not start here: {exc}"
        work_dir = self.work_root / "<job id>"
        job = dataclasses.replace(
            self._steps(PREVIEW_JOB_ID, plan, None, None),
            cwd=work_dir,
            sandbox=self._policy(owner, work_dir),
            env_allow=tuple(self.config.job_env),
        )
        return Preview(plan=plan, job=job, work_dir=work_dir, sandbox=sandbox)
