"""The ring-aware client's retries, against a real node behind a fault-injecting proxy (both
on loopback sockets): idempotent calls are sent again after a 503 or a connection that broke
after the request left, an incr never is, a node that says it is stopping is kept off until
its /readyz answers again, and retry_for=0 turns every retry off.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from distcache_node.client import CacheError, DistCacheClient
from distcache_node.protocol import STOPPING_HEADER
from support import API_KEY


class FaultProxy:
    """Forwards every request to a real node, except the faults queued per path: "503"
    answers 503 unavailable, "drop" reads the request and closes the connection without an
    answer, "stopping" forwards but marks the answer with the stopping header."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: dict[str, list[str]] = {}
        self.seen: Counter[str] = Counter()
        self.readyz_ok = True
        self.session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen[request.path] += 1
        body = await request.read()
        if request.path == "/readyz" and not self.readyz_ok:
            return web.json_response({"ready": False, "reason": "stopping"}, status=503)
        queued = self.faults.get(request.path) or []
        fault = queued.pop(0) if queued else ""
        if fault == "503":
            return web.json_response({"error": "unavailable", "message": "injected"},
                                     status=503)
        if fault == "drop":
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError("injected drop")
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("x-api-key", "content-type")}
        async with self.session.request(request.method, self.upstream + request.path_qs,
                                        data=body, headers=headers) as resp:
            out = web.Response(body=await resp.read(), status=resp.status,
                               content_type="application/json")
        if fault == "stopping":
            out.headers[STOPPING_HEADER] = "1"
        return out


@pytest.fixture
async def proxy(node_factory: Callable[..., Any]) -> AsyncIterator[tuple[FaultProxy, str]]:
    upstream = await node_factory()
    fp = FaultProxy(upstream)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fp.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    fp.session = aiohttp.ClientSession()
    yield fp, str(server.make_url("")).rstrip("/")
    await fp.session.close()
    await server.close()


async def test_set_is_retried_after_503s_and_lands(proxy: tuple[FaultProxy, str]) -> None:
    fp, url = proxy
    fp.faults["/set"] = ["503", "503"]
    async with DistCacheClient([url], api_key=API_KEY) as cache:
        await cache.set("k", {"v": 1})
        assert fp.seen["/set"] == 3 and cache.retries == 2
        assert await cache.get("k") == {"v": 1}


async def test_get_mget_mset_delete_are_retried_after_a_dropped_connection(
        proxy: tuple[FaultProxy, str]) -> None:
    fp, url = proxy
    async with DistCacheClient([url], api_key=API_KEY) as cache:
        fp.faults["/mset"] = ["drop"]
        assert await cache.mset([("a", 1, None), ("b", 2, None)]) == 2
        fp.faults["/get"] = ["drop"]
        assert await cache.get("a") == 1
        fp.faults["/mget"] = ["drop", "503"]
        assert await cache.mget(["a", "b"]) == {"a": 1, "b": 2}
        fp.faults["/delete"] = ["drop"]
        await cache.delete("a")
        assert await cache.get("a") is None
        assert (fp.seen["/mset"], fp.seen["/mget"], fp.seen["/delete"]) == (2, 3, 2)
        assert cache.retries >= 3  # (aiohttp itself resends a GET or DELETE once on a reused
        # keep-alive connection that broke: those are not counted here)


async def test_incr_is_not_sent_twice_after_a_dropped_connection(
        proxy: tuple[FaultProxy, str]) -> None:
    fp, url = proxy
    async with DistCacheClient([url], api_key=API_KEY) as cache:
        assert await cache.incr("n", 5) == 5
        fp.faults["/incr"] = ["drop"]
        with pytest.raises(ConnectionError, match="may or may not have been applied"):
            await cache.incr("n", 5)
        assert fp.seen["/incr"] == 2  # once each: the dropped one was not resent
        fp.faults["/incr"] = ["503"]
        with pytest.raises(CacheError) as refused:  # a 503 incr is not resent either
            await cache.incr("n", 1)
        assert refused.value.status == 503 and fp.seen["/incr"] == 3


async def test_retry_for_zero_turns_retries_off(proxy: tuple[FaultProxy, str]) -> None:
    fp, url = proxy
    async with DistCacheClient([url], api_key=API_KEY, retry_for=0) as cache:
        fp.faults["/set"] = ["503"]
        with pytest.raises(CacheError) as refused:
            await cache.set("k", 1)
        assert refused.value.status == 503 and fp.seen["/set"] == 1
        fp.faults["/set"] = ["drop"]
        with pytest.raises(ConnectionError):
            await cache.set("k", 2)
        assert fp.seen["/set"] == 2


async def test_a_stopping_node_is_kept_off_until_it_is_ready_again(
        proxy: tuple[FaultProxy, str], node_factory: Callable[..., Any]) -> None:
    fp, url = proxy
    async with DistCacheClient([url], api_key=API_KEY) as cache:
        fp.readyz_ok = False
        fp.faults["/set"] = ["stopping"]
        await cache.set("k", 1)  # the answer counts: a stopping node still serves
        assert cache.avoiding() == []  # a seed, not a ring member: nothing to route around
    # Two ring members: the proxy (stopping) and the real node behind it.
    upstream = fp.upstream
    async with DistCacheClient([url], api_key=API_KEY) as cache:
        cache._urls = {"proxy": url, "node": upstream}
        from distcache_node.cluster.ring import Member, RingDoc
        doc = RingDoc(1, 1, (Member("proxy", url, "active"), Member("node", upstream, "active")))
        cache.ring, cache._target = doc, doc.target()
        keys = [f"k{i}" for i in range(40)]
        on_proxy = [k for k in keys if cache.owner_url(k) == url]
        assert on_proxy
        fp.faults["/set"] = ["stopping"]
        await cache.set(on_proxy[0], 1)
        assert cache.avoiding() == [url]
        before = fp.seen["/set"]
        for key in on_proxy:
            assert cache.owner_url(key) == upstream
            await cache.set(key, 2)
        assert fp.seen["/set"] == before  # all went to the other member
        fp.readyz_ok = True
        for _ in range(50):
            if not cache.avoiding():
                break
            await asyncio.sleep(0.1)
        assert cache.avoiding() == [] and cache.owner_url(on_proxy[0]) == url
