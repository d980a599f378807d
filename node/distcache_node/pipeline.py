"""Every request's way through the node: errors to JSON, auth, rate limit, gzip, metrics.

Wrapped around each route's handler when the routes are set up (`add_route`), rather than
being an aiohttp middleware: a middleware chain runs on every request, and everything the
wrapper needs (the route's name and access, config, metrics, limiter) is known per route,
so it is looked up once at set-up instead of once per request. The node's GET path is
benchmarked against a bare aiohttp handler. Unknown paths and wrong methods get their JSON
404/405 from catch-all routes (`add_fallback_routes`).
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from multidict import istr

from distcache_node.appkeys import API_KEYS, CLUSTER, CONFIG, METRICS, PEER_CHECK, RATE_LIMITER
from distcache_node.config import IPNetwork, parse_cidrs
from distcache_node.errors import CacheError, NotFound, Unauthenticated
from distcache_node.http_errors import HttpError, error_response, json_error
from distcache_node.httpserver import GuardedRequestHandler
from distcache_node.keyfile import KeySet
from distcache_node.protocol import RING_VERSION_HEADER, STOPPING_HEADER
from distcache_node.ratelimit import Decision, RateLimiter, client_address
from distcache_node.store import EntryTooLarge, NotAnInteger

log = logging.getLogger("distcache.node")

# A handler returns its response, or an awaitable of it: a plain function can answer at once
# when it can (a local read), sparing a coroutine per request, and defer to a coroutine when
# it cannot (a read from a peer).
Handler = Callable[[web.Request], Awaitable[web.StreamResponse] | web.StreamResponse]
WrappedHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]  # what aiohttp calls
# Who may call a route: anyone; data API clients (API key, rate limited); holders of the API
# key, not rate limited (operations: metrics, profiles); or cluster peers only.
PUBLIC, API, KEYED, PEER = "public", "api", "keyed", "peer"

_HTTP_ERROR_CODES = {
    400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
    411: "length_required", 413: "body_too_large", 415: "unsupported_media_type",
    431: "headers_too_large",
}


API_KEY_HEADER = istr("X-API-Key")  # pre-folded: a faster header lookup on every request


def api_key_of(request: web.Request) -> str | None:
    """The X-API-Key header, else the api_key query parameter, else a bearer token
    (`Authorization: Bearer <key>`: what a Prometheus Operator ServiceMonitor sends from a
    Secret, where a query parameter would have to hold the key in plain text)."""
    given = request.headers.get(API_KEY_HEADER) or request.query.get("api_key")
    if given is None:
        scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return given


def check_api_key(request: web.Request, expected: KeySet) -> None:
    given = api_key_of(request)
    if given is None:
        raise Unauthenticated("unauthorized", "missing API key: send the X-API-Key header")
    if not expected.accepts(given):
        raise Unauthenticated("unauthorized", "invalid API key")


def _peer_check(request: web.Request) -> None:
    """Internal endpoints: replaced by the cluster module's check when clustering is on."""
    raise NotFound("not_found", "cluster endpoints are not enabled on this node")


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


async def _limit(
    limiter: RateLimiter, request: web.Request, trusted: tuple[IPNetwork, ...]
) -> Decision | None:
    """The limiter's verdict, or None when its counters cannot be reached (a cluster that
    lost its quorum for the counter's key): the limiter fails open rather than turning an
    outage of its bookkeeping into an outage of the cache."""
    client = client_address(request.remote,
                            request.headers.getall(hdrs.X_FORWARDED_FOR, ()) if trusted else (),
                            trusted)
    try:
        return await limiter.check(client)
    except CacheError as exc:
        log.warning("rate limiter unavailable, request let through: %s", exc.message)
        return None


def wrap(app: web.Application, handler: Handler, op: str, access: str) -> WrappedHandler:
    """The handler with the node's request pipeline around it. `op` names the route in
    metrics; `access` is PUBLIC, API, KEYED or PEER."""
    config = app[CONFIG]
    metrics = app[METRICS]
    limiter = app[RATE_LIMITER] if access == API else None
    # The key set is read on each request: a reloaded file changes what it accepts.
    api_keys = app[API_KEYS] if access in (API, KEYED) and app[API_KEYS].enabled else None
    trusted = parse_cidrs(config.trusted_proxies)
    peer_check = app.get(PEER_CHECK, _peer_check) if access == PEER else None
    cluster = app[CLUSTER] if access == API else None
    gzip_min = config.gzip_min_size
    # Metrics cells updated inline: a call per request is a measurable share of a GET.
    counts = metrics.request_counts
    count_keys: dict[int, tuple[str, int]] = {}
    tally: list[float] | None = None  # created on the first request, as a labelled child is
    bounds = metrics.BOUNDS
    perf_counter = time.perf_counter

    async def pipeline(request: web.Request) -> web.StreamResponse:
        nonlocal tally
        start = perf_counter()
        protocol = request.protocol
        guarded = protocol if isinstance(protocol, GuardedRequestHandler) else None
        if guarded is not None:
            guarded._distcache_in_request = True
        rate_headers: dict[str, str] | None = None
        try:
            if api_keys is not None:
                # Inline for the common case (the header, matching); anything else takes
                # check_api_key's full path and its error messages.
                given = request.headers.get(API_KEY_HEADER)
                if given is None or not api_keys.accepts(given):
                    check_api_key(request, api_keys)
            if limiter is not None and (decision := await _limit(limiter, request, trusted)):
                rate_headers = decision.headers()
                if not decision.allowed:
                    metrics.rate_limited.inc()
                    raise HttpError(429, "rate_limited",
                                    f"too many requests: limit is {decision.limit} per second",
                                    rate_headers)
            if peer_check is not None:
                peer_check(request)
            response = handler(request)
            if not isinstance(response, web.StreamResponse):
                response = await response
        except CacheError as exc:
            response = error_response(exc)
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
        if cluster is not None:
            # Ring-aware clients refresh their ring when this moves past the one they hold.
            response.headers[RING_VERSION_HEADER] = str(cluster.doc.version)
            if cluster.stopping:
                response.headers[STOPPING_HEADER] = "1"
        accept = request.headers.get(hdrs.ACCEPT_ENCODING)
        if accept is not None and "gzip" in accept:
            body = getattr(response, "body", None)
            if type(body) is bytes and len(body) >= gzip_min:
                response.enable_compression(web.ContentCoding.gzip)
        status = response.status
        key = count_keys.get(status)
        if key is None:
            key = count_keys[status] = metrics.count_cell(op, status)
        counts[key] += 1
        elapsed = perf_counter() - start
        if tally is None:
            tally = metrics.latency_tally(op)
        tally[bisect_left(bounds, elapsed)] += 1  # le: the first bound >= elapsed
        tally[-1] += elapsed
        return response

    return pipeline


def add_route(
    app: web.Application, method: str, path: str, handler: Handler, op: str, access: str
) -> None:
    app.router.add_route(method, path, wrap(app, handler, op, access))


def add_fallback_routes(app: web.Application) -> None:
    """JSON 405 (with Allow) for a known path with another method, JSON 404 for any other
    path. Called once every real route is in place. Neither asks for a key: they reveal
    nothing."""
    for resource in list(app.router.resources()):
        allowed = {route.method for route in resource}
        if hdrs.METH_ANY in allowed:
            continue
        allow = ",".join(sorted(allowed))

        async def method_not_allowed(request: web.Request, allow: str = allow) -> web.Response:
            raise HttpError(405, "method_not_allowed",
                            f"method {request.method} not allowed here; allowed: {allow}",
                            {"Allow": allow})

        assert isinstance(resource, web.Resource)
        resource.add_route(hdrs.METH_ANY, wrap(app, method_not_allowed, "unmatched", PUBLIC))

    async def not_found(request: web.Request) -> web.Response:
        raise NotFound("not_found", "no such endpoint")

    app.router.add_route(hdrs.METH_ANY, "/{path:.*}", wrap(app, not_found, "unmatched", PUBLIC))
