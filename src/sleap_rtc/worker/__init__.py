"""The worker: configuration, the durable job store, and the job runner.

The worker is the only part of sleap-rtc that touches its machine's files, and
only inside its mounts; every job is validated here before anything runs.
"""

from sleap_rtc.worker.config import WorkerConfig, load_worker_config
from sleap_rtc.worker.runner import JobRunner
from sleap_rtc.worker.store import JobRecord, JobStore

__all__ = ["JobRecord", "JobRunner", "JobStore", "WorkerConfig", "load_worker_config"]
