"""The script lines of a stage's retries under ``--chain``: each attempt checks how the
one before it ended, and one small job stands for all of them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sleap_rtc.pipeline.sbatch import Layout
    from sleap_rtc.pipeline.spec import Stage


#: The exit status of an attempt that was not tried, because the one before it ended in a
#: way its stage doesn't retry; the attempts after it pass it on.
NOT_RETRIED = 75


def attempt_lines(stage: Stage) -> list[str]:
    """With ``--chain``, attempt N waits for attempt N-1 to fail (afternotok) and goes only
    if it ended in one of the stage's ``retry_on``."""
    ends = "|".join(f"{end}*" for end in stage.retry_on)
    return [
        f"# Retries ({stage.retries}): an attempt after one that ended otherwise than "
        f"{', '.join(stage.retry_on)} is not tried.",
        'if [ -n "${SLEAP_RTC_PREVIOUS_JOB:-}" ]; then',
        '    before=$(sacct -n -X -P -o State,ExitCode -j "$SLEAP_RTC_PREVIOUS_JOB" | head -n 1)',
        '    case "${before%%|*}" in',
        f'        {ends}) echo "attempt ${{SLEAP_RTC_ATTEMPT:-?}}: job $SLEAP_RTC_PREVIOUS_JOB '
        'ended ${before%%|*}; trying again" >&2 ;;',
        f'        *) [ "${{before#*|}}" = "{NOT_RETRIED}:0" ] || echo "attempt '
        "${SLEAP_RTC_ATTEMPT:-?}: job $SLEAP_RTC_PREVIOUS_JOB ended ${before%%|*}, which "
        'this stage does not retry" >&2',
        f"           exit {NOT_RETRIED} ;;",
        "    esac",
        "fi",
        "",
    ]


def gate_script(stage: Stage, layout: Layout) -> str:
    """The job that stands for all attempts of a stage with retries under ``--chain``:
    it runs once every attempt ended (afterany) and succeeds when one of them completed,
    so the stages that need this one wait for it with afterok."""
    resources = stage.resources
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={stage.slurm_name}.attempts",
        f"#SBATCH --output={layout.log_folder(stage) / stage.name}-attempts-%j.out",
        f"#SBATCH --chdir={layout.scripts.parent}",
        "#SBATCH --time=5",
        "#SBATCH --mem=100M",
        "#SBATCH --cpus-per-task=1",
    ]
    for name in ("partition", "account", "qos"):
        value = getattr(resources, name)
        if value is not None:
            lines.append(f"#SBATCH --{name}={value}")
    lines += [
        f"# Written by `sleap-rtc pipeline` for {stage.key}; written again each run.",
        "set -euo pipefail",
        "# The attempts' job ids, ':'-separated (sbatch --export splits values at ',').",
        'jobs=$(echo "$SLEAP_RTC_ATTEMPTS" | tr ":" ",")',
        'wanted=$(echo "$SLEAP_RTC_ATTEMPTS" | tr ":" "\\n" | wc -l)',
        "for _ in $(seq 60); do  # accounting may lag a moment behind the end of a job",
        '    states=$(sacct -n -X -P -o JobID,State -j "$jobs")',
        '    ended=$(echo "$states" | grep -cvE "\\|(PENDING|RUNNING|REQUEUED|SUSPENDED)" || true)',
        '    [ "$ended" -ge "$wanted" ] && break',
        "    sleep 1",
        "done",
        'echo "attempts of ' + stage.key + ':"; echo "$states"',
        'echo "$states" | grep -q "|COMPLETED"',
    ]
    return "\n".join(lines) + "\n"
