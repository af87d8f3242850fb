"""Reading SLURM's answers about how jobs ended, and saying it in words (pure logic;
the real cluster's answers are checked in tests/e2e/test_pipeline_dag.py)."""

from __future__ import annotations

import getpass
import os

import pytest

from sleap_rtc.engine.backends.slurm.tools import (
    JobInfo,
    dependency_option,
    explain,
    parse_sacct_details,
    parse_squeue_details,
)

SACCT = "\n".join(
    [
        "101|COMPLETED|0:0|None|00:00:03|00:05:00|100M",
        "102|FAILED|3:0|NonZeroExitCode|00:00:01|00:05:00|100M",
        f"103|CANCELLED by {os.getuid()}|0:0|None|00:00:00|00:05:00|100M",
        "104|CANCELLED|0:0|DependencyNeverSatisfied|00:00:00|00:05:00|100M",
        "105|FAILED|0:9|None|00:00:02|00:05:00|4G",
        "106_2|OUT_OF_MEMORY|0:125|OutOfMemory|00:01:00|01:00:00|4G",
        "999|COMPLETED|0:0|None|00:00:01|00:05:00|1G",
    ]
)


def test_sacct_lines_become_job_infos_for_the_jobs_asked_about() -> None:
    wanted = ["101", "102", "103", "104", "105", "106_2"]
    found = parse_sacct_details(SACCT, wanted)
    assert set(found) == set(wanted)  # 999 was not asked about
    assert found["102"].exit_code == 3 and found["102"].signal == 0
    assert found["103"].state == "CANCELLED" and found["103"].cancelled_by == getpass.getuser()
    assert found["104"].reason == "DependencyNeverSatisfied" and found["101"].reason == ""
    assert found["105"].signal == 9 and found["106_2"].req_mem == "4G"


def test_squeue_lines_map_short_states() -> None:
    found = parse_squeue_details("7|CD|None|0:03|5:00\n8|PENDING|Dependency|0:00|5:00", ["7", "8"])
    assert found["7"].state == "COMPLETED" and found["8"].reason == "Dependency"


@pytest.mark.parametrize(
    ("info", "said"),
    [
        (JobInfo("1", "COMPLETED"), ""),
        (JobInfo("1", "RUNNING"), ""),
        (JobInfo("1", "FAILED", exit_code=3, signal=0), "exit code 3"),
        (JobInfo("1", "FAILED", exit_code=0, signal=9), "killed by signal 9 (SIGKILL)"),
        (JobInfo("1", "CANCELLED", cancelled_by="alice"), "cancelled by alice"),
        (
            JobInfo("1", "CANCELLED", reason="DependencyNeverSatisfied"),
            "a job it depends on did not end as it needs (dependency never satisfied)",
        ),
        (JobInfo("1", "NODE_FAIL"), "its node failed; running it again may succeed"),
    ],
)
def test_explain_says_why_in_words(info: JobInfo, said: str) -> None:
    assert explain(info) == said


def test_explain_names_the_resource_to_raise() -> None:
    oom = JobInfo("1", "OUT_OF_MEMORY", req_mem="4G")
    assert explain(oom) == "ran out of memory (mem 4G); raise the stage's slurm.mem"
    assert "(mem 8G)" in explain(oom, mem="8G")
    late = JobInfo("1", "TIMEOUT", elapsed="00:30:03", time_limit="00:30:00")
    assert explain(late) == (
        "hit its time limit (00:30:00) after 00:30:03; raise the stage's slurm.time"
    )
    long_reason = JobInfo("1", "FAILED", reason="x" * 1000)
    assert len(explain(long_reason)) <= 200


def test_dependency_options_for_each_type() -> None:
    assert dependency_option([]) is None
    assert dependency_option(["1", "2"]) == "afterok:1:2"
    assert dependency_option(["1", "2"], "afterany") == "afterany:1:2"
    # afternotok: when any one of them failed, as a cleanup stage wants.
    assert dependency_option(["1", "2"], "afternotok") == "afternotok:1?afternotok:2"
    assert dependency_option(["1"], "afterok", singleton=True) == "afterok:1,singleton"
    assert dependency_option([], singleton=True) == "singleton"
    with pytest.raises(ValueError, match="not one of afterok, afterany, afternotok"):
        dependency_option(["1"], "after")
    with pytest.raises(ValueError, match="singleton"):
        dependency_option(["1", "2"], "afternotok", singleton=True)
