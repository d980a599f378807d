"""The Redis protocol on a 3-node local cluster of real `distcache-node` processes: any node
answers any key over RESP (forwarding to its owners), MGET/MSET/DEL span owners, counters
stay exact with increments arriving through every node, and a value written over one
protocol through one node reads the same over the other through another."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio as aredis

from distcache_node.local.runner import LocalCluster
from support import free_port_range

API_KEY = "resp-cluster-key"


@pytest.fixture
async def resp_cluster(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[LocalCluster]]]:
    clusters: list[LocalCluster] = []

    async def make(nodes: int = 3, tls: bool = False) -> LocalCluster:
        cluster = LocalCluster.create(tmp_path / f"c{len(clusters)}", free_port_range(nodes),
                                      API_KEY, 2, tls, "64MiB",
                                      resp_base_port=free_port_range(nodes))
        clusters.append(cluster)
        await cluster.up(nodes)
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop_all()
        await cluster.close()


def clients(cluster: LocalCluster, **kwargs: object) -> list[redis.Redis]:
    return [redis.Redis(host="127.0.0.1", port=n.resp_port, password=API_KEY,
                        socket_timeout=20, **kwargs)  # type: ignore[arg-type]
            for n in cluster.state.nodes]


def http_get(url: str, key: str) -> object:
    request = urllib.request.Request(f"{url}/get?key={key}", headers={"X-API-Key": API_KEY})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())["value"]


def http_set(url: str, key: str, value: object) -> None:
    request = urllib.request.Request(
        url + "/set", data=json.dumps({"key": key, "value": value}).encode(),
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


async def test_any_node_answers_any_key(resp_cluster: Callable[..., Awaitable[LocalCluster]],
                                        ) -> None:
    cluster = await resp_cluster()
    nodes = clients(cluster)
    for i in range(300):
        assert nodes[i % 3].set(f"k{i}", f"v{i}") is True
    for r in nodes:  # every key through every node: most are owned elsewhere
        pipe = r.pipeline(transaction=False)
        for i in range(300):
            pipe.get(f"k{i}")
        assert pipe.execute() == [f"v{i}".encode() for i in range(300)]
        assert r.mget([f"k{i}" for i in range(300)] + ["none"]) == (
            [f"v{i}".encode() for i in range(300)] + [None])
        assert r.exists(*[f"k{i}" for i in range(300)]) == 300
    assert nodes[1].mset({f"m{i}": str(i) for i in range(200)}) is True  # split by owner
    assert nodes[2].mget([f"m{i}" for i in range(200)]) == [str(i).encode() for i in range(200)]
    assert nodes[0].delete(*[f"k{i}" for i in range(0, 300, 2)]) == 150
    for r in nodes:
        assert r.exists(*[f"k{i}" for i in range(300)]) == 150
        assert r.get("k0") is None and r.get("k1") == b"v1"
    assert nodes[0].expire("k1", 100) is True
    assert 99 <= nodes[2].ttl("k1") <= 100
    assert nodes[1].persist("k1") is True and nodes[0].ttl("k1") == -1
    assert nodes[2].getdel("k3") == b"v3" and nodes[0].get("k3") is None
    assert nodes[1].append("k5", "!") == 3 and nodes[2].get("k5") == b"v5!"


async def test_counters_through_every_node_stay_exact(
        resp_cluster: Callable[..., Awaitable[LocalCluster]]) -> None:
    cluster = await resp_cluster()
    pools = [aredis.Redis(host="127.0.0.1", port=n.resp_port, password=API_KEY,
                          socket_timeout=20) for n in cluster.state.nodes]
    try:
        async def bump(r: aredis.Redis, times: int) -> None:
            for _ in range(times):
                await r.incr("counter")

        await asyncio.gather(*(bump(pools[i % 3], 50) for i in range(12)))
        for r in pools:
            assert await r.get("counter") == b"600"
    finally:
        for r in pools:
            await r.aclose()


async def test_values_cross_protocols_and_nodes(
        resp_cluster: Callable[..., Awaitable[LocalCluster]]) -> None:
    cluster = await resp_cluster()
    nodes = clients(cluster)
    urls = [n.url for n in cluster.state.nodes]
    nodes[0].set("text", "Alice")
    nodes[0].set("number", "7")
    nodes[0].set("binary", b"\x00\xff")
    assert http_get(urls[1], "text") == "Alice"
    assert http_get(urls[2], "number") == 7
    assert http_get(urls[1], "binary") == {"$bytes": "AP8="}
    http_set(urls[2], "obj", {"a": [1, None]})
    assert nodes[1].get("obj") == b'{"a":[1,null]}'
    assert nodes[2].incr("number") == 8 and http_get(urls[0], "number") == 8


async def test_resp3_and_redis_cli_through_every_node(
        resp_cluster: Callable[..., Awaitable[LocalCluster]]) -> None:
    cluster = await resp_cluster()
    nodes = clients(cluster, protocol=3)
    nodes[2].set("user:1", "Alice")
    redis_cli = shutil.which("redis-cli")
    assert redis_cli, "redis-cli (Debian's redis-tools) is needed"
    for node, r in zip(cluster.state.nodes, nodes, strict=True):
        assert r.get("user:1") == b"Alice" and r.get("none") is None
        argv = [redis_cli, "-p", str(node.resp_port), "-a", API_KEY, "--no-auth-warning",
                "GET", "user:1"]
        out = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True,
                                      timeout=30)
        assert out.stdout == "Alice\n", out
        info = r.info("replication")
        assert info["distcache_cluster"] == 1 and info["distcache_replication_factor"] == 2


async def test_tls_cluster(resp_cluster: Callable[..., Awaitable[LocalCluster]]) -> None:
    cluster = await resp_cluster(tls=True)
    ca = str(cluster.tls_dir / "ca.pem")
    nodes = clients(cluster, ssl=True, ssl_ca_certs=ca)
    nodes[0].mset({f"t{i}": str(i) for i in range(50)})
    for r in nodes:
        assert r.mget([f"t{i}" for i in range(50)]) == [str(i).encode() for i in range(50)]


async def test_a_write_without_its_quorum_is_tryagain_and_the_connection_stays(
        resp_cluster: Callable[..., Awaitable[LocalCluster]]) -> None:
    """With two of three nodes gone, no write can reach the two replicas it needs: RESP
    answers Redis Cluster's -TRYAGAIN (HTTP's 503), nothing is acknowledged, and the
    connection keeps serving."""
    cluster = await resp_cluster()
    survivor = clients(cluster)[0]
    for node in cluster.state.nodes[1:]:
        os.kill(node.pid, signal.SIGKILL)
    with pytest.raises(redis.exceptions.TryAgainError, match="replicas needed; not stored"):
        for i in range(20):  # some key's write needs a dead owner
            survivor.set(f"w{i}", "v")
    assert survivor.ping() is True

