"""Data-plane HTTP handlers: parse and validate, then call the backend. No placement here."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from distcache_node.appkeys import BACKEND, CONFIG, METRICS
from distcache_node.backend import REMOTE, Entry, Item, LocalBackend
from distcache_node.deadline import CURRENT as CURRENT_DEADLINE
from distcache_node.errors import CacheError, NotFound, TimedOut, TooLarge, bad_request
from distcache_node.httpbody import read_body as read_body
from distcache_node.httpbody import read_json as read_json
from distcache_node.protocol import DEADLINE_HEADER
from distcache_node.ratelimit import KEY_PREFIX as RESERVED_PREFIX
from distcache_node.validate import MAX_BATCH as MAX_BATCH
from distcache_node.validate import MAX_TTL as MAX_TTL
from distcache_node.validate import validate_key as _validate_key
from distcache_node.validate import validate_ttl as validate_ttl

JSON = "application/json"


def _json_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=JSON)


def validate_key(
    request: web.Request, key: Any, field: str = "key", allow_reserved: bool = False
) -> str:
    """validate.validate_key with this node's key size limit."""
    return _validate_key(key, request.app[CONFIG].max_key_size, field, allow_reserved)


def encode_value(request: web.Request, body: dict[str, Any]) -> bytes:
    if "value" not in body:
        raise bad_request("missing 'value'", "missing_value")
    try:
        value = orjson.dumps(body["value"])
    except orjson.JSONEncodeError as exc:  # e.g. nested deeper than orjson writes (254)
        raise bad_request(f"'value' cannot be stored: {exc}", "invalid_value") from None
    limit = request.app[CONFIG].max_value_size
    if len(value) > limit:
        raise TooLarge("value_too_large",
                       f"value is {len(value)} bytes encoded, over the {limit}-byte limit")
    return value


def _ttl_json(ttl: float) -> bytes:
    return orjson.dumps(round(ttl, 3))




def get_handler(
    app: web.Application,
) -> Callable[[web.Request], web.Response | Awaitable[web.Response]]:
    """GET /get, the hottest path: built per app so the limit, backend and counters are
    looked up once, not on every request (app[...] is a Python-level call each time). It is
    a plain function that answers at once from this node's store whenever it can (always on
    a single node; on a cluster when this node's copy is authoritative), and hands back a
    coroutine that asks the owners otherwise: no coroutine per request on the common path."""
    max_key_size = app[CONFIG].max_key_size
    backend = app[BACKEND]
    metrics = app[METRICS]
    hits, misses = metrics.hits, metrics.misses
    dumps = orjson.dumps
    # key -> entry, None (absent) or REMOTE
    lookup: Callable[[str], Entry | object | None]
    if isinstance(backend, LocalBackend):
        lookup = backend.store.get_with_ttl
    else:
        lookup = getattr(backend, "read_local", lambda key: REMOTE)
    backend_get = backend.get

    def respond(key: str, entry: Entry | None) -> web.Response:
        if entry is None:
            misses.value += 1
            raise NotFound("not_found", f"key {key!r} not found")
        hits.value += 1
        value, ttl = entry
        ttl_json = b"null" if ttl is None else _ttl_json(ttl)
        body = b'{"key":%b,"value":%b,"ttl":%b}' % (dumps(key), value, ttl_json)
        return web.Response(body=body, content_type=JSON)

    async def ask_owners(key: str) -> web.Response:
        return respond(key, await backend_get(key))

    def handle_get(request: web.Request) -> web.Response | Awaitable[web.Response]:
        key = request.query.get("key")
        # The common key (plain ASCII within the limit, not reserved) passes inline; any
        # other gets validate_key's full checks and messages.
        if (type(key) is not str or not key or len(key) > max_key_size
                or not key.isascii() or key.startswith(RESERVED_PREFIX)):
            key = validate_key(request, key)
        entry = lookup(key)
        if entry is REMOTE:
            return ask_owners(key)
        return respond(key, entry)  # type: ignore[arg-type]

    return handle_get


def check_deadline(request: web.Request) -> None:
    """Refuse a write whose client has stopped waiting (DEADLINE_HEADER), right before it
    would get its version: applied now it could overwrite what the client wrote since."""
    raw = request.headers.get(DEADLINE_HEADER)
    if raw is None:
        return
    try:
        deadline = float(raw)
    except ValueError:
        deadline = math.nan
    if not math.isfinite(deadline) or deadline < 0:
        raise bad_request(f"{DEADLINE_HEADER} must be seconds since the Unix epoch, got "
                          f"{raw[:40]!r}", "invalid_deadline")
    late = time.time() - deadline
    if late > 0:
        raise TimedOut("deadline_exceeded", f"the write arrived {late:.3f} s after the "
                       f"client's deadline ({DEADLINE_HEADER}): not applied")
    CURRENT_DEADLINE.set(deadline)  # the router re-issues nothing past it


async def handle_set(request: web.Request) -> web.Response:
    body = await read_json(request)
    key = validate_key(request, body.get("key"))
    value = encode_value(request, body)
    ttl = validate_ttl(body.get("ttl"))
    check_deadline(request)
    await request.app[BACKEND].set(key, value, ttl)
    return _json_response(b'{"stored":true,"key":%b}' % orjson.dumps(key))


async def handle_delete(request: web.Request) -> web.Response:
    if request.method == "DELETE":
        key_raw: Any = request.query.get("key")
        if key_raw is None and request.can_read_body:
            key_raw = (await read_json(request)).get("key")
    else:
        key_raw = (await read_json(request)).get("key")
    key = validate_key(request, key_raw)
    check_deadline(request)
    deleted = await request.app[BACKEND].delete(key)
    return _json_response(b'{"deleted":true}' if deleted else b'{"deleted":false}')


def _batch(body: dict[str, Any], field: str) -> list[Any]:
    items = body.get(field)
    if items is None:
        raise bad_request(f"missing {field!r}", f"missing_{field}")
    if not isinstance(items, list):
        raise bad_request(f"{field!r} must be a list", f"invalid_{field}")
    if len(items) > MAX_BATCH:
        raise TooLarge("batch_too_large", f"at most {MAX_BATCH} {field} per request")
    return items


def validate_keys(request: web.Request, keys: list[Any], field: str) -> list[str]:
    """validate_key over a batch: the limit read once, and plain ASCII keys within it (valid
    UTF-8 of one byte a character) accepted inline; any other key gets validate_key's checks."""
    limit = request.app[CONFIG].max_key_size
    for key in keys:
        if (type(key) is not str or not key or len(key) > limit or not key.isascii()
                or key.startswith(RESERVED_PREFIX)):
            validate_key(request, key, field)
    return keys


async def handle_mget(request: web.Request) -> web.Response:
    body = await read_json(request)
    keys = validate_keys(request, _batch(body, "keys"), "keys[]")
    unique = list(dict.fromkeys(keys))
    app = request.app
    found = await app[BACKEND].mget(unique)
    missing = [k for k in unique if k not in found]
    metrics = app[METRICS]
    metrics.hits.inc(len(found))
    metrics.misses.inc(len(missing))
    # Stored values are JSON already: Fragment splices them in as they are, one dumps call.
    fragment = orjson.Fragment
    values = {k: fragment(v[0]) for k, v in found.items()}
    return _json_response(orjson.dumps({"values": values, "missing": missing}))


async def handle_mset(request: web.Request) -> web.Response:
    body = await read_json(request)
    raw_items = _batch(body, "items")
    items: list[Item] = []
    # Validate everything before storing anything: all or nothing.
    for index, raw in enumerate(raw_items):
        if not isinstance(raw, dict):
            raise bad_request(f"items[{index}] must be an object with 'key' and 'value'",
                              "invalid_items")
        try:
            key = validate_key(request, raw.get("key"), f"items[{index}].key")
            value = encode_value(request, raw)
            ttl = validate_ttl(raw.get("ttl"))
        except CacheError as exc:
            exc.message = f"items[{index}]: {exc.message}"
            raise
        items.append((key, value, ttl))
    check_deadline(request)
    stored = await request.app[BACKEND].mset(items)
    return _json_response(b'{"stored":%d}' % stored)


async def handle_incr(request: web.Request) -> web.Response:
    body = await read_json(request)
    key = validate_key(request, body.get("key"))
    delta = body.get("delta", 1)
    if isinstance(delta, bool) or not isinstance(delta, int):
        raise bad_request("'delta' must be an integer", "invalid_delta")
    if not -(2**63) <= delta < 2**63:
        raise bad_request("'delta' must fit in a signed 64-bit integer", "invalid_delta")
    ttl = validate_ttl(body.get("ttl"))
    check_deadline(request)
    value = await request.app[BACKEND].incr(key, delta, ttl)
    return _json_response(b'{"key":%b,"value":%d}' % (orjson.dumps(key), value))
