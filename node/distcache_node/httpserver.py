"""The HTTP listener's plumbing: a bound on connections (a short 503 past it) and
slow-client protection, both at the connection level, below the request pipeline.

aiohttp has no public hook for these (choosing the protocol class its server builds, seeing
its connections), so this module uses its internals: RequestHandler's _request_count,
Server's _connections/_kwargs/_loop, AppRunner._make_server. That is why pyproject.toml pins
aiohttp to one exact version, and tests/unit/test_aiohttp_internals.py fails, naming the
piece, if an upgrade moves any of them."""

from __future__ import annotations

import asyncio
import time
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from distcache_node.config import NodeConfig
from distcache_node.http_errors import json_error


class GuardedRequestHandler(RequestHandler):
    """Notes when a request's first bytes arrive so a sweeper can drop clients that never
    finish sending their headers (slowloris). The request pipeline (pipeline.py) clears the
    mark while a request is being handled."""

    _distcache_pending_since: float | None = None
    _distcache_in_request: bool = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # The clock starts at connect: a client that sends nothing at all holds a slot too
        # (aiohttp alone would keep it for its 75 s keep-alive timeout).
        self._distcache_pending_since = time.monotonic()

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._distcache_pending_since = None
        elif self._distcache_pending_since is None and not self._distcache_in_request:
            self._distcache_pending_since = time.monotonic()

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Errors before the app sees a request, mostly the HTTP parser's (request line over
        8190 bytes, malformed headers or chunks): JSON like every other error, and logged as
        the client's mistake they are, not with a traceback (aiohttp's text/plain default)."""
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            code, text = "internal_error", "internal error; see the node's log"
        else:
            self.logger.debug("malformed request from %s: %s", request.remote, exc or message)
            code = "malformed_request"
            text = getattr(exc, "message", None) or message or HTTPStatus(status).phrase
        if request.writer.output_size > 0:
            raise ConnectionError("response already started: cannot send the error")
        response = json_error(status, code, str(text))
        response.force_close()
        return response


class _Refuse503(asyncio.Protocol):
    """Answer for connections over the limit: a short 503 rather than a silent hang."""

    BODY = b'{"error":"too_many_connections","message":"connection limit reached; retry"}'

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports do not subclass asyncio's.
        transport = cast(asyncio.Transport, transport)
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%b"
            % (len(self.BODY), self.BODY)
        )
        transport.close()


class _GuardedServer(Server):
    max_connections = 1024

    def __call__(self) -> Any:
        if len(self._connections) >= self.max_connections:
            return _Refuse503()
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)

    def sweep_slow_clients(self, read_timeout: float) -> int:
        deadline = time.monotonic() - read_timeout
        dropped = 0
        for handler, transport in list(self._connections.items()):
            since = getattr(handler, "_distcache_pending_since", None)
            if since is not None and since < deadline:
                transport.close()
                dropped += 1
        return dropped


class GuardedAppRunner(web.AppRunner):
    def __init__(self, app: web.Application, config: NodeConfig, **kwargs: Any) -> None:
        super().__init__(app, shutdown_timeout=config.shutdown_timeout, **kwargs)
        self._config = config

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        # Same object layout, extra behaviour: aiohttp offers no hook to choose the class.
        server.__class__ = _GuardedServer
        server.max_connections = self._config.max_connections  # type: ignore[attr-defined]
        return server

    def sweep_slow_clients(self) -> int:
        server = self.server
        if isinstance(server, _GuardedServer):
            return server.sweep_slow_clients(self._config.request_read_timeout)
        return 0
