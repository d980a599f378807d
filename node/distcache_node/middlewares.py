"""One middleware for every request: errors to JSON, auth, rate limit, gzip, metrics.

A single layer rather than five: each aiohttp middleware costs a call frame per request, and
the node's GET path is benchmarked against a bare handler.
"""

from __future__ import annotations

import hmac
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from distcache_node.appkeys import CLUSTER, CONFIG, METRICS, PEER_CHECK, RATE_LIMITER
from distcache_node.errors import ApiError, json_error
from distcache_node.serve import GuardedRequestHandler
from distcache_node.store import EntryTooLarge, NotAnInteger

log = logging.getLogger("distcache.node")

# path -> (metric op name, who may call it)
PUBLIC, API, PEER = "public", "api", "peer"
ROUTE_ACCESS: dict[str, tuple[str, str]] = {
    "/get": ("get", API), "/set": ("set", API), "/delete": ("delete", API),
    "/mget": ("mget", API), "/mset": ("mset", API), "/incr": ("incr", API),
    "/healthz": ("healthz", PUBLIC), "/readyz": ("readyz", PUBLIC),
    "/metrics": ("metrics", PUBLIC), "/openapi.json": ("openapi", PUBLIC),
    "/debug/profile": ("debug", API), "/debug/heap": ("debug", API),
}
UNMATCHED = ("unmatched", PUBLIC)
RING_VERSION_HEADER = "X-DistCache-Ring-Version"

_HTTP_ERROR_CODES = {
    400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
    411: "length_required", 413: "body_too_large", 415: "unsupported_media_type",
    431: "headers_too_large",
}


def api_key_of(request: web.Request) -> str | None:
    return request.headers.get("X-API-Key") or request.query.get("api_key")


def check_api_key(request: web.Request, expected: str) -> None:
    given = api_key_of(request)
    if given is None:
        raise ApiError(401, "unauthorized", "missing API key: send the X-API-Key header",
                       {"WWW-Authenticate": 'ApiKey header="X-API-Key"'})
    # Header values arrive surrogate-escaped when they are not UTF-8: compare the raw bytes.
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
        raise ApiError(401, "unauthorized", "invalid API key",
                       {"WWW-Authenticate": 'ApiKey header="X-API-Key"'})


def _peer_check(request: web.Request) -> None:
    """Internal endpoints: replaced by the cluster module's check when clustering is on."""
    raise ApiError(404, "not_found", "cluster endpoints are not enabled on this node")


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    headers = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        headers["Allow"] = ",".join(sorted(exc.allowed_methods))
    code = _HTTP_ERROR_CODES.get(exc.status, "http_error")
    message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
    if isinstance(exc, web.HTTPNotFound):
        message = "no such endpoint"
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        message = f"method {exc.method} not allowed here; allowed: {headers['Allow']}"
    return json_error(exc.status, code, message, headers)


@web.middleware
async def pipeline(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    app = request.app
    config = app[CONFIG]
    if request.match_info.http_exception is not None:
        op, access = UNMATCHED  # 404/405 come before auth: they reveal nothing
    else:
        op, access = ROUTE_ACCESS.get(request.path) or (
            ("cluster", PEER) if request.path.startswith("/cluster/") else UNMATCHED
        )
    protocol = request.protocol
    guarded = protocol if isinstance(protocol, GuardedRequestHandler) else None
    if guarded is not None:
        guarded._distcache_in_request = True
    rate_headers: dict[str, str] | None = None
    try:
        if access == API:
            if config.api_key:
                check_api_key(request, config.api_key)
            limiter = app[RATE_LIMITER]
            if limiter is not None:
                decision = await limiter.check(request.remote or "unknown")
                rate_headers = decision.headers()
                if not decision.allowed:
                    app[METRICS].rate_limited.inc()
                    raise ApiError(429, "rate_limited",
                                   f"too many requests: limit is {decision.limit} per second",
                                   rate_headers)
        elif access == PEER:
            app.get(PEER_CHECK, _peer_check)(request)
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except web.HTTPException as exc:
        response = _from_http_exception(exc)
    except NotAnInteger as exc:
        response = json_error(409, "not_an_integer", str(exc))
    except EntryTooLarge as exc:
        response = json_error(413, "value_too_large", str(exc))
    except ConnectionResetError:
        raise
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        response = json_error(500, "internal_error", "internal error; see the node's log")
    finally:
        if guarded is not None:
            guarded._distcache_in_request = False
            guarded._distcache_pending_since = None
    if rate_headers is not None and response.status != 429:
        response.headers.update(rate_headers)
    cluster = app[CLUSTER]
    if cluster is not None and access == API:
        # Ring-aware clients refresh their ring when this moves past the one they hold.
        response.headers[RING_VERSION_HEADER] = str(cluster.doc.version)
    body = getattr(response, "body", None)
    if (
        body is not None
        and isinstance(body, bytes)
        and len(body) >= config.gzip_min_size
        and "gzip" in request.headers.get("Accept-Encoding", "")
    ):
        response.enable_compression(web.ContentCoding.gzip)
    app[METRICS].observe(op, response.status, time.perf_counter() - start)
    return response


def setup_middlewares(app: web.Application) -> None:
    app.middlewares.append(pipeline)
