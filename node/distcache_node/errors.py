"""One error shape everywhere: {"error": <stable code>, "message": <what to fix>}."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web


def json_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = orjson.dumps({"error": code, "message": message})
    return web.Response(
        body=body, status=status, content_type="application/json", headers=headers
    )


class ApiError(Exception):
    """Raised by handlers for a client's mistake or a refused request; becomes a JSON error."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    def response(self) -> web.Response:
        return json_error(self.status, self.code, self.message, self.headers)


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)
