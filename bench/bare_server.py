"""The GET anchor: a bare aiohttp JSON handler on uvloop, no middleware, no store, no metrics.

It answers GET /get?key=K with the same shape and size of body as the node's /get, so the
difference between the two is what the node adds on top of aiohttp: auth, validation, the
store, metrics and error handling.

Usage: bare_server.py PORT VALUE_BYTES
"""

from __future__ import annotations

import asyncio
import sys

import orjson
import uvloop
from aiohttp import web


def main() -> None:
    port, value_bytes = int(sys.argv[1]), int(sys.argv[2])
    value = orjson.dumps("v" * (value_bytes - 2))  # a JSON string of value_bytes bytes

    async def handle_get(request: web.Request) -> web.Response:
        key = request.query.get("key", "")
        body = b'{"key":%b,"value":%b,"ttl":null}' % (orjson.dumps(key), value)
        return web.Response(body=body, content_type="application/json")

    async def run() -> None:
        app = web.Application()
        app.router.add_get("/get", handle_get)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    uvloop.run(run())


if __name__ == "__main__":
    main()
