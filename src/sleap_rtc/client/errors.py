"""Errors the client API raises; every message says what to do next."""

from __future__ import annotations

from sleap_rtc.protocol.jobs import ProblemView


class ClientError(Exception):
    """Base class; ``str(error)`` is a sentence fit for a user."""


class ServerUnreachable(ClientError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            f"can't reach the sleap-rtc server at {url}: {reason}. "
            "Check the URL (--server, SLEAP_RTC_SERVER or config.toml) and that it is running."
        )
        self.url = url


class NotLoggedIn(ClientError):
    def __init__(self, url: str, detail: str = "") -> None:
        why = f" ({detail})" if detail else ""
        super().__init__(f"not logged in to {url}{why}; run `sleap-rtc login --server {url}`")
        self.url = url


class ServerError(ClientError):
    """The server refused a request: HTTP status, machine-readable code and its message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class NoServerConfigured(ClientError):
    def __init__(self) -> None:
        super().__init__(
            "no server configured: pass --server URL, set SLEAP_RTC_SERVER, "
            'or put server = "https://..." in config.toml '
            "(or log in once with `sleap-rtc login --server URL`)"
        )


class NoSuchJob(ClientError):
    """No job of the room has this id (or id prefix): not in the index, nor on a worker."""


class WorkerError(ClientError):
    """The worker answered a request with an ERROR (``code`` is machine-readable)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SessionClosed(ClientError):
    """The channel to the worker is gone; the jobs on it go on without this client."""


class JobRejectedError(ClientError):
    """The worker refused the job; ``errors`` lists every problem."""

    def __init__(self, job_id: str | None, errors: list[ProblemView]) -> None:
        self.job_id = job_id
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
