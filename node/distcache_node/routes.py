"""URL table of the node."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from distcache_node import debug, handlers
from distcache_node.appkeys import METRICS, READY

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
    r = app.router
    r.add_get("/get", handlers.handle_get, allow_head=False)
    r.add_post("/set", handlers.handle_set)
    r.add_delete("/delete", handlers.handle_delete)
    r.add_post("/delete", handlers.handle_delete)
    r.add_post("/mget", handlers.handle_mget)
    r.add_post("/mset", handlers.handle_mset)
    r.add_post("/incr", handlers.handle_incr)
    r.add_get("/healthz", handle_healthz)
    r.add_get("/readyz", handle_readyz)
    r.add_get("/metrics", handle_metrics)
    r.add_get("/openapi.json", handle_openapi)
    r.add_get("/debug/profile", debug.handle_profile)
    r.add_get("/debug/heap", debug.handle_heap)
