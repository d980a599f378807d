"""Running the node: the HTTP app and the RESP listener on their sockets over the same
service objects, TLS, a sweep of slow clients and a graceful stop on SIGTERM. The process
above both protocol edges (httpserver.py holds the HTTP listener's own plumbing)."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl

from aiohttp import web

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
from distcache_node.httpserver import GuardedAppRunner
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
