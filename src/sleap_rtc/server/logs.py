"""The server's log lines stay one line each, whatever text peers send.

Names, codes and reasons in log records come from users and workers. A filter
on the server's logger escapes control characters and line breaks in every
text argument, so no peer can write a line that looks like the server's own.
"""

from __future__ import annotations

import logging
from typing import Any

from sleap_rtc.protocol.signaling import loggable


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return loggable(value)
    if isinstance(value, BaseException):
        return loggable(str(value))
    return value


class PeerTextFilter(logging.Filter):
    """Escapes control characters in the text arguments of each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_clean(a) for a in args)
        elif isinstance(args, dict):
            record.args = {k: _clean(v) for k, v in args.items()}
        if isinstance(record.msg, str):
            record.msg = loggable(record.msg) if not args else record.msg
        return True


def install(logger: logging.Logger) -> None:
    """Add the filter to ``logger`` once."""
    if not any(isinstance(f, PeerTextFilter) for f in logger.filters):
        logger.addFilter(PeerTextFilter())


#: The server's logger, with the filter on: every server module logs through it.
log = logging.getLogger("sleap_rtc.server")
install(log)
