"""Spec-driven pipelines on SLURM: job files, SBATCH scripts, chaining, manifests.

from sleap_rtc.pipeline import PipelineRun, monitor_jobs

run = PipelineRun("examples/jobs/topdown.json", output_dir="runs")
run.submit(chain=True)
print(run.monitor(until_done=True, interval=5))

# Or stay and submit each stage once its parents completed (no SLURM dependencies):
for stage in run.drive(interval=30):
    print(stage.dataset, stage.stage, stage.state, stage.reason)
"""

from sleap_rtc.engine.backends.slurm.tools import (
    FINAL_STATES,
    SlurmClient,
    SlurmError,
    monitor_jobs,
)
from sleap_rtc.pipeline.run import PipelineRun

__all__ = ["FINAL_STATES", "PipelineRun", "SlurmClient", "SlurmError", "monitor_jobs"]
