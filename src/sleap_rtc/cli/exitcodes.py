"""The exit codes every ``sleap-rtc`` command uses, so scripts can tell outcomes apart.

==== =====================================================================
0    the job (or command) completed
1    the job failed, or the command could not do what was asked
2    the input was rejected before anything ran (invalid options, a job the
     worker refused, an unknown room or worker)
3    a worker refused to start (its key was revoked or its id is taken):
     retrying would not help
130  interrupted (Ctrl-C); a job cancelled on the way out ends here too
==== =====================================================================
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Final, NoReturn

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_REJECTED: Final = 2
EXIT_REFUSED: Final = 3
EXIT_INTERRUPTED: Final = 130


def exit_code_for(exc: BaseException) -> int:
    """The exit code a client error means: :data:`EXIT_REJECTED` for a worker that
    couldn't be chosen, a room, worker, job or invite the server doesn't know (or a job
    id prefix that fits several), an invalid request or a rejected job; else
    :data:`EXIT_FAILED`."""
    from sleap_rtc.client.errors import JobRejectedError, NoSuchJob, ServerError
    from sleap_rtc.client.select import Ambiguous, NoWorker

    if isinstance(exc, JobRejectedError | NoWorker | Ambiguous | NoSuchJob):
        return EXIT_REJECTED
    if isinstance(exc, ServerError) and exc.code == "AMBIGUOUS_JOB":
        return EXIT_REJECTED
    if isinstance(exc, ServerError) and exc.status in (400, 404, 422):
        # The server's own refusal; a page from something else at that address is not.
        return EXIT_REJECTED if exc.code != "NOT_SLEAP_RTC" else EXIT_FAILED
    return EXIT_FAILED


def run_client(action: Callable[[], Coroutine[Any, Any, int]]) -> NoReturn:
    """Run a command's client coroutine and exit with its code.

    Client errors are printed as one line on stderr and exit with
    :func:`exit_code_for`'s code; Ctrl-C exits :data:`EXIT_INTERRUPTED`.
    """
    from sleap_rtc.cli.render import make_console, safe
    from sleap_rtc.client.config import ConfigError
    from sleap_rtc.client.errors import ClientError
    from sleap_rtc.client.jobs import JobRejectedError

    code: int
    try:
        code = asyncio.run(action())
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except JobRejectedError:
        code = EXIT_REJECTED
    except (ClientError, ConfigError) as exc:
        make_console(stderr=True).print(
            f"[red]Error:[/red] {safe(exc)}", highlight=False, soft_wrap=True
        )
        code = exit_code_for(exc)
    sys.exit(code)
