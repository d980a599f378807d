"""Running the app on a socket: TLS, a bound on connections, slow-client protection and a
graceful stop on SIGTERM.

aiohttp has no public hook for the last two (choosing the protocol class its server builds,
seeing its connections), so this module uses its internals: RequestHandler's
_request_count, Server's _connections/_kwargs/_loop, AppRunner._make_server. That is why
pyproject.toml pins aiohttp to one exact version, and tests/unit/test_aiohttp_internals.py
fails, naming the piece, if an upgrade moves any of them."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import time
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from distcache_node.appkeys import (
    API_KEYS,
    BACKEND,
    CLUSTER,
    METRICS,
    RATE_LIMITER,
    STORE,
    TLS,
)
from distcache_node.config import NodeConfig
from distcache_node.http_errors import json_error
from distcache_node.resp.server import RespServer
from distcache_node.resp.service import Service

log = logging.getLogger("distcache.node")


def server_ssl_context(config: NodeConfig) -> ssl.SSLContext | None:
    if not config.tls_enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert, config.tls_key)
    if config.tls_ca:
        context.load_verify_locations(config.tls_ca)
        # Optional, not required: data clients may come with an API key only; the cluster
        # layer admits internal calls only with a verified peer certificate.
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


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


async def _sweep_forever(runner: GuardedAppRunner, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        dropped = runner.sweep_slow_clients()
        if dropped:
            log.warning("closed %d connection(s) that sent no complete request in time", dropped)


async def drain(app: web.Application, config: NodeConfig) -> None:
    """A clustered node's first step out: marked stopping (readiness 503, peers told to route
    around it, a header on every answer for clients), it keeps serving for
    `--shutdown-drain` seconds, while endpoints drop the pod and clients move off, before
    its port closes. A second SIGTERM does not cut this short; the grace period bounds it."""
    cluster = app[CLUSTER]
    if cluster is None or config.shutdown_drain <= 0:
        return
    log.info("stopping: draining for %.1f s (not ready, peers told)", config.shutdown_drain)
    try:
        await asyncio.wait_for(cluster.begin_stopping(), config.shutdown_drain)
    except TimeoutError:
        log.warning("stopping: not every peer heard in time")
    await asyncio.sleep(config.shutdown_drain)


async def start_resp(
    app: web.Application, config: NodeConfig, ssl_context: ssl.SSLContext | None
) -> RespServer:
    """The Redis protocol listener (--resp-port), over the objects the HTTP edge serves
    with: the same backend, API keys, rate limiter, metrics and SSL context."""
    service = Service(config, app[BACKEND], app[STORE], app[METRICS], app[API_KEYS],
                      app[RATE_LIMITER], app[CLUSTER])
    server = RespServer(service, ssl_context)
    await server.start(config.host, config.resp_port)
    return server


async def serve(
    app: web.Application, config: NodeConfig, stop: asyncio.Event | None = None
) -> None:
    """Serve until SIGTERM/SIGINT (or `stop` is set), then finish in-flight requests."""
    stop = stop or asyncio.Event()
    runner = GuardedAppRunner(app, config, access_log=log if config.access_log else None,
                              handle_signals=False)
    await runner.setup()
    ssl_context = server_ssl_context(config)
    site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_context,
                       reuse_address=True, backlog=1024)
    await site.start()
    resp = await start_resp(app, config, ssl_context) if config.resp_port else None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sweeper = asyncio.create_task(
        _sweep_forever(runner, max(0.2, config.request_read_timeout / 4)), name="slow-clients"
    )
    reloader = app.get(TLS)
    if ssl_context is not None and reloader is not None:
        # A rotated certificate (a Secret updated in place) is served without a restart.
        reloader.add(ssl_context)
    log.info("distcache node %s listening on %s://%s:%d", config.node_id or "-",
             config.scheme, config.host, config.port)
    try:
        await stop.wait()
        await drain(app, config)
        log.info("shutting down: no new connections, finishing in-flight requests")
    finally:
        sweeper.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if resp is not None:
            await resp.stop(config.shutdown_timeout)
        await runner.cleanup()
    log.info("stopped")
