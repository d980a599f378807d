"""The HTTP edge's one error shape, {"error": <stable code>, "message": <what to fix>}, and
the one table from the service layer's refusals (errors.py) to HTTP statuses and headers."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

from distcache_node.errors import (
    CacheError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    TimedOut,
    TooLarge,
    Unauthenticated,
    Unavailable,
)

# Looked up along the class's MRO, so a subclass of a kind answers as that kind.
STATUS: dict[type[CacheError], int] = {
    InvalidInput: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    TimedOut: 408,
    Conflict: 409,
    TooLarge: 413,
    Unavailable: 503,
}
# RFC 9110: a 401 names the scheme that would be accepted.
_CHALLENGE = {"WWW-Authenticate": 'ApiKey header="X-API-Key"'}


def json_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = orjson.dumps({"error": code, "message": message})
    return web.Response(
        body=body, status=status, content_type="application/json", headers=headers
    )


class HttpError(CacheError):
    """A refusal only HTTP has (a wrong method, an unknown path, the rate limit with its
    X-RateLimit headers): raised and answered inside the HTTP edge, with its own status."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(code, message)
        self.status = status
        self.headers = headers


def error_response(exc: CacheError) -> web.Response:
    """The HTTP answer to a refusal, whichever layer raised it."""
    if isinstance(exc, HttpError):
        return json_error(exc.status, exc.code, exc.message, exc.headers)
    headers: Mapping[str, str] | None = None
    if isinstance(exc, Unavailable):
        headers = {"Retry-After": str(exc.retry_after)}
    elif isinstance(exc, Unauthenticated):
        headers = _CHALLENGE
    return json_error(status_of(exc), exc.code, exc.message, headers)


def status_of(exc: CacheError) -> int:
    for kind in type(exc).__mro__:
        status = STATUS.get(kind)
        if status is not None:
            return status
    return 500  # a bare CacheError: a kind added without a row here is a bug, not the client's
