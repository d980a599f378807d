"""The lean peer client against a real aiohttp server on a real socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from distcache_node.cluster.fastpath import FastPathError, FastPool
from support import free_port


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, list[str]]]:
    """POST /echo answers the body back; the server drops idle keep-alive connections
    after 0.2 s, as a peer restarting or timing out would."""
    seen_secrets: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        seen_secrets.append(request.headers.get("X-Secret", ""))
        body = await request.read()
        if request.query.get("close"):
            return web.Response(body=body, headers={"Connection": "close"})
        if request.query.get("status"):
            return web.Response(body=b'{"error":"x"}', status=int(request.query["status"]))
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, keepalive_timeout=0.2)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", seen_secrets
    await runner.cleanup()


async def test_requests_reuse_connections_and_survive_idle_closes(echo_server) -> None:
    url, seen = echo_server
    pool = FastPool(url, {"X-Secret": "s3"}, None)
    try:
        for i in range(20):
            assert await pool.post("/echo", b'{"n":%d}' % i) == (200, b'{"n":%d}' % i)
        assert len(pool._idle) == 1  # sequential calls share one kept-alive connection
        big = b"x" * 300_000  # arrives in many chunks
        assert await pool.post("/echo", big) == (200, big)
        await asyncio.sleep(0.6)  # the server closes the idle connection meanwhile
        assert await pool.post("/echo", b"again") == (200, b"again")
        assert seen and set(seen) == {"s3"}
        results = await asyncio.gather(*(pool.post("/echo", b"%d" % i) for i in range(10)))
        assert [body for _, body in results] == [b"%d" % i for i in range(10)]
        assert (await pool.post("/echo?status=409", b"{}"))[0] == 409
        assert await pool.post("/echo?close=1", b"bye") == (200, b"bye")
        assert all(not conn.closed for conn in pool._idle)
    finally:
        pool.close()


async def test_refused_connection_is_reported_as_refused() -> None:
    pool = FastPool(f"http://127.0.0.1:{free_port()}", {}, None)
    with pytest.raises(FastPathError) as exc:
        await pool.post("/echo", b"{}")
    assert exc.value.refused


async def test_a_silent_server_times_out() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(5)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = FastPool(f"http://127.0.0.1:{port}", {}, None)
    try:
        with pytest.raises(FastPathError) as exc:
            await pool.post("/echo", b"{}", timeout=0.3)
        assert not exc.value.refused
    finally:
        pool.close()
        server.close()
