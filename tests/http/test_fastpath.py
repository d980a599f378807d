"""The lean peer client against a real aiohttp server on a real socket."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web

from distcache_node.cluster.fastpath import FastPathError, FastPool
from distcache_node.cluster.peers import PeerClient, PeerError
from support import check_timing, free_port


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
        assert pool.connections_opened == 1  # sequential calls share one kept-alive connection
        big = b"x" * 300_000  # arrives in many chunks
        assert await pool.post("/echo", big) == (200, big)
        await asyncio.sleep(0.6)  # the server closes the idle connection meanwhile
        assert await pool.post("/echo", b"again") == (200, b"again")
        assert seen and set(seen) == {"s3"}
        results = await asyncio.gather(*(pool.post("/echo", b"%d" % i) for i in range(10)))
        assert [body for _, body in results] == [b"%d" % i for i in range(10)]
        assert (await pool.post("/echo?status=409", b"{}"))[0] == 409
        assert await pool.post("/echo?close=1", b"bye") == (200, b"bye")
    finally:
        pool.close()
    # A connection the server closes after its answer is not used again: the next call
    # opens a new one and is answered.
    pool = FastPool(url, {}, None)
    try:
        assert await pool.post("/echo?close=1", b"bye") == (200, b"bye")
        assert await pool.post("/echo", b"next") == (200, b"next")
        assert pool.connections_opened == 2
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


# --- every peer call is bounded ---------------------------------------------------------------


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A URL whose port accepts nothing: a listening socket with backlog 0, its accept queue
    filled by connections nobody accepts, so further SYNs are dropped. A connect there
    waits for the OS connect timeout (minutes) unless the client has its own deadline."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    host, port = server.getsockname()
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex((host, port))
        fillers.append(filler)
    time.sleep(0.1)
    yield f"http://{host}:{port}"
    for sock in [*fillers, server]:
        sock.close()


async def test_connecting_to_a_peer_that_accepts_nothing_times_out(black_hole: str) -> None:
    pool = FastPool(black_hole, {}, None)
    started = time.monotonic()
    with pytest.raises(FastPathError) as exc:
        await pool.post("/cluster/get", b"{}", timeout=0.5)
    check_timing("connect to a black hole given up", time.monotonic() - started, 1.5, 10.0)
    assert not exc.value.refused  # silence is for the heartbeat to judge, not proof of death
    assert "0.5s" in str(exc.value)


async def test_aiohttp_peer_calls_time_out_on_a_peer_that_accepts_nothing(
    black_hole: str,
) -> None:
    async with aiohttp.ClientSession() as session:
        peer = PeerClient("hole", black_hole, session, timeout=0.5)
        for call in (peer.status, lambda: peer.apply([("k", b"1", None, 1)]),
                     lambda: peer.get_many(["k"])):
            started = time.monotonic()
            with pytest.raises(PeerError) as exc:
                await call()
            check_timing("peer call to a black hole given up", time.monotonic() - started,
                         1.5, 10.0)
            assert exc.value.unreachable and not exc.value.refused
        started = time.monotonic()
        with pytest.raises(PeerError):
            async for _ in peer.export("me", 1):
                pass
        check_timing("export from a black hole given up", time.monotonic() - started, 1.5, 10.0)


@pytest.fixture
async def big_server() -> AsyncIterator[str]:
    """/cluster/get, /cluster/status and /cluster/apply answer 200 KB of JSON;
    /cluster/export streams one 200 KB line; /cluster/drain sends its head, then nothing
    until the test ends."""
    release = asyncio.Event()

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b'{"entries":[],"pad":"' + b"x" * 200_000 + b'"}',
                            content_type="application/json")

    async def export(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(20):
            await response.write(b"x" * 10_000)
        await response.write(b"\n")
        await response.write_eof()
        return response

    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await release.wait()
        return response

    app = web.Application()
    app.router.add_post("/cluster/get", big)
    app.router.add_get("/cluster/status", big)
    app.router.add_post("/cluster/export", export)
    app.router.add_post("/cluster/apply", big)
    app.router.add_post("/cluster/drain", stall)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert runner.addresses
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    release.set()
    await runner.cleanup()


async def test_answers_over_the_cap_are_refused(big_server: str) -> None:
    pool = FastPool(big_server, {}, None, max_response=100_000)
    try:
        with pytest.raises(FastPathError) as exc:
            await pool.post("/cluster/get", b"{}")
        assert exc.value.too_large and "100000-byte cap" in str(exc.value)
        opened = pool.connections_opened
        with pytest.raises(FastPathError):  # that connection is not reused: a new one
            await pool.post("/cluster/get", b"{}")
        assert pool.connections_opened == opened + 1
        roomy = FastPool(big_server, {}, None, max_response=300_000)
        status, body = await roomy.post("/cluster/get", b"{}")
        assert status == 200 and len(body) > 200_000
        roomy.close()
    finally:
        pool.close()
    async with aiohttp.ClientSession() as session:
        fast = FastPool(big_server, {}, None, max_response=100_000)
        peer = PeerClient("big", big_server, session, fast=fast, max_response=100_000)
        for call in (peer.status, lambda: peer.get_many(["k"]),
                     lambda: peer.apply([("k", b"1", None, 1)])):
            with pytest.raises(PeerError) as perr:
                await call()
            # The peer answered: not a reason to suspect it.
            assert not perr.value.unreachable and "cap" in str(perr.value)
        with pytest.raises(PeerError) as perr:
            async for _ in peer.export("me", 1):
                pass
        assert "cap" in str(perr.value)
        fast.close()


async def test_a_stalled_answer_times_out(big_server: str) -> None:
    async with aiohttp.ClientSession() as session:
        peer = PeerClient("big", big_server, session, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(PeerError):
            await peer.drain()  # a POST with a body: read within the peer timeout
        check_timing("stalled answer given up", time.monotonic() - started, 1.5, 10.0)
