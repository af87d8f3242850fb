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

from typing import Final

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_REJECTED: Final = 2
EXIT_REFUSED: Final = 3
EXIT_INTERRUPTED: Final = 130
