"""The node's application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from distcache_node.appkeys import (
    API_KEYS,
    BACKEND,
    CLUSTER,
    CONFIG,
    METRICS,
    PEER_KEYS,
    RATE_LIMITER,
    READY,
    STORE,
    TLS,
)
from distcache_node.backend import LocalBackend
from distcache_node.config import NodeConfig
from distcache_node.keyfile import KeySet, KeySetCollector
from distcache_node.metrics import NodeMetrics
from distcache_node.pipeline import add_fallback_routes
from distcache_node.ratelimit import RateLimiter
from distcache_node.routes import setup_routes
from distcache_node.store import Store
from distcache_node.tlsreload import CertReloader

log = logging.getLogger("distcache.node")


async def active_expiry(app: web.Application) -> AsyncIterator[None]:
    """Frees expired keys nobody reads, a bounded batch per tick so requests keep flowing."""
    store, interval = app[STORE], app[CONFIG].active_expiry_interval

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            store.expire_due()

    task = asyncio.create_task(loop(), name="active-expiry")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def key_reload(app: web.Application) -> AsyncIterator[None]:
    """A rotated API key or cluster secret (a mounted Secret updated in place) is taken in
    without a restart; keys it drops stay accepted for the grace period (keyfile.py)."""
    tasks = [asyncio.create_task(keys.run(), name=f"{keys.name}-reload")
             for keys in (app[API_KEYS], app[PEER_KEYS]) if keys.path]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def tls_reload(app: web.Application) -> AsyncIterator[None]:
    """A rotated certificate (a Secret updated in place) is taken in without a restart, by
    every SSL context added to app[TLS] (the server's in serve.py, the peers' in
    cluster/setup.py)."""
    reloader = app[TLS]
    assert reloader is not None
    task = asyncio.create_task(reloader.run(), name="tls-reload")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(config: NodeConfig) -> web.Application:
    app = web.Application(client_max_size=config.body_limit)
    clustered = bool(config.ring_file or config.advertise_url)
    store = Store(config.max_memory, track_versions=clustered)
    app[CONFIG] = config
    app[STORE] = store
    app[METRICS] = NodeMetrics(store)
    app[READY] = {"ready": True, "reason": "single node"}
    app[CLUSTER] = None
    app[BACKEND] = LocalBackend(store)
    app[RATE_LIMITER] = None
    app[TLS] = (CertReloader(config.tls_cert, config.tls_key, config.tls_ca)
                if config.tls_enabled else None)
    if app[TLS] is not None:
        app.cleanup_ctx.append(tls_reload)
    grace = config.api_key_grace_seconds
    app[API_KEYS] = KeySet("api_key", (config.api_key,), config.api_key_file, grace)
    app[PEER_KEYS] = KeySet("cluster_secret", (config.cluster_secret,),
                            config.cluster_secret_file, grace)
    if config.api_key_file or config.cluster_secret_file:
        app.cleanup_ctx.append(key_reload)
    app[METRICS].registry.register(KeySetCollector([app[API_KEYS], app[PEER_KEYS]]))
    if clustered:
        from distcache_node.cluster.setup import setup_cluster

        setup_cluster(app)
    if config.rate_limit > 0:
        # Built on the app's backend, so on a cluster the counters are cluster-wide.
        app[RATE_LIMITER] = RateLimiter(app[BACKEND], config.rate_limit, config.rate_limit_burst)
    setup_routes(app)
    add_fallback_routes(app)
    app.cleanup_ctx.append(active_expiry)
    if not config.has_api_key:
        log.warning("no API key configured: the data API is open to anyone who can reach it")
    return app
