"""PeerClient.apply against real aiohttp servers: the values-outside-JSON batch to a node
that reads it, and plain JSON to a node from before that format (a rolling upgrade)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import orjson
import pytest
from aiohttp import web

from distcache_node.cluster.peers import (
    BATCH_TYPE,
    PeerClient,
    WireEntry,
    decode_batch,
    decode_entries,
)
from support import free_port

ENTRIES: list[WireEntry] = [("a", b'"' + b"x" * 20_000 + b'"', None, 5), ("b", b"[1]", 9.0, 6)]
DELETES = [("c", 7)]

Received = list[tuple[str, list[WireEntry], list[tuple[str, int]]]]


async def _old_node(request: web.Request, seen: Received) -> web.Response:
    """/cluster/apply as a node before BATCH_TYPE read it: the body as JSON whatever its
    Content-Type, and 400 `malformed_json` when it is not."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        seen.append((request.content_type, [], []))
        return web.json_response({"error": "malformed_json", "message": str(exc)}, status=400)
    entries = decode_entries(body.get("entries") or [])
    deletes = [(k, v) for k, v in body.get("deletes") or []]
    seen.append((request.content_type, entries, deletes))
    return web.json_response({"applied": len(entries), "not_held": []})


async def _new_node(request: web.Request, seen: Received) -> web.Response:
    assert request.content_type == BATCH_TYPE
    entries, deletes = decode_batch(await request.read())
    seen.append((request.content_type, entries, deletes))
    return web.json_response({"applied": len(entries), "not_held": []})


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[tuple[PeerClient, Received]]]]:
    runners: list[web.AppRunner] = []
    session = aiohttp.ClientSession()

    async def start(handler: Callable[[web.Request, Received], Awaitable[web.Response]]
                    ) -> tuple[PeerClient, Received]:
        seen: Received = []
        async def route(request: web.Request) -> web.Response:
            return await handler(request, seen)

        app = web.Application()
        app.router.add_post("/cluster/apply", route)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return PeerClient("peer", f"http://127.0.0.1:{port}", session), seen

    yield start
    await session.close()
    for runner in runners:
        await runner.cleanup()


async def test_apply_sends_values_outside_json_to_a_node_that_reads_them(serve) -> None:
    peer, seen = await serve(_new_node)
    assert (await peer.apply(ENTRIES, DELETES))["applied"] == 2
    assert seen == [(BATCH_TYPE, ENTRIES, DELETES)]


async def test_apply_falls_back_to_json_for_a_node_from_before_the_format(serve) -> None:
    peer, seen = await serve(_old_node)
    assert (await peer.apply(ENTRIES, DELETES))["applied"] == 2
    # Refused once as malformed JSON, then sent (and remembered) as JSON.
    assert seen == [(BATCH_TYPE, [], []), ("application/json", ENTRIES, DELETES)]
    assert (await peer.apply(ENTRIES[:1]))["applied"] == 1
    assert seen[2:] == [("application/json", ENTRIES[:1], [])]
