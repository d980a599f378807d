"""Reading a request's body in the HTTP edge: whole, within the read timeout, as a JSON
object. Shared by the data handlers and the cluster's peer endpoints."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from distcache_node.appkeys import CONFIG
from distcache_node.errors import TimedOut, bad_request


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
        raise TimedOut("request_timeout", "request body not received in time") from None
    except web.RequestPayloadError as exc:  # e.g. a Content-Encoding the body does not match
        reason = str(exc).strip().splitlines()[-1].strip()
        raise bad_request(f"request body cannot be read: {reason}", "malformed_body") from None
    if not raw:
        raise bad_request("request body is empty; send a JSON object", "malformed_json")
    return raw
