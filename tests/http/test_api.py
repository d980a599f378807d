"""The node's HTTP contract, endpoint by endpoint, against a real server on a loopback socket.

Every request goes through `call()`, which enforces what holds for *every* response:
never a 5xx, every error is JSON `{"error", "message"}`, and the response (status, media
type, body) is one the OpenAPI document declares. Every rejected request is checked to
change nothing: `expect_error()` compares the store (key count, bytes used, watched values)
before and after.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import jsonschema_rs
import orjson
import pytest
from aiohttp.test_utils import TestServer

from distcache_node import debug, handlers
from distcache_node.app import create_app
from distcache_node.appkeys import READY
from distcache_node.config import NodeConfig
from support import API_KEY

ROOT = Path(__file__).resolve().parents[2]
DOC: dict[str, Any] = json.loads((ROOT / "node/distcache_node/openapi.json").read_text())
INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
MAX_TTL = 10 * 365 * 24 * 3600
_UNSET: Any = object()

# ---------------------------------------------------------------------------------------------
# Contract checking against the OpenAPI document


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = DOC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


_validators: dict[str, Any] = {}


def _validator(schema: dict[str, Any]) -> Any:
    cache_key = json.dumps(schema, sort_keys=True)
    if cache_key not in _validators:
        root = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                "components": DOC["components"], **schema}
        _validators[cache_key] = jsonschema_rs.validator_for(root)
    return _validators[cache_key]


def check_contract(
    method: str, path: str, status: int, content_type: str, headers: Mapping[str, str], body: Any
) -> None:
    """Fails unless the OpenAPI document declares this response for this request."""
    path_item = DOC["paths"].get(path)
    if path_item is None:
        assert status == 404, f"{method} {path}: undocumented path answered {status}"
        declared = _resolve({"$ref": "#/components/responses/NotFound"})
    elif method.lower() not in path_item:
        assert status == 405, f"{method} {path}: undocumented method answered {status}"
        declared = _resolve({"$ref": "#/components/responses/MethodNotAllowed"})
    else:
        responses = path_item[method.lower()]["responses"]
        assert str(status) in responses, (
            f"{method} {path} answered {status}, the document declares {sorted(responses)}"
        )
        declared = _resolve(responses[str(status)])
    for name, header in declared.get("headers", {}).items():
        if _resolve(header).get("required"):
            assert name in headers, f"{method} {path} {status}: no {name} header"
    if method == "HEAD":
        return
    content = declared["content"]
    assert content_type in content, f"{method} {path} {status}: {content_type} not declared"
    schema = content[content_type].get("schema")
    if schema is not None:
        errors = [e.message for e in _validator(schema).iter_errors(body)]
        assert not errors, f"{method} {path} {status}: body {body!r} breaks the document: {errors}"


# ---------------------------------------------------------------------------------------------
# Requests


def encode_json(value: Any) -> bytes:
    """Like any client would; the standard library, unlike orjson, writes ints beyond 64 bits."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class Reply(NamedTuple):
    status: int
    headers: Mapping[str, str]
    body: Any  # decoded JSON, or text for text/plain


async def call(
    http: aiohttp.ClientSession, method: str, url: str, path: str, *,
    json: Any = _UNSET, data: bytes | str | None = None,
    params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
    expect: int | None = None,
) -> Reply:
    kwargs: dict[str, Any] = {"params": params, "headers": headers}
    if json is not _UNSET:
        kwargs["data"] = encode_json(json)
        kwargs["headers"] = {"Content-Type": "application/json", **(headers or {})}
    elif data is not None:
        kwargs["data"] = data
    async with http.request(method, url + path, **kwargs) as resp:
        raw = await resp.read()
        status, content_type, resp_headers = resp.status, resp.content_type, resp.headers
    not_ready = path == "/readyz" and status == 503  # a state, not a failure
    assert status < 500 or not_ready, f"{method} {path}: {status} {raw[:500]!r}"
    body: Any = None
    if method != "HEAD":
        body = orjson.loads(raw) if content_type == "application/json" else raw.decode()
    if status >= 400 and method != "HEAD" and not not_ready:
        assert content_type == "application/json", f"{status} error is {content_type}"
        assert isinstance(body, dict) and set(body) == {"error", "message"}, body
        assert isinstance(body["error"], str) and body["error"], body
        assert isinstance(body["message"], str) and body["message"], body
    check_contract(method, path, status, content_type, resp_headers, body)
    if expect is not None:
        assert status == expect, f"{method} {path}: expected {expect}, got {status}: {body!r}"
    return Reply(status, resp_headers, body)


async def store_state(
    http: aiohttp.ClientSession, url: str, watch: Iterable[str]
) -> tuple[float, float, Any]:
    """What a rejected request must not change: key count, bytes used, the watched entries."""
    metrics = (await call(http, "GET", url, "/metrics", expect=200)).body
    gauges = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith(("distcache_keys ", "distcache_memory_used_bytes "))
    }
    watched = (await call(http, "POST", url, "/mget", json={"keys": list(watch)})).body
    return gauges["distcache_keys"], gauges["distcache_memory_used_bytes"], watched


async def expect_error(
    http: aiohttp.ClientSession, url: str, method: str, path: str, status: int, code: str,
    *, watch: Iterable[str] = ("k",), **kwargs: Any,
) -> Reply:
    watch = list(watch)
    before = await store_state(http, url, watch)
    reply = await call(http, method, url, path, **kwargs)
    assert (reply.status, reply.body["error"]) == (status, code), reply.body
    assert await store_state(http, url, watch) == before, "a rejected request changed the store"
    return reply


async def raw_request(url: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends bytes as they are (what aiohttp's client will not send); reads one response."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
    finally:
        writer.close()
    return int(lines[0].split()[1]), headers, body


def raw_post(path: str, body: bytes, extra_headers: bytes = b"") -> bytes:
    return (
        b"POST %b HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: %b\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n%b\r\n%b"
        % (path.encode(), API_KEY.encode(), len(body), extra_headers, body)
    )


async def put(http: aiohttp.ClientSession, url: str, key: str, value: Any, **extra: Any) -> None:
    reply = await call(http, "POST", url, "/set", json={"key": key, "value": value, **extra})
    assert reply.status == 200 and reply.body == {"stored": True, "key": key}, reply.body


async def fetch(http: aiohttp.ClientSession, url: str, key: str) -> Reply:
    return await call(http, "GET", url, "/get", params={"key": key})


@pytest.fixture
async def seeded(node_url: str, http: aiohttp.ClientSession) -> str:
    """A node holding "k" = {"v": 1}: the entry every error test checks stays as it was."""
    await put(http, node_url, "k", {"v": 1})
    return node_url


# ---------------------------------------------------------------------------------------------
# /set and /get

VALUES = [
    "Alice", "", "ünïcödé ☃ 😀", 0, -1, INT64_MAX, INT64_MIN, 2**64 - 1, 3.25, -1e300,
    True, False, None, [], {}, [1, "two", None, [3]], {"nested": {"deep": [{"x": 1}]}},
    "x" * 10_000,
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
async def test_set_then_get_returns_the_value(
    node_url: str, http: aiohttp.ClientSession, value: Any
) -> None:
    await put(http, node_url, "some:key", value)
    reply = await fetch(http, node_url, "some:key")
    assert reply.status == 200
    assert reply.body == {"key": "some:key", "value": value, "ttl": None}


async def test_set_overwrites(node_url: str, http: aiohttp.ClientSession) -> None:
    await put(http, node_url, "k", 1)
    await put(http, node_url, "k", {"now": "an object"})
    assert (await fetch(http, node_url, "k")).body["value"] == {"now": "an object"}


async def test_get_of_an_absent_key_is_404(node_url: str, http: aiohttp.ClientSession) -> None:
    reply = await call(http, "GET", node_url, "/get", params={"key": "nope"}, expect=404)
    assert reply.body["error"] == "not_found"


async def test_set_ignores_unknown_fields(node_url: str, http: aiohttp.ClientSession) -> None:
    await put(http, node_url, "k", 1, extra="ignored")
    assert (await fetch(http, node_url, "k")).body == {"key": "k", "value": 1, "ttl": None}


async def test_value_keeps_utf8_and_escapes(node_url: str, http: aiohttp.ClientSession) -> None:
    value = {"quote": "\"", "backslash": "\\", "nul": "\u0000", "line": "a\nb", "emoji": "🐍"}
    await put(http, node_url, "k", value)
    assert (await fetch(http, node_url, "k")).body["value"] == value


@pytest.mark.parametrize("key", ["a" * 1024, "é" * 512, "😀" * 256, "€" * 341 + "a"],
                         ids=["ascii", "2-byte", "4-byte", "3-byte"])
async def test_key_of_exactly_1024_bytes_is_accepted(
    node_url: str, http: aiohttp.ClientSession, key: str
) -> None:
    assert len(key.encode()) == 1024
    await put(http, node_url, key, "v")
    assert (await fetch(http, node_url, key)).body["value"] == "v"
    assert (await call(http, "POST", node_url, "/mget", json={"keys": [key]})).body == {
        "values": {key: "v"}, "missing": [],
    }
    reply = await call(http, "DELETE", node_url, "/delete", params={"key": key})
    assert reply.body == {"deleted": True}
    reply = await call(http, "POST", node_url, "/incr", json={"key": key}, expect=200)
    assert reply.body == {"key": key, "value": 1}


@pytest.mark.parametrize("key", ["a" * 1025, "é" * 513, "😀" * 257, "a" * 1023 + "é"],
                         ids=["ascii", "2-byte", "4-byte", "1023+2"])
async def test_key_over_1024_bytes_is_rejected_everywhere(
    seeded: str, http: aiohttp.ClientSession, key: str
) -> None:
    assert len(key.encode()) > 1024 and len(key) <= 1025
    url = seeded
    for method, path, kwargs in [
        ("POST", "/set", {"json": {"key": key, "value": 1}}),
        ("GET", "/get", {"params": {"key": key}}),
        ("DELETE", "/delete", {"params": {"key": key}}),
        ("POST", "/delete", {"json": {"key": key}}),
        ("POST", "/mget", {"json": {"keys": ["k", key]}}),
        ("POST", "/mset", {"json": {"items": [{"key": "k", "value": 2},
                                              {"key": key, "value": 1}]}}),
        ("POST", "/incr", {"json": {"key": key}}),
    ]:
        reply = await expect_error(http, url, method, path, 400, "key_too_long", **kwargs)
        assert "1024" in reply.body["message"]


# Bodies every JSON endpoint must reject the same way, with the code it must answer.
MALFORMED_BODIES: list[tuple[str, bytes, str]] = [
    ("truncated", b'{"key": "k", "value":', "malformed_json"),
    ("not-json", b"key=k&value=1", "malformed_json"),
    ("trailing-garbage", b'{"key": "k", "value": 1} x', "malformed_json"),
    ("nan", b'{"key": "k", "value": NaN}', "malformed_json"),
    ("infinity", b'{"key": "k", "value": 1e400}', "malformed_json"),
    ("single-quotes", b"{'key': 'k', 'value': 1}", "malformed_json"),
    ("invalid-utf8", b'{"key": "k\xff", "value": 1}', "malformed_json"),
    ("lone-surrogate", b'{"key": "\\ud800", "value": 1}', "malformed_json"),
    ("empty", b"", "malformed_json"),
    ("array", b'[{"key": "k", "value": 1}]', "malformed_json"),
    ("string", b'"k"', "malformed_json"),
    ("number", b"1", "malformed_json"),
    ("null", b"null", "malformed_json"),
    ("too-deep", b"[" * 2000 + b"]" * 2000, "malformed_json"),
]
JSON_ENDPOINTS = ["/set", "/delete", "/mget", "/mset", "/incr"]


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize(("name", "body", "code"), MALFORMED_BODIES,
                         ids=[b[0] for b in MALFORMED_BODIES])
async def test_malformed_bodies_are_400(
    seeded: str, http: aiohttp.ClientSession, path: str, name: str, body: bytes, code: str
) -> None:
    reply = await expect_error(http, seeded, "POST", path, 400, code, data=body,
                               headers={"Content-Type": "application/json"})
    if name == "empty":
        assert "empty" in reply.body["message"]


async def test_body_with_a_broken_content_encoding_is_400(
    seeded: str, http: aiohttp.ClientSession
) -> None:
    """Regression: a body that is not the gzip its Content-Encoding claims was a 500."""
    before = await store_state(http, seeded, ["k"])
    status, headers, body = await raw_request(
        seeded, raw_post("/set", b"not gzip at all", b"Content-Encoding: gzip\r\n"))
    assert status == 400 and headers["content-type"].startswith("application/json")
    assert orjson.loads(body)["error"] == "malformed_body"
    assert await store_state(http, seeded, ["k"]) == before


async def test_gzip_request_body_is_accepted(node_url: str, http: aiohttp.ClientSession) -> None:
    status, _, body = await raw_request(node_url, raw_post(
        "/set", gzip.compress(b'{"key": "g", "value": [1, 2]}'), b"Content-Encoding: gzip\r\n"))
    assert (status, orjson.loads(body)) == (200, {"stored": True, "key": "g"})
    assert (await fetch(http, node_url, "g")).body["value"] == [1, 2]


async def test_content_type_is_not_required(node_url: str, http: aiohttp.ClientSession) -> None:
    reply = await call(http, "POST", node_url, "/set", data=b'{"key": "k", "value": 1}',
                       headers={"Content-Type": "text/plain"}, expect=200)
    assert reply.body == {"stored": True, "key": "k"}


def _deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


BAD_SET_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("no-key", {"value": 1}, "missing_key"),
    ("null-key", {"key": None, "value": 1}, "missing_key"),
    ("int-key", {"key": 1, "value": 1}, "invalid_key"),
    ("bool-key", {"key": True, "value": 1}, "invalid_key"),
    ("list-key", {"key": ["k"], "value": 1}, "invalid_key"),
    ("object-key", {"key": {"k": 1}, "value": 1}, "invalid_key"),
    ("empty-key", {"key": "", "value": 1}, "invalid_key"),
    ("no-value", {"key": "k"}, "missing_value"),
    ("ttl-string", {"key": "k", "value": 2, "ttl": "10"}, "invalid_ttl"),
    ("ttl-true", {"key": "k", "value": 2, "ttl": True}, "invalid_ttl"),
    ("ttl-false", {"key": "k", "value": 2, "ttl": False}, "invalid_ttl"),
    ("ttl-list", {"key": "k", "value": 2, "ttl": [1]}, "invalid_ttl"),
    ("ttl-zero", {"key": "k", "value": 2, "ttl": 0}, "invalid_ttl"),
    ("ttl-zero-float", {"key": "k", "value": 2, "ttl": 0.0}, "invalid_ttl"),
    ("ttl-negative", {"key": "k", "value": 2, "ttl": -1}, "invalid_ttl"),
    ("ttl-negative-small", {"key": "k", "value": 2, "ttl": -0.001}, "invalid_ttl"),
    ("ttl-over-ten-years", {"key": "k", "value": 2, "ttl": MAX_TTL + 1}, "invalid_ttl"),
    ("ttl-huge-int", {"key": "k", "value": 2, "ttl": 2**64 - 1}, "invalid_ttl"),
    # Regression: a value nested deeper than orjson writes (254 levels) was a 500.
    ("value-too-deep", {"key": "k", "value": _deep(300)}, "invalid_value"),
]


@pytest.mark.parametrize(("name", "body", "code"), BAD_SET_BODIES,
                         ids=[b[0] for b in BAD_SET_BODIES])
async def test_set_rejects_bad_input(
    seeded: str, http: aiohttp.ClientSession, name: str, body: dict[str, Any], code: str
) -> None:
    await expect_error(http, seeded, "POST", "/set", 400, code, json=body)
    assert (await fetch(http, seeded, "k")).body["value"] == {"v": 1}


async def test_value_nested_254_deep_is_stored(node_url: str, http: aiohttp.ClientSession) -> None:
    await put(http, node_url, "deep", _deep(254))
    assert (await fetch(http, node_url, "deep")).body["value"] == _deep(254)


async def test_ttl_accepts_maximum_and_fractions(
    node_url: str, http: aiohttp.ClientSession
) -> None:
    await put(http, node_url, "long", 1, ttl=MAX_TTL)
    assert MAX_TTL - 5 < (await fetch(http, node_url, "long")).body["ttl"] <= MAX_TTL
    await put(http, node_url, "frac", 1, ttl=60.5)
    assert 59 < (await fetch(http, node_url, "frac")).body["ttl"] <= 60.5
    await put(http, node_url, "null", 1, ttl=None)
    assert (await fetch(http, node_url, "null")).body["ttl"] is None


async def test_ttl_expiry(node_url: str, http: aiohttp.ClientSession) -> None:
    # A TTL long enough that the key is surely still there when read back on a busy
    # machine; the sleep only has to outlast it (a longer sleep changes nothing).
    await put(http, node_url, "short", "soon gone", ttl=1.0)
    await call(http, "POST", node_url, "/mset", json={"items": [
        {"key": "m-short", "value": 1, "ttl": 1.0}, {"key": "m-long", "value": 2},
    ]}, expect=200)
    present = await fetch(http, node_url, "short")
    assert present.status == 200 and 0 < present.body["ttl"] <= 1.0
    await asyncio.sleep(1.15)
    assert (await fetch(http, node_url, "short")).status == 404
    assert (await call(http, "POST", node_url, "/mget", json={
        "keys": ["short", "m-short", "m-long"]})).body == {
        "values": {"m-long": 2}, "missing": ["short", "m-short"]}
    assert (await call(http, "DELETE", node_url, "/delete", params={"key": "short"})).body == {
        "deleted": False}
    # An expired counter starts again from zero.
    await call(http, "POST", node_url, "/incr", json={"key": "ctr", "ttl": 0.2}, expect=200)
    await asyncio.sleep(0.35)
    assert (await call(http, "POST", node_url, "/incr", json={"key": "ctr"})).body["value"] == 1


async def test_set_without_ttl_clears_an_expiry(node_url: str, http: aiohttp.ClientSession) -> None:
    await put(http, node_url, "k", 1, ttl=0.2)
    await put(http, node_url, "k", 2)
    await asyncio.sleep(0.3)
    assert (await fetch(http, node_url, "k")).body == {"key": "k", "value": 2, "ttl": None}


@pytest.mark.parametrize(("params", "code"), [
    ({}, "missing_key"), ({"key": ""}, "invalid_key"), ({"other": "k"}, "missing_key"),
])
async def test_get_rejects_bad_keys(
    seeded: str, http: aiohttp.ClientSession, params: dict[str, str], code: str
) -> None:
    await expect_error(http, seeded, "GET", "/get", 400, code, params=params)


async def test_get_with_percent_encoded_unicode_key(
    node_url: str, http: aiohttp.ClientSession
) -> None:
    key = "ключ/with spaces&=?#"
    await put(http, node_url, key, "v")
    assert (await fetch(http, node_url, key)).body["key"] == key


# ---------------------------------------------------------------------------------------------
# Size limits


async def test_value_over_max_value_size_is_413(
    node_factory: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    url = await node_factory(max_value_size=1000)
    await put(http, url, "k", "x" * 998)  # 1000 bytes once encoded, quotes included: at the limit
    await put(http, url, "other", 1)
    reply = await expect_error(http, url, "POST", "/set", 413, "value_too_large",
                               json={"key": "k", "value": "y" * 999}, watch=["k", "other"])
    assert "1000" in reply.body["message"]
    await expect_error(http, url, "POST", "/set", 413, "value_too_large",
                       json={"key": "new", "value": list(range(400))}, watch=["k", "new"])
    await expect_error(http, url, "POST", "/mset", 413, "value_too_large", json={"items": [
        {"key": "other", "value": 2}, {"key": "big", "value": "z" * 2000}]},
        watch=["k", "other", "big"])
    assert (await fetch(http, url, "k")).body["value"] == "x" * 998


async def test_body_over_the_body_limit_is_413(
    node_factory: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    url = await node_factory(max_value_size=1000, max_body_size=4096)
    await put(http, url, "k", {"v": 1})
    big = orjson.dumps({"key": "k", "value": "x" * 5000})
    for path in JSON_ENDPOINTS:
        reply = await expect_error(http, url, "POST", path, 413, "body_too_large", data=big)
        assert "4096" in reply.body["message"]
    # Just under the limit, the body is read and the value limit applies instead.
    await expect_error(http, url, "POST", "/set", 413, "value_too_large",
                       json={"key": "k", "value": "x" * 3000})


def test_document_states_the_limits_the_code_enforces() -> None:
    schemas = DOC["components"]["schemas"]
    defaults = NodeConfig()
    assert schemas["Key"]["maxLength"] == defaults.max_key_size == 1024
    assert schemas["Ttl"]["maximum"] == handlers.MAX_TTL
    for name, field in [("MgetRequest", "keys"), ("MsetRequest", "items")]:
        assert schemas[name]["properties"][field]["maxItems"] == handlers.MAX_BATCH
    seconds = DOC["paths"]["/debug/heap"]["get"]["parameters"][0]["schema"]
    assert seconds["maximum"] == debug.MAX_SECONDS
    description = DOC["info"]["description"]
    assert defaults.max_value_size == 1024**2 and "[1 MiB]" in description
    assert defaults.body_limit == 8 * 1024**2 and "8 MiB" in description


async def test_request_body_not_sent_in_time_is_408(
    node_factory: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    url = await node_factory(request_read_timeout=0.3)
    await put(http, url, "k", {"v": 1})
    before = await store_state(http, url, ["k"])
    # Content-Length promises more than ever arrives.
    body = b'{"key": "k", "value": 2}'
    request = raw_post("/set", body).replace(b"Content-Length: %d" % len(body),
                                             b"Content-Length: %d" % (len(body) + 50))
    status, headers, answer = await raw_request(url, request)
    assert status == 408 and headers["content-type"].startswith("application/json")
    assert orjson.loads(answer)["error"] == "request_timeout"
    check_contract("POST", "/set", status, "application/json", headers, orjson.loads(answer))
    assert await store_state(http, url, ["k"]) == before


# ---------------------------------------------------------------------------------------------
# /delete


async def test_delete_by_query_and_by_body(node_url: str, http: aiohttp.ClientSession) -> None:
    url = node_url
    for method, kwargs in [
        ("DELETE", {"params": {"key": "k"}}),
        ("POST", {"json": {"key": "k"}}),
        ("DELETE", {"json": {"key": "k"}}),  # DELETE without a query key reads the body
    ]:
        await put(http, url, "k", 1)
        assert (await call(http, method, url, "/delete", **kwargs)).body == {"deleted": True}
        assert (await fetch(http, url, "k")).status == 404
        assert (await call(http, method, url, "/delete", **kwargs)).body == {"deleted": False}


async def test_delete_query_key_wins_over_body(node_url: str, http: aiohttp.ClientSession) -> None:
    await put(http, node_url, "a", 1)
    await put(http, node_url, "b", 2)
    reply = await call(http, "DELETE", node_url, "/delete", params={"key": "a"},
                       json={"key": "b"})
    assert reply.body == {"deleted": True}
    assert (await fetch(http, node_url, "a")).status == 404
    assert (await fetch(http, node_url, "b")).status == 200


@pytest.mark.parametrize(("method", "kwargs", "code"), [
    ("DELETE", {}, "missing_key"),
    ("DELETE", {"params": {"key": ""}}, "invalid_key"),
    ("DELETE", {"json": {"nokey": 1}}, "missing_key"),
    ("DELETE", {"data": b"{oops"}, "malformed_json"),
    ("POST", {}, "malformed_json"),
    ("POST", {"json": {}}, "missing_key"),
    ("POST", {"json": {"key": 5}}, "invalid_key"),
    ("POST", {"json": {"key": ""}}, "invalid_key"),
    ("POST", {"json": ["k"]}, "malformed_json"),
])
async def test_delete_rejects_bad_input(
    seeded: str, http: aiohttp.ClientSession, method: str, kwargs: dict[str, Any], code: str
) -> None:
    await expect_error(http, seeded, method, "/delete", 400, code, **kwargs)
    assert (await fetch(http, seeded, "k")).status == 200


# ---------------------------------------------------------------------------------------------
# /mget


async def test_mget_found_missing_and_duplicates(
    node_url: str, http: aiohttp.ClientSession
) -> None:
    await put(http, node_url, "a", 1)
    await put(http, node_url, "b", {"x": [True, None]})
    reply = await call(http, "POST", node_url, "/mget",
                       json={"keys": ["zz", "a", "a", "b", "zz", "yy", "b"]}, expect=200)
    assert reply.body == {"values": {"a": 1, "b": {"x": [True, None]}}, "missing": ["zz", "yy"]}
    assert list(reply.body["values"]) == ["a", "b"]


async def test_mget_of_nothing(node_url: str, http: aiohttp.ClientSession) -> None:
    reply = await call(http, "POST", node_url, "/mget", json={"keys": []}, expect=200)
    assert reply.body == {"values": {}, "missing": []}


async def test_mget_of_the_maximum_batch(node_url: str, http: aiohttp.ClientSession) -> None:
    keys = [f"k{i}" for i in range(10_000)]
    reply = await call(http, "POST", node_url, "/mget", json={"keys": keys}, expect=200)
    assert reply.body["missing"] == keys


@pytest.mark.parametrize(("body", "code", "status"), [
    ({}, "missing_keys", 400),
    ({"keys": None}, "missing_keys", 400),
    ({"keys": "k"}, "invalid_keys", 400),
    ({"keys": {"k": 1}}, "invalid_keys", 400),
    ({"keys": 3}, "invalid_keys", 400),
    ({"keys": ["k", 1]}, "invalid_key", 400),
    ({"keys": ["k", ""]}, "invalid_key", 400),
    ({"keys": ["k", None]}, "missing_key", 400),
    ({"keys": [["k"]]}, "invalid_key", 400),
    ({"keys": [f"k{i}" for i in range(10_001)]}, "batch_too_large", 413),
], ids=["no-keys", "null", "string", "object", "number", "int-elem", "empty-elem", "null-elem",
        "list-elem", "10001-keys"])
async def test_mget_rejects_bad_input(
    seeded: str, http: aiohttp.ClientSession, body: dict[str, Any], code: str, status: int
) -> None:
    await expect_error(http, seeded, "POST", "/mget", status, code, json=body)


# ---------------------------------------------------------------------------------------------
# /mset


async def test_mset_stores_every_item(node_url: str, http: aiohttp.ClientSession) -> None:
    items = [{"key": "a", "value": 1}, {"key": "b", "value": [2], "ttl": 60},
             {"key": "c", "value": None, "ttl": None}, {"key": "a", "value": "last wins"}]
    reply = await call(http, "POST", node_url, "/mset", json={"items": items}, expect=200)
    assert reply.body == {"stored": 4}
    got = await call(http, "POST", node_url, "/mget", json={"keys": ["a", "b", "c"]})
    assert got.body == {"values": {"a": "last wins", "b": [2], "c": None}, "missing": []}
    assert 59 < (await fetch(http, node_url, "b")).body["ttl"] <= 60


async def test_mset_of_nothing(node_url: str, http: aiohttp.ClientSession) -> None:
    assert (await call(http, "POST", node_url, "/mset", json={"items": []})).body == {"stored": 0}


GOOD_ITEMS = [{"key": "g1", "value": "one"}, {"key": "k", "value": "overwritten?"}]
BAD_ITEMS: list[tuple[str, Any, str]] = [
    ("not-object", "g3", "invalid_items"),
    ("list-item", ["g3", 1], "invalid_items"),
    ("null-item", None, "invalid_items"),
    ("no-key", {"value": 1}, "missing_key"),
    ("int-key", {"key": 3, "value": 1}, "invalid_key"),
    ("empty-key", {"key": "", "value": 1}, "invalid_key"),
    ("long-key", {"key": "x" * 1025, "value": 1}, "key_too_long"),
    ("no-value", {"key": "g3"}, "missing_value"),
    ("ttl-string", {"key": "g3", "value": 1, "ttl": "1"}, "invalid_ttl"),
    ("ttl-bool", {"key": "g3", "value": 1, "ttl": True}, "invalid_ttl"),
    ("ttl-zero", {"key": "g3", "value": 1, "ttl": 0}, "invalid_ttl"),
    ("ttl-negative", {"key": "g3", "value": 1, "ttl": -5}, "invalid_ttl"),
    ("too-deep", {"key": "g3", "value": _deep(300)}, "invalid_value"),
]


@pytest.mark.parametrize(("name", "bad", "code"), BAD_ITEMS, ids=[b[0] for b in BAD_ITEMS])
async def test_mset_is_all_or_nothing(
    seeded: str, http: aiohttp.ClientSession, name: str, bad: Any, code: str
) -> None:
    reply = await expect_error(http, seeded, "POST", "/mset", 400, code,
                               json={"items": [*GOOD_ITEMS, bad]}, watch=["k", "g1", "g3"])
    assert reply.body["message"].startswith("items[2]"), reply.body
    got = await call(http, "POST", seeded, "/mget", json={"keys": ["g1", "k", "g3"]})
    assert got.body == {"values": {"k": {"v": 1}}, "missing": ["g1", "g3"]}


@pytest.mark.parametrize(("body", "code", "status"), [
    ({}, "missing_items", 400),
    ({"items": None}, "missing_items", 400),
    ({"items": {"key": "k", "value": 1}}, "invalid_items", 400),
    ({"items": "k"}, "invalid_items", 400),
    ({"items": [{"key": f"k{i}", "value": i} for i in range(10_001)]}, "batch_too_large", 413),
], ids=["no-items", "null", "object", "string", "10001-items"])
async def test_mset_rejects_bad_batches(
    seeded: str, http: aiohttp.ClientSession, body: dict[str, Any], code: str, status: int
) -> None:
    await expect_error(http, seeded, "POST", "/mset", status, code, json=body,
                       watch=["k", "k0", "k1"])


# ---------------------------------------------------------------------------------------------
# /incr


async def test_incr_counts(node_url: str, http: aiohttp.ClientSession) -> None:
    url = node_url

    async def incr(**body: Any) -> Any:
        return (await call(http, "POST", url, "/incr", json={"key": "c", **body},
                           expect=200)).body

    assert await incr() == {"key": "c", "value": 1}
    assert await incr(delta=5) == {"key": "c", "value": 6}
    assert await incr(delta=-10) == {"key": "c", "value": -4}
    assert await incr(delta=0) == {"key": "c", "value": -4}
    assert (await fetch(http, url, "c")).body == {"key": "c", "value": -4, "ttl": None}
    await put(http, url, "c", 41)
    assert await incr() == {"key": "c", "value": 42}


async def test_incr_ttl_applies_to_new_keys_only(
    node_url: str, http: aiohttp.ClientSession
) -> None:
    await call(http, "POST", node_url, "/incr", json={"key": "n", "ttl": 60}, expect=200)
    assert 59 < (await fetch(http, node_url, "n")).body["ttl"] <= 60
    await call(http, "POST", node_url, "/incr", json={"key": "n", "ttl": 1000}, expect=200)
    assert (await fetch(http, node_url, "n")).body["ttl"] <= 60
    await put(http, node_url, "p", 1)
    await call(http, "POST", node_url, "/incr", json={"key": "p", "ttl": 60}, expect=200)
    assert (await fetch(http, node_url, "p")).body["ttl"] is None


async def test_incr_int64_bounds(node_url: str, http: aiohttp.ClientSession) -> None:
    for key, delta in [("max", INT64_MAX), ("min", INT64_MIN)]:
        reply = await call(http, "POST", node_url, "/incr", json={"key": key, "delta": delta})
        assert reply.body == {"key": key, "value": delta}
    for key, delta in [("max", 1), ("min", -1)]:
        reply = await expect_error(http, node_url, "POST", "/incr", 409, "not_an_integer",
                                   json={"key": key, "delta": delta}, watch=["max", "min"])
        assert "64-bit" in reply.body["message"]
    assert (await fetch(http, node_url, "max")).body["value"] == INT64_MAX
    assert (await fetch(http, node_url, "min")).body["value"] == INT64_MIN


@pytest.mark.parametrize("value", ["12", 1.5, 1.0, True, None, [1], {"n": 1}, 2**63],
                         ids=["string", "float", "float-int", "bool", "null", "list", "object",
                              "over-int64"])
async def test_incr_on_a_non_integer_is_409(
    node_url: str, http: aiohttp.ClientSession, value: Any
) -> None:
    await put(http, node_url, "k", value)
    await expect_error(http, node_url, "POST", "/incr", 409, "not_an_integer",
                       json={"key": "k"})
    assert (await fetch(http, node_url, "k")).body["value"] == value


@pytest.mark.parametrize(("body", "code"), [
    ({"key": "k", "delta": 1.5}, "invalid_delta"),
    ({"key": "k", "delta": 1.0}, "invalid_delta"),
    ({"key": "k", "delta": True}, "invalid_delta"),
    ({"key": "k", "delta": False}, "invalid_delta"),
    ({"key": "k", "delta": "1"}, "invalid_delta"),
    ({"key": "k", "delta": None}, "invalid_delta"),
    ({"key": "k", "delta": [1]}, "invalid_delta"),
    ({"key": "k", "delta": 2**63}, "invalid_delta"),
    ({"key": "k", "delta": 2**64 - 1}, "invalid_delta"),
    ({"key": "k", "delta": -(2**63) - 1}, "invalid_delta"),
    ({"key": "k", "delta": 2**64}, "invalid_delta"),
    ({"key": "k", "delta": 10**30}, "invalid_delta"),
    ({"key": "k", "ttl": "5"}, "invalid_ttl"),
    ({"key": "k", "ttl": 0}, "invalid_ttl"),
    ({"key": "k", "ttl": -1}, "invalid_ttl"),
    ({"key": "k", "ttl": False}, "invalid_ttl"),
    ({"delta": 1}, "missing_key"),
    ({"key": 7}, "invalid_key"),
    ({"key": ""}, "invalid_key"),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v))
async def test_incr_rejects_bad_input(
    node_url: str, http: aiohttp.ClientSession, body: dict[str, Any], code: str
) -> None:
    await put(http, node_url, "k", 10)
    await expect_error(http, node_url, "POST", "/incr", 400, code, json=body)
    assert (await fetch(http, node_url, "k")).body["value"] == 10


async def test_incr_is_atomic_under_concurrency(
    node_url: str, http: aiohttp.ClientSession
) -> None:
    n = 200

    async def one(delta: int) -> int:
        reply = await call(http, "POST", node_url, "/incr", json={"key": "hits", "delta": delta},
                           expect=200)
        return int(reply.body["value"])

    results = await asyncio.gather(*(one(1) for _ in range(n)))
    assert sorted(results) == list(range(1, n + 1))  # every increment saw its own value
    results = await asyncio.gather(*(one(d) for d in (3, -2) * 50))
    assert (await fetch(http, node_url, "hits")).body["value"] == n + 50


# ---------------------------------------------------------------------------------------------
# Authentication

DATA_CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/set", {"json": {"key": "k", "value": "stolen"}}),
    ("GET", "/get", {"params": {"key": "k"}}),
    ("DELETE", "/delete", {"params": {"key": "k"}}),
    ("POST", "/delete", {"json": {"key": "k"}}),
    ("POST", "/mget", {"json": {"keys": ["k"]}}),
    ("POST", "/mset", {"json": {"items": [{"key": "k", "value": "stolen"}]}}),
    ("POST", "/incr", {"json": {"key": "n"}}),
    ("GET", "/debug/profile", {"params": {"seconds": "0.1"}}),
    ("GET", "/debug/heap", {"params": {"seconds": "0.1"}}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), DATA_CALLS,
                         ids=[f"{m} {p}" for m, p, _ in DATA_CALLS])
async def test_api_key_is_required(
    seeded: str, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    async with aiohttp.ClientSession() as anonymous:
        for headers, params, why in [
            ({}, {}, "missing"),
            ({"X-API-Key": "wrong"}, {}, "invalid"),
            ({"X-API-Key": API_KEY + "x"}, {}, "invalid"),
            ({"X-API-Key": API_KEY[:-1]}, {}, "invalid"),
            ({}, {"api_key": "wrong"}, "invalid"),
            ({"X-API-Key": "wrong"}, {"api_key": API_KEY}, "invalid"),  # the header wins
            ({"Authorization": "Bearer wrong"}, {}, "invalid"),
            ({"Authorization": f"Basic {API_KEY}"}, {}, "missing"),
            ({"X-API-Key": "wrong", "Authorization": f"Bearer {API_KEY}"}, {}, "invalid"),
        ]:
            before = await state_of(seeded)
            reply = await call(anonymous, method, seeded, path, headers=headers,
                               params={**kwargs.get("params", {}), **params},
                               **{k: v for k, v in kwargs.items() if k != "params"})
            assert (reply.status, reply.body["error"]) == (401, "unauthorized")
            assert why in reply.body["message"]
            assert reply.headers["WWW-Authenticate"].startswith("ApiKey")
            assert await state_of(seeded) == before


async def state_of(url: str) -> Any:
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as keyed:
        return await store_state(keyed, url, ["k", "n"])


async def test_api_key_in_header_or_query_param(seeded: str) -> None:
    async with aiohttp.ClientSession() as anonymous:
        by_header = await call(anonymous, "GET", seeded, "/get", params={"key": "k"},
                               headers={"X-API-Key": API_KEY}, expect=200)
        by_query = await call(anonymous, "GET", seeded, "/get",
                              params={"key": "k", "api_key": API_KEY}, expect=200)
        assert by_header.body == by_query.body == {"key": "k", "value": {"v": 1}, "ttl": None}
        await call(anonymous, "POST", seeded, "/set", params={"api_key": API_KEY},
                   json={"key": "q", "value": 1}, expect=200)
        await call(anonymous, "GET", seeded, "/debug/heap",
                   params={"api_key": API_KEY, "seconds": "0.05"}, expect=200)
        by_bearer = await call(anonymous, "GET", seeded, "/get", params={"key": "k"},
                               headers={"Authorization": f"Bearer {API_KEY}"}, expect=200)
        assert by_bearer.body == by_header.body
        await call(anonymous, "GET", seeded, "/metrics",
                   headers={"Authorization": f"Bearer {API_KEY}"}, expect=200)


async def test_non_utf8_api_key_is_401(seeded: str, http: aiohttp.ClientSession) -> None:
    """Regression: an API key header that is not UTF-8 made the key comparison raise (500)."""
    request = (b"GET /get?key=k HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: \xff\xfe"
               b"\r\nConnection: close\r\n\r\n")
    status, _, body = await raw_request(seeded, request)
    assert status == 401 and orjson.loads(body)["error"] == "unauthorized"
    status, _, body = await raw_request(
        seeded, b"GET /get?key=k&api_key=%FF%FE HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 401 and orjson.loads(body)["error"] == "unauthorized"


async def test_public_endpoints_need_no_key(node_url: str) -> None:
    async with aiohttp.ClientSession() as anonymous:
        for path in ["/healthz", "/readyz", "/openapi.json"]:
            await call(anonymous, "GET", node_url, path, expect=200)
        # With a key configured, the node's state is not public (see test_doors.py).
        for path in ["/metrics", "/status"]:
            await call(anonymous, "GET", node_url, path, expect=401)


async def test_node_without_an_api_key_is_open(node_factory: Callable[..., Any]) -> None:
    url = await node_factory(api_key="")
    async with aiohttp.ClientSession() as anonymous:
        await call(anonymous, "POST", url, "/set", json={"key": "k", "value": 1}, expect=200)
        await call(anonymous, "GET", url, "/get", params={"key": "k"}, expect=200)


# ---------------------------------------------------------------------------------------------
# Routing: 404 and 405


@pytest.mark.parametrize("path", ["/", "/nope", "/get/", "/GET", "/set/x", "/cluster/nope",
                                  "/debug", "/openapi.yaml", "/%ff"])
async def test_unknown_routes_are_404(node_url: str, path: str) -> None:
    async with aiohttp.ClientSession() as anonymous:  # 404 before authentication
        for method in ("GET", "POST"):
            reply = await call(anonymous, method, node_url, path, expect=404)
            assert reply.body["error"] == "not_found"


async def test_cluster_endpoints_are_404_without_clustering(node_url: str) -> None:
    async with aiohttp.ClientSession(headers={"X-DistCache-Cluster-Secret": "s"}) as peer:
        for method, path in [("GET", "/cluster/ring"), ("PUT", "/cluster/ring"),
                             ("GET", "/cluster/status"), ("POST", "/cluster/drain")]:
            reply = await call(peer, method, node_url, path, json={}, expect=404)
            assert reply.body["error"] == "not_found"


WRONG_METHODS: list[tuple[str, str, str]] = [
    ("GET", "/set", "POST"), ("PUT", "/set", "POST"), ("DELETE", "/set", "POST"),
    ("POST", "/get", "GET"), ("PUT", "/get", "GET"), ("HEAD", "/get", "GET"),
    ("GET", "/delete", "DELETE,POST"), ("PATCH", "/delete", "DELETE,POST"),
    ("GET", "/mget", "POST"), ("GET", "/mset", "POST"), ("GET", "/incr", "POST"),
    ("PATCH", "/incr", "POST"), ("POST", "/healthz", "GET,HEAD"),
    ("DELETE", "/readyz", "GET,HEAD"), ("POST", "/metrics", "GET,HEAD"),
    ("PUT", "/openapi.json", "GET,HEAD"), ("POST", "/debug/profile", "GET,HEAD"),
    ("OPTIONS", "/set", "POST"), ("TRACE", "/get", "GET"),
]


@pytest.mark.parametrize(("method", "path", "allow"), WRONG_METHODS,
                         ids=[f"{m} {p}" for m, p, _ in WRONG_METHODS])
async def test_wrong_method_is_405_with_allow(
    seeded: str, method: str, path: str, allow: str
) -> None:
    async with aiohttp.ClientSession() as anonymous:  # 405 before authentication
        reply = await call(anonymous, method, seeded, path, params={"key": "k"},
                           data=b'{"key": "k", "value": 2}', expect=405)
    assert reply.headers["Allow"] == allow
    if method != "HEAD":
        assert reply.body["error"] == "method_not_allowed"
        assert method in reply.body["message"]
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as keyed:
        assert (await fetch(keyed, seeded, "k")).body["value"] == {"v": 1}


async def test_requests_the_http_parser_refuses_get_json_errors(
    node_process: Callable[..., Any],
) -> None:
    """On the real server (`distcache-node`), even errors raised before the app sees a request
    are JSON. Before, aiohttp answered these in text/plain and logged a traceback each."""
    _, url = node_process("--api-key", API_KEY)
    emoji_key = b"%F0%9F%98%80" * 1024  # 1024 characters, 4096 bytes, 12 KiB in the URL
    for request in [
        b"GET /get?key=%b HTTP/1.1\r\nHost: x\r\nX-API-Key: %b\r\n\r\n"
        % (emoji_key, API_KEY.encode()),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %b\r\n\r\n" % (b"a" * 9000),
        b"GARBAGE\r\n\r\n",
        b"GET /get?key=\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /set HTTP/1.1\r\nHost: x\r\nX-API-Key: %b\r\nTransfer-Encoding: chunked"
        b"\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n" % API_KEY.encode(),
    ]:
        status, headers, body = await raw_request(url, request)
        assert status == 400 and headers["content-type"].startswith("application/json")
        error = orjson.loads(body)
        assert error["error"] == "malformed_request" and error["message"], error
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as session:
        await call(session, "GET", url, "/healthz", expect=200)  # and the node carries on


# ---------------------------------------------------------------------------------------------
# Operations endpoints


async def test_healthz(node_url: str, http: aiohttp.ClientSession) -> None:
    assert (await call(http, "GET", node_url, "/healthz", expect=200)).body == {"status": "ok"}


async def test_readyz_ready_and_not_ready(make_config: Callable[..., NodeConfig]) -> None:
    app = create_app(make_config())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/")).rstrip("/")
    try:
        async with aiohttp.ClientSession() as session:
            reply = await call(session, "GET", url, "/readyz", expect=200)
            assert reply.body == {"ready": True, "reason": "single node"}
            app[READY].update(ready=False, reason="joining the ring")
            reply = await call(session, "GET", url, "/readyz", expect=503)
            assert reply.body == {"ready": False, "reason": "joining the ring"}
            await call(session, "GET", url, "/healthz", expect=200)  # alive all the same
    finally:
        await server.close()


# ---------------------------------------------------------------------------------------------
# /debug


BAD_DEBUG_PARAMS: list[tuple[dict[str, str], str]] = [
    ({"seconds": "abc"}, "invalid_seconds"), ({"seconds": "0"}, "invalid_seconds"),
    ({"seconds": "-1"}, "invalid_seconds"), ({"seconds": "61"}, "invalid_seconds"),
    ({"seconds": "nan"}, "invalid_seconds"), ({"seconds": "inf"}, "invalid_seconds"),
    ({"seconds": ""}, "invalid_seconds"),
    ({"seconds": "0.1", "top": "0"}, "invalid_top"),
    ({"seconds": "0.1", "top": "1001"}, "invalid_top"),
    ({"seconds": "0.1", "top": "x"}, "invalid_top"),
    ({"seconds": "0.1", "top": "1.5"}, "invalid_top"),
    ({"seconds": "0.1", "top": "-3"}, "invalid_top"),
    ({"seconds": "0.1", "top": ""}, "invalid_top"),
    ({"seconds": "0.1", "top": "²"}, "invalid_top"),  # regression: isdigit() but not int() (500)
]


@pytest.mark.parametrize("path", ["/debug/profile", "/debug/heap"])
@pytest.mark.parametrize(("params", "code"), BAD_DEBUG_PARAMS,
                         ids=[json.dumps(p, ensure_ascii=False) for p, _ in BAD_DEBUG_PARAMS])
async def test_debug_rejects_bad_params(
    node_url: str, http: aiohttp.ClientSession, path: str, params: dict[str, str], code: str
) -> None:
    reply = await call(http, "GET", node_url, path, params=params, expect=400)
    assert reply.body["error"] == code


# ---------------------------------------------------------------------------------------------
# Rate limiting


async def test_rate_limiter_keys_are_reserved(node_url: str, http) -> None:
    """The limiter keeps its counters in the cache: clients may not read, reset or poison
    them through the data API."""
    reserved = "__ratelimit__:127.0.0.1:1"
    async with http.post(f"{node_url}/set", json={"key": reserved, "value": -10**9}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "invalid_key"
    async with http.post(f"{node_url}/mget", json={"keys": ["ok", reserved]}) as resp:
        assert resp.status == 400
    async with http.post(f"{node_url}/incr", json={"key": reserved, "delta": -5}) as resp:
        assert resp.status == 400
    async with http.get(f"{node_url}/get", params={"key": reserved}) as resp:
        assert resp.status == 400
