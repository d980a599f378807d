"""Who may read and change what, on real servers: ring adoption is all or nothing, /cluster/*
is for peers only, GET /status is the read-only view behind the API key, /metrics and
/debug/* stay shut without the key, and the rate limiter believes X-Forwarded-For only from
trusted proxies.

The ring tests run a real clustered `distcache-node` process whose ring holds itself.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from distcache_node.client import DistCacheClient
from support import API_KEY, clean_env, free_port, process_output, wait_ready

T = TypeVar("T")

NODE = [sys.executable, "-m", "distcache_node.cli"]
SECRET = "doors-test-secret"
PEER = {"X-DistCache-Cluster-Secret": SECRET}


@dataclass
class Clustered:
    proc: subprocess.Popen[bytes]
    url: str
    ring_path: Path

    def ring(self, version: int, *extra: dict[str, str], url: str | None = None) -> dict[str, Any]:
        return {"version": version, "replication": 2,
                "members": [{"id": "n1", "url": url or self.url, "state": "active"}, *extra]}

    def write_ring(self, doc: Any) -> None:
        tmp = self.ring_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
        tmp.replace(self.ring_path)  # atomically, as a ConfigMap update

    def output(self) -> str:
        return process_output(self.proc)


@pytest.fixture
def clustered(tmp_path: Path) -> Iterator[Clustered]:
    """One node clustered with itself: a ring file naming it, the cluster secret, an API key."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ring_path = tmp_path / "ring.json"
    node = Clustered(None, url, ring_path)  # type: ignore[arg-type]
    node.write_ring(node.ring(1))
    node.proc = subprocess.Popen(
        [*NODE, "--port", str(port), "--node-id", "n1", "--advertise-url", url,
         "--ring-file", str(ring_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=clean_env({"DISTCACHE_API_KEY": API_KEY, "DISTCACHE_CLUSTER_SECRET": SECRET}))
    try:
        wait_ready(node.proc, url)
        yield node
    finally:
        if node.proc.poll() is None:
            node.proc.kill()
        node.proc.wait(timeout=10)


async def _json(session: aiohttp.ClientSession, method: str, url: str,
                **kwargs: Any) -> tuple[int, Any]:
    async with session.request(method, url, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)


async def _status(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    status, body = await _json(http, "GET", f"{url}/status")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def _ready(http: aiohttp.ClientSession, url: str, version: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        body = await _status(http, url)
        if body["ready"] and body["ring_version"] == version:
            return
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def _writes_work(http: aiohttp.ClientSession, url: str, key: str) -> None:
    status, body = await _json(http, "POST", f"{url}/set", json={"key": key, "value": key})
    assert status == 200, body
    status, body = await _json(http, "GET", f"{url}/get", params={"key": key})
    assert (status, body["value"]) == (200, key)


# --- ring adoption: all or nothing ---------------------------------------------------------


async def test_a_pushed_ring_with_a_bad_port_is_refused_and_the_node_keeps_serving(
    clustered: Clustered, http: aiohttp.ClientSession,
) -> None:
    url = clustered.url
    await _ready(http, url, 1)
    await _writes_work(http, url, "before")
    bad = clustered.ring(2, {"id": "n2", "url": "http://a:xx", "state": "active"})
    status, body = await _json(http, "PUT", f"{url}/cluster/ring", json=bad, headers=PEER)
    assert status == 400, body
    assert body["error"] == "invalid_ring"
    assert "'n2'" in body["message"] and "http://a:xx" in body["message"]
    # Its own url broken: refused the same way.
    status, body = await _json(http, "PUT", f"{url}/cluster/ring", headers=PEER,
                               json=clustered.ring(2, url="http://127.0.0.1:99999"))
    assert (status, body["error"]) == (400, "invalid_ring")
    assert "'n1'" in body["message"]
    assert (await _status(http, url))["ring_version"] == 1
    await _writes_work(http, url, "after")
    output = clustered.output()
    assert "Traceback" not in output
    assert "internal error" not in output


async def test_same_version_rings_conflict_unless_identical(
    clustered: Clustered, http: aiohttp.ClientSession,
) -> None:
    url = clustered.url
    await _ready(http, url, 1)
    same = clustered.ring(1)
    status, body = await _json(http, "PUT", f"{url}/cluster/ring", json=same, headers=PEER)
    assert (status, body["accepted"], body["changed"], body["version"]) == (200, True, False, 1)
    other = clustered.ring(1, {"id": "n2", "url": "http://127.0.0.1:9", "state": "joining"})
    status, body = await _json(http, "PUT", f"{url}/cluster/ring", json=other, headers=PEER)
    assert (status, body["error"]) == (409, "ring_conflict"), body
    older = {**clustered.ring(1), "version": 0}
    status, body = await _json(http, "PUT", f"{url}/cluster/ring", json=older, headers=PEER)
    assert (status, body["error"]) == (409, "stale_ring")
    status, ring = await _json(http, "GET", f"{url}/cluster/ring", headers=PEER)
    assert (status, ring) == (200, same)
    newer = clustered.ring(2)
    status, body = await _json(http, "PUT", f"{url}/cluster/ring", json=newer, headers=PEER)
    assert (status, body["changed"], body["version"]) == (200, True, 2)
    await _writes_work(http, url, "k")


async def test_a_bad_ring_file_is_logged_once_and_the_old_ring_kept(
    clustered: Clustered, http: aiohttp.ClientSession,
) -> None:
    url = clustered.url
    await _ready(http, url, 1)
    clustered.write_ring(clustered.ring(2, {"id": "n2", "url": "http://a:xx"}))
    await asyncio.sleep(1.5)  # the watcher polls every 0.5 s
    assert (await _status(http, url))["ring_version"] == 1
    await _writes_work(http, url, "k1")
    clustered.write_ring(clustered.ring(1, {"id": "n2", "url": "http://127.0.0.1:9"}))
    await asyncio.sleep(1.0)
    assert (await _status(http, url))["ring_version"] == 1  # a conflict: kept, too
    clustered.write_ring(clustered.ring(3))  # a good one is still picked up
    await _ready(http, url, 3)
    await _writes_work(http, url, "k2")
    lines = clustered.output().splitlines()
    unusable = [line for line in lines if "unusable, keeping v1" in line]
    assert len(unusable) == 2, lines  # one line per bad file, however long it stays
    assert "'n2'" in unusable[0] and "http://a:xx" in unusable[0]
    assert "differs" in unusable[1]
    assert not any("Traceback" in line for line in lines)


# --- doors ---------------------------------------------------------------------------------


async def test_cluster_endpoints_take_only_peer_credentials(
    clustered: Clustered, http: aiohttp.ClientSession,
) -> None:
    url = clustered.url
    await _ready(http, url, 1)
    async with aiohttp.ClientSession() as anonymous:
        for session, headers in [(anonymous, {}), (http, {}),
                                 (anonymous, {"X-DistCache-Cluster-Secret": "wrong"})]:
            for path in ("/cluster/ring", "/cluster/status", "/cluster/ping"):
                status, body = await _json(session, "GET", f"{url}{path}", headers=headers)
                assert (status, body["error"]) == (403, "forbidden"), (path, headers)
                assert "/status" in body["message"]
            status, _ = await _json(session, "GET", f"{url}/cluster/ring",
                                    params={"api_key": API_KEY}, headers=headers)
            assert status == 403
        for path in ("/cluster/ring", "/cluster/status"):
            status, _ = await _json(anonymous, "GET", f"{url}{path}", headers=PEER)
            assert status == 200


async def test_status_is_the_read_only_view_behind_the_api_key(
    clustered: Clustered, http: aiohttp.ClientSession,
) -> None:
    url = clustered.url
    await _ready(http, url, 1)
    await _writes_work(http, url, "k")
    async with http.get(f"{url}/status") as resp:
        assert resp.status == 200
        assert resp.headers["X-DistCache-Ring-Version"] == "1"
        body = await resp.json()
    assert body["id"] == "n1" and body["url"] == url
    assert (body["state"], body["ready"], body["ring_version"], body["replication"]) == (
        "active", True, 1, 2)
    assert body["keys"] == 1 and body["bytes_used"] > 0 and body["max_memory"] > 0
    assert body["members"] == [{"id": "n1", "url": url, "state": "active", "alive": True,
                                "ready": True}]
    assert body["migration"]["done"] is True
    async with aiohttp.ClientSession() as anonymous:
        for headers in ({}, {"X-API-Key": "wrong"}):
            status, body = await _json(anonymous, "GET", f"{url}/status", headers=headers)
            assert (status, body["error"]) == (401, "unauthorized")
        status, _ = await _json(anonymous, "PUT", f"{url}/status", json={})
        assert status == 405  # read-only
    # The ring-aware client reads its ring there.
    async with DistCacheClient([url], api_key=API_KEY) as cache:
        assert cache.ring is not None and cache.ring.version == 1
        assert cache.owner_url("anything") == url
        await cache.set("via-client", [1, 2])
        assert await cache.get("via-client") == [1, 2]


async def test_status_on_a_standalone_node(
    node_factory: Callable[..., Any], http: aiohttp.ClientSession,
) -> None:
    url = await node_factory(node_id="solo")
    body = await _status(http, url)
    assert (body["id"], body["state"], body["ready"], body["ring_version"]) == (
        "solo", "standalone", True, 0)
    assert body["members"] == [] and body["migration"] is None
    async with DistCacheClient([url], api_key=API_KEY) as cache:  # works there too
        await cache.set("k", 1)
        assert await cache.get("k") == 1


async def test_metrics_need_the_key_unless_made_public(
    node_factory: Callable[..., Any], http: aiohttp.ClientSession,
) -> None:
    keyed, public, open_node = (await node_factory(), await node_factory(metrics_public=True),
                                await node_factory(api_key=""))
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{keyed}/metrics") as resp:
            assert resp.status == 401
            assert (await resp.json())["error"] == "unauthorized"
        for url, session in [(keyed, http), (public, anonymous), (open_node, anonymous)]:
            async with session.get(f"{url}/metrics") as resp:
                assert resp.status == 200
                assert "distcache_keys" in await resp.text()
        async with anonymous.get(f"{keyed}/metrics", params={"api_key": API_KEY}) as resp:
            assert resp.status == 200  # Prometheus: `params: {api_key: [...]}`
        for path in ("/healthz", "/readyz", "/openapi.json"):  # probes, the API description
            async with anonymous.get(f"{keyed}{path}") as resp:
                assert resp.status == 200, path


@pytest.mark.parametrize("path", ["/debug/profile", "/debug/heap"])
async def test_debug_is_disabled_without_an_api_key(
    node_factory: Callable[..., Any], path: str,
) -> None:
    url = await node_factory(api_key="")
    async with aiohttp.ClientSession() as anonymous:
        status, body = await _json(anonymous, "GET", f"{url}{path}", params={"seconds": "0.1"})
    assert (status, body["error"]) == (403, "debug_disabled")
    assert "--api-key" in body["message"]


# --- the rate limiter behind a proxy -------------------------------------------------------


async def _burst(session: aiohttp.ClientSession, url: str, n: int,
                 forwarded: str | None) -> list[int]:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    statuses = []
    for i in range(n):
        async with session.get(f"{url}/get", params={"key": f"k{i}"}, headers=headers) as resp:
            statuses.append(resp.status)
    return statuses


ATTEMPTS = 5


async def _in_one_window(run: Callable[[int], Awaitable[T]]) -> T:
    """run(attempt) within one one-second rate-limit window: started early in a window, and
    tried again (a fresh attempt: new node, new client addresses) when a slow machine made
    it straddle two, where the sliding window would let more through."""
    for attempt in range(ATTEMPTS):
        into = time.time() % 1.0
        if into > 0.3:
            await asyncio.sleep(1.0 - into + 0.01)
        started = time.time()
        result = await run(attempt)
        if int(time.time()) == int(started):
            return result
    raise AssertionError("every attempt straddled two rate-limit windows")


async def test_forwarded_for_counts_only_from_a_trusted_proxy(
    node_factory: Callable[..., Any], http: aiohttp.ClientSession,
) -> None:
    # Behind a trusted proxy: each client its own allowance.
    proxies = [await node_factory(rate_limit=3, trusted_proxies="127.0.0.0/8")
               for _ in range(ATTEMPTS)]

    async def behind_proxy(attempt: int) -> tuple[list[int], list[int], list[int]]:
        url, one, two = proxies[attempt], f"198.51.100.{attempt}", f"203.0.113.{attempt}"
        return (await _burst(http, url, 8, one), await _burst(http, url, 3, two),
                await _burst(http, url, 1, f"{two}, {one}"))

    first, second, spoofed = await _in_one_window(behind_proxy)
    assert 429 in first and first[:3] == [404] * 3
    assert second == [404] * 3, "another client behind the proxy has its own allowance"
    assert spoofed == [429], "the rightmost untrusted hop counts, not what the client wrote"

    # The TCP peer is not trusted: whatever it claims, it is one client.
    directs = [await node_factory(rate_limit=3, trusted_proxies="10.0.0.0/8")
               for _ in range(ATTEMPTS)]

    async def direct(attempt: int) -> tuple[list[int], list[int]]:
        url = directs[attempt]
        return (await _burst(http, url, 8, "198.51.100.1"),
                await _burst(http, url, 2, "198.51.100.2"))

    first, second = await _in_one_window(direct)
    assert 429 in first
    assert second == [429, 429]


def test_invalid_trusted_proxies_exit_2_with_a_clear_message() -> None:
    result = subprocess.run([*NODE, "--trusted-proxies", "10.0.0.0/8,10.1.0.0/33"],
                            capture_output=True, text=True, timeout=30, env=clean_env())
    assert result.returncode == 2
    assert "--trusted-proxies: not an IP network: '10.1.0.0/33'" in result.stderr
    assert "Traceback" not in result.stderr
