"""Scale churn 3 -> 5 -> 2 -> 4 with 10,000 keys: none lost, TTLs kept. And the command
itself, `distcache local scale`: a shrink by several members at once drains them first, a
shrink the rest cannot hold is refused and changes nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp

from distcache_node.local.runner import ClusterState, FileRingStore, LocalCluster
from support import clean_env

KEYS = 10_000


async def _mset(session: aiohttp.ClientSession, url: str, items: list[dict]) -> None:
    for start in range(0, len(items), 1000):
        async with session.post(f"{url}/mset", json={"items": items[start:start + 1000]}) as r:
            assert r.status == 200, await r.text()


async def _check_all(session: aiohttp.ClientSession, cluster: LocalCluster) -> None:
    keys = [f"churn:{i}" for i in range(KEYS)]
    for node in cluster.state.nodes:
        async with session.post(f"{node.url}/mget", json={"keys": keys}) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["missing"] == [], f"{node.id} misses {len(body['missing'])} keys"
        assert body["values"] == {f"churn:{i}": i for i in range(KEYS)}
    # TTLs survive migration: keys with a TTL still have a sane remaining TTL.
    url = cluster.state.nodes[-1].url
    for i in range(0, KEYS, 997):
        async with session.get(f"{url}/get", params={"key": f"churn:{i}"}) as resp:
            ttl = (await resp.json())["ttl"]
        if i % 2:
            assert ttl is not None and 0 < ttl <= 3600
        else:
            assert ttl is None


async def test_scale_churn_loses_nothing(make_cluster, client_session) -> None:
    cluster: LocalCluster = await make_cluster(3)
    items = [{"key": f"churn:{i}", "value": i, **({"ttl": 3600} if i % 2 else {})}
             for i in range(KEYS)]
    await _mset(client_session, cluster.state.nodes[0].url, items)
    for size in (5, 2, 4):
        await cluster.scale(size)
        assert len(cluster.state.nodes) == size
        await _check_all(client_session, cluster)
        total = 0
        for node in cluster.state.nodes:
            async with client_session.get(f"{node.url}/status") as resp:
                status = await resp.json()
            assert status["migration"]["done"]
            total += status["keys"]
        # Exactly R copies of every key once settled: old copies were dropped.
        assert total == 2 * KEYS


def _local_scale(cluster: LocalCluster, nodes: int,
                 *flags: str) -> subprocess.CompletedProcess[str]:
    """`distcache local scale` as a user runs it, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "distcache_node.local.cli", "local", "scale", "--dir",
         str(cluster.dir), "--nodes", str(nodes), *flags],
        capture_output=True, text=True, timeout=240, env=clean_env())


async def test_local_scale_shrinking_two_at_replication_two_drains_them_and_loses_no_key(
        make_cluster, client_session) -> None:
    """4 -> 2 at R=2: about a sixth of the keys have both copies on the two that leave, so
    a shrink that stopped them (or took them out of the ring) before their drain loses
    keys here."""
    cluster: LocalCluster = await make_cluster(4, replication=2)
    items = [{"key": f"churn:{i}", "value": i} for i in range(KEYS)]
    await _mset(client_session, cluster.state.nodes[0].url, items)
    gone = cluster.state.nodes[2:]
    done = await asyncio.to_thread(_local_scale, cluster, 2)
    assert done.returncode == 0, done.stdout + done.stderr
    cluster.state = ClusterState.load(cluster.dir)
    assert [n.id for n in cluster.state.nodes] == ["node-0", "node-1"]
    assert not any(cluster.alive(n) for n in gone)
    ring = await FileRingStore(cluster.ring_path).load()
    assert [(m.id, m.state) for m in ring.members] == [("node-0", "active"),
                                                       ("node-1", "active")]
    keys = [f"churn:{i}" for i in range(KEYS)]
    for node in cluster.state.nodes:
        async with client_session.post(f"{node.url}/mget", json={"keys": keys}) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["missing"] == [], f"{node.id} misses {len(body['missing'])} keys"
        async with client_session.get(f"{node.url}/status") as resp:
            assert (await resp.json())["keys"] == KEYS  # R=2 on 2 nodes: each has all
    # What the command said, step by step: leaving, drained, removed, stopped.
    assert "node-2, node-3 leaving" in done.stdout
    assert "node-2, node-3 drained: removing from the ring" in done.stdout
    assert done.stdout.rstrip().endswith("settled at 2 nodes")


async def test_local_scale_refuses_a_shrink_the_rest_cannot_hold_and_changes_nothing(
        make_cluster, client_session) -> None:
    # About 4 MiB of values over 3 nodes of 4 MiB at R=2: 2.7 MiB each now, 4 MiB each
    # on 2 nodes, more than 85% of their limit.
    cluster: LocalCluster = await make_cluster(3, replication=2, max_memory="4MiB")
    value = "x" * 8000
    await _mset(client_session, cluster.state.nodes[0].url,
                [{"key": f"big:{i}", "value": value} for i in range(500)])
    before = await FileRingStore(cluster.ring_path).load()
    refused = await asyncio.to_thread(_local_scale, cluster, 2)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.startswith("refusing to shrink to 2 node(s): the 2 remaining "
                                     "member(s) cannot hold the data"), refused.stderr
    assert "nothing changed" in refused.stderr and "--force" in refused.stderr
    assert await FileRingStore(cluster.ring_path).load() == before
    assert len(ClusterState.load(cluster.dir).nodes) == 3
    assert all(cluster.alive(n) for n in cluster.state.nodes)
    # --force accepts the evictions: the shrink goes through.
    forced = await asyncio.to_thread(_local_scale, cluster, 2, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert forced.stdout.rstrip().endswith("settled at 2 nodes")
