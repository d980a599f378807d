"""Data-plane HTTP handlers: parse and validate, then call the backend. No placement here."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from distcache_node.appkeys import BACKEND, CONFIG, METRICS
from distcache_node.backend import REMOTE, Entry, Item, LocalBackend
from distcache_node.errors import ApiError, bad_request
from distcache_node.ratelimit import KEY_PREFIX as RESERVED_PREFIX

MAX_TTL = 10 * 365 * 24 * 3600.0  # ten years: anything longer is a mistake, not a TTL
MAX_BATCH = 10_000
JSON = "application/json"


def _json_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=JSON)


async def read_json(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}", "malformed_json") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object", "malformed_json")
    return body


async def read_body(request: web.Request) -> bytes:
    """The whole request body within the read timeout; never empty."""
    try:
        if request.content.is_eof():
            raw = await request.read()  # all here already: no timer to arm
        else:
            async with asyncio.timeout(request.app[CONFIG].request_read_timeout):
                raw = await request.read()
    except TimeoutError:
        raise ApiError(408, "request_timeout", "request body not received in time") from None
    except web.RequestPayloadError as exc:  # e.g. a Content-Encoding the body does not match
        reason = str(exc).strip().splitlines()[-1].strip()
        raise bad_request(f"request body cannot be read: {reason}", "malformed_body") from None
    if not raw:
        raise bad_request("request body is empty; send a JSON object", "malformed_json")
    return raw


def validate_key(
    request: web.Request, key: Any, field: str = "key", allow_reserved: bool = False
) -> str:
    if key is None:
        raise bad_request(f"missing {field!r}", "missing_key")
    if not isinstance(key, str):
        raise bad_request(f"{field!r} must be a string", "invalid_key")
    if not key:
        raise bad_request(f"{field!r} must not be empty", "invalid_key")
    limit = request.app[CONFIG].max_key_size
    ascii_key = key.isascii()  # the common case: valid UTF-8, one byte a character
    size = len(key) if ascii_key else len(key.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise bad_request(f"{field!r} is {size} bytes, over the {limit}-byte limit", "key_too_long")
    if not ascii_key:
        try:
            key.encode()
        except UnicodeEncodeError:
            raise bad_request(f"{field!r} is not valid UTF-8", "invalid_key") from None
    if not allow_reserved and key.startswith(RESERVED_PREFIX):
        # The rate limiter's counters live here: a client must not reset or poison them.
        raise bad_request(f"{field!r}: keys starting with {RESERVED_PREFIX!r} are reserved",
                          "invalid_key")
    return key


def validate_ttl(ttl: Any) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise bad_request("'ttl' must be a number of seconds", "invalid_ttl")
    if not 0 < ttl <= MAX_TTL:
        raise bad_request(f"'ttl' must be > 0 and <= {MAX_TTL:.0f} seconds", "invalid_ttl")
    return float(ttl)


def encode_value(request: web.Request, body: dict[str, Any]) -> bytes:
    if "value" not in body:
        raise bad_request("missing 'value'", "missing_value")
    try:
        value = orjson.dumps(body["value"])
    except orjson.JSONEncodeError as exc:  # e.g. nested deeper than orjson writes (254)
        raise bad_request(f"'value' cannot be stored: {exc}", "invalid_value") from None
    limit = request.app[CONFIG].max_value_size
    if len(value) > limit:
        raise ApiError(413, "value_too_large",
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
            raise ApiError(404, "not_found", f"key {key!r} not found")
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


async def handle_set(request: web.Request) -> web.Response:
    body = await read_json(request)
    key = validate_key(request, body.get("key"))
    value = encode_value(request, body)
    ttl = validate_ttl(body.get("ttl"))
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
    deleted = await request.app[BACKEND].delete(key)
    return _json_response(b'{"deleted":true}' if deleted else b'{"deleted":false}')


def _batch(body: dict[str, Any], field: str) -> list[Any]:
    items = body.get(field)
    if items is None:
        raise bad_request(f"missing {field!r}", f"missing_{field}")
    if not isinstance(items, list):
        raise bad_request(f"{field!r} must be a list", f"invalid_{field}")
    if len(items) > MAX_BATCH:
        raise ApiError(413, "batch_too_large", f"at most {MAX_BATCH} {field} per request")
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
        except ApiError as exc:
            exc.message = f"items[{index}]: {exc.message}"
            raise
        items.append((key, value, ttl))
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
    value = await request.app[BACKEND].incr(key, delta, ttl)
    return _json_response(b'{"key":%b,"value":%d}' % (orjson.dumps(key), value))
