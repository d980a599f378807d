"""Wiring a clustered node into the aiohttp app (the HTTP edge of the cluster layer): the
peer credential check for /cluster/*, the networking and background tasks in cleanup_ctx,
the router as the app's backend, and the cluster routes and metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
from aiohttp import web

from distcache_node.appkeys import (
    API_KEYS,
    BACKEND,
    CLUSTER,
    CONFIG,
    METRICS,
    PEER_CHECK,
    PEER_KEYS,
    READY,
    STORE,
    TLS,
)
from distcache_node.cluster import loops
from distcache_node.cluster.metrics import ClusterCollector
from distcache_node.cluster.node import ClusterNode
from distcache_node.cluster.peerident import PeerNames
from distcache_node.cluster.peers import client_ssl_context, make_session
from distcache_node.cluster.ring import RingDoc, RingError
from distcache_node.cluster.router import ClusterRouter
from distcache_node.cluster.routes import setup_cluster_routes
from distcache_node.cluster.stall import StallWatch
from distcache_node.errors import Forbidden
from distcache_node.protocol import SECRET_HEADER


def peer_check(app: web.Application) -> None:
    """/cluster/* admits a peer: a client certificate the TLS layer verified against the
    cluster CA that names the host of a ring member (or of this node: its URL) in its
    subjectAltName (cluster/peerident.py), or the cluster secret (any key of the secret's
    set: a rotated file's keys, and the dropped ones through their grace period). A
    certificate from the CA for any other name is no peer: a CA is often shared with other
    workloads."""
    config = app[CONFIG]
    secrets = app[PEER_KEYS]
    names = PeerNames()

    def check(request: web.Request) -> None:
        transport = request.transport
        node = app[CLUSTER]
        if config.tls_ca and transport is not None and node is not None:
            peercert = transport.get_extra_info("peercert")
            if peercert and names.admits(peercert, node.doc,
                                         (m.url for m in node.doc.members), node.url):
                return  # verified by the TLS layer, and it names a member
        given = request.headers.get(SECRET_HEADER)
        if secrets.enabled and given is not None and secrets.accepts(given):
            return
        # The data API key is not a peer credential, not even for reads: people and
        # clients read GET /status.
        raise Forbidden("forbidden", "cluster endpoints accept only peers (a peer "
                       "certificate naming a ring member, or the cluster secret); for the "
                       "node's view of the cluster, GET /status with the API key")

    app[PEER_CHECK] = check


async def _cluster_ctx(app: web.Application) -> AsyncIterator[None]:
    node = app[CLUSTER]
    assert node is not None, "set up by setup_cluster"
    config = node.config
    ssl_ctx = (client_ssl_context(config.tls_cert, config.tls_key, config.tls_ca)
               if config.tls_enabled else None)
    node.client_ssl = ssl_ctx
    node.session = make_session(node.peer_keys.primary, ssl_ctx)
    # A rotated cluster secret: calls to peers send the file's new first line from now on.
    node.peer_keys.listeners.append(node.send_secret)
    tasks = []
    reloader = app[TLS]
    if ssl_ctx is not None and reloader is not None:
        # The certificate we show peers follows a rotated Secret too (new connections).
        reloader.add(ssl_ctx)
    if config.ring_file:
        path = Path(config.ring_file)
        if path.exists():
            # The watcher's first look reports (once) why a file is unusable.
            with contextlib.suppress(ValueError, RingError, OSError):
                node.update_ring(RingDoc.from_json(orjson.loads(path.read_bytes())), "file")
        tasks.append(asyncio.create_task(loops.watch_ring_file(node, path), name="ring-file"))
    node.migration.placed_version = node.doc.version  # a fresh start has nothing misplaced
    tasks.append(asyncio.create_task(
        node.membership.run(lambda: list(node.peers.values())), name="heartbeats"))
    tasks.append(asyncio.create_task(loops.gossip_rings(node), name="ring-gossip"))
    tasks.append(asyncio.create_task(node.migration.run(), name="migration"))
    tasks.append(asyncio.create_task(loops.refill(node), name="refill"))
    # A stop longer than peers wait before routing around us (cluster/stall.py).
    stall = StallWatch(config.suspect_after, node.stalled)
    stall.start()
    yield
    stall.stop()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for peer in node.peers.values():
        if peer.fast is not None:
            peer.fast.close()
    await node.session.close()


def setup_cluster(app: web.Application) -> None:
    config = app[CONFIG]
    node = ClusterNode(config, app[STORE], app[READY])
    node.tls = app[TLS]
    node.api_keys, node.peer_keys = app[API_KEYS], app[PEER_KEYS]
    app[METRICS].registry.register(ClusterCollector(node))
    node.set_ready(False, "starting")
    app[CLUSTER] = node
    app[BACKEND] = ClusterRouter(node)
    peer_check(app)
    setup_cluster_routes(app)
    app.cleanup_ctx.append(_cluster_ctx)
