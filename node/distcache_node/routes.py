"""URL table of the node."""

from __future__ import annotations

from importlib import resources

import orjson
from aiohttp import web

from distcache_node import debug, handlers
from distcache_node.appkeys import CLUSTER, CONFIG, METRICS, READY, STORE, TLS
from distcache_node.errors import Forbidden
from distcache_node.pipeline import API, KEYED, PUBLIC, add_route

OPENAPI_JSON = resources.files("distcache_node").joinpath("openapi.json").read_bytes()


async def handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def handle_readyz(request: web.Request) -> web.Response:
    state = request.app[READY]
    return web.json_response(
        {"ready": state["ready"], "reason": state["reason"]},
        status=200 if state["ready"] else 503,
    )


async def handle_metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


def handle_status(request: web.Request) -> web.Response:
    """GET /status: this node's view of itself and the cluster, for people and clients
    (the ring-aware client reads the ring from here). Read-only, behind the data API key;
    the internal /cluster/status is for peers only."""
    app = request.app
    config, store, ready, cluster = app[CONFIG], app[STORE], app[READY], app[CLUSTER]
    tls = app[TLS]
    body: dict[str, object] = {
        "id": config.node_id or f"{config.host}:{config.port}",
        "state": "standalone", "ready": bool(ready["ready"]), "reason": ready["reason"],
        "ring_version": 0, "replication": 1,
        "keys": len(store), "bytes_used": store.bytes_used, "max_memory": config.max_memory,
        "members": [], "migration": None,
        "tls": tls.report() if tls is not None else None,  # what is loaded, for the operator
    }
    if cluster is not None:
        me = cluster.doc.member(cluster.id)
        body = {"id": cluster.id, "url": cluster.url, **body}  # url next to id, for people
        body.update({
            "id": cluster.id, "state": me.state if me else "detached",
            "ring_version": cluster.doc.version, "replication": cluster.doc.replication,
            "members": [
                {"id": m.id, "url": m.url, "state": m.state,
                 "alive": cluster.is_alive(m.id), "ready": cluster.is_ready(m.id)}
                for m in cluster.doc.members
            ],
            "migration": cluster.migration.progress(),
        })
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def handle_debug_disabled(request: web.Request) -> web.Response:
    raise Forbidden("debug_disabled", "/debug/* is disabled on a node without an API key: "
                   "start the node with --api-key (or DISTCACHE_API_KEY) to enable it")


async def handle_openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI_JSON, content_type="application/json")


def setup_routes(app: web.Application) -> None:
    """Every route with its metrics name and who may call it; the pipeline wraps each."""
    config = app[CONFIG]
    # With an API key configured only the probes and the API description are public;
    # --metrics-public opens /metrics to a scraper that cannot send the key.
    metrics_access = PUBLIC if config.metrics_public else KEYED
    # Profiles show code, timings and allocations: never on a node open to anyone.
    profile = debug.handle_profile if config.has_api_key else handle_debug_disabled
    heap = debug.handle_heap if config.has_api_key else handle_debug_disabled
    for method, path, handler, op, access in [
        ("GET", "/get", handlers.get_handler(app), "get", API),
        ("POST", "/set", handlers.handle_set, "set", API),
        ("DELETE", "/delete", handlers.handle_delete, "delete", API),
        ("POST", "/delete", handlers.handle_delete, "delete", API),
        ("POST", "/mget", handlers.handle_mget, "mget", API),
        ("POST", "/mset", handlers.handle_mset, "mset", API),
        ("POST", "/incr", handlers.handle_incr, "incr", API),
        ("GET", "/healthz", handle_healthz, "healthz", PUBLIC),
        ("GET", "/readyz", handle_readyz, "readyz", PUBLIC),
        ("GET", "/status", handle_status, "status", API),
        ("GET", "/metrics", handle_metrics, "metrics", metrics_access),
        ("GET", "/openapi.json", handle_openapi, "openapi", PUBLIC),
        ("GET", "/debug/profile", profile, "debug", KEYED),
        ("GET", "/debug/heap", heap, "debug", KEYED),
    ]:
        add_route(app, method, path, handler, op, access)
        if method == "GET" and path != "/get":
            add_route(app, "HEAD", path, handler, op, access)
