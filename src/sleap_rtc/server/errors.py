"""Errors the API returns: an HTTP status, a machine-readable code and a sentence."""

from __future__ import annotations


class ApiError(Exception):
    """Turned into an ``ErrorResponse`` body with ``status``; ``headers`` go on the response."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def not_found(what: str, name: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"{what} {name!r} not found (or you are not a member)")


def forbidden(message: str) -> ApiError:
    return ApiError(403, "FORBIDDEN", message)


def conflict(message: str) -> ApiError:
    return ApiError(409, "CONFLICT", message)


def invalid(message: str) -> ApiError:
    return ApiError(422, "INVALID", message)
