"""URL table of the node."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from distcache_node import debug, handlers
from distcache_node.appkeys import METRICS, READY
from distcache_node.pipeline import API, PUBLIC, add_route

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


async def handle_openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI_JSON, content_type="application/json")


def setup_routes(app: web.Application) -> None:
    """Every route with its metrics name and who may call it; the pipeline wraps each."""
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
        ("GET", "/metrics", handle_metrics, "metrics", PUBLIC),
        ("GET", "/openapi.json", handle_openapi, "openapi", PUBLIC),
        ("GET", "/debug/profile", debug.handle_profile, "debug", API),
        ("GET", "/debug/heap", debug.handle_heap, "debug", API),
    ]:
        add_route(app, method, path, handler, op, access)
        if method == "GET" and path != "/get":
            add_route(app, "HEAD", path, handler, op, access)
