"""A shrink with large values at the nodes' default limits: migration batches are bounded
in bytes, so a rebalance of 48 KiB values settles (a batch of 2000 such entries would be
~100 MB, refused by the receiver's 8 MiB body limit, and the ring would never settle), and
every value arrives intact."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import string

import aiohttp

from distcache_node.local.runner import LocalCluster

KEYS = 900
SIZE = 48 * 1024


def _value(i: int) -> str:
    return "".join(random.Random(i).choices(string.ascii_letters, k=SIZE))


async def test_shrink_with_large_values_settles_and_every_value_arrives(
        make_cluster, client_session: aiohttp.ClientSession) -> None:
    cluster: LocalCluster = await make_cluster(3, replication=2)
    url = cluster.state.nodes[0].url
    for start in range(0, KEYS, 100):
        items = [{"key": f"big:{i}", "value": _value(i)} for i in range(start, start + 100)]
        async with client_session.post(f"{url}/mset", json={"items": items}) as resp:
            assert resp.status == 200, await resp.text()
    # Each of the two that stay sends the other ~300 values (~14 MB): over one body limit.
    await asyncio.wait_for(cluster.scale(2), 60)
    for node in cluster.state.nodes:
        async with client_session.get(f"{node.url}/status") as resp:
            status = await resp.json()
        assert status["migration"]["done"] and status["keys"] == KEYS  # R=2 of 2: all here
    keys = [f"big:{i}" for i in range(KEYS)]
    for node in cluster.state.nodes:
        async with client_session.post(f"{node.url}/mget", json={"keys": keys}) as resp:
            body = await resp.json()
        assert body["missing"] == []
        assert all(body["values"][f"big:{i}"] == _value(i) for i in range(KEYS))


async def test_restarted_node_refills_large_values(
        make_cluster, client_session: aiohttp.ClientSession) -> None:
    """A node that comes back empty takes its share from its peers' /cluster/export before
    it is ready. One export line of 400 values of 200 KiB would be ~80 MB, over the 64 MiB a
    peer reads in one answer: lines are bounded in bytes, so the refill completes."""
    cluster: LocalCluster = await make_cluster(2, replication=2, max_memory="256MiB")
    survivor, victim = cluster.state.nodes
    count, size = 400, 200 * 1024
    for start in range(0, count, 20):
        items = [{"key": f"huge:{i}", "value": _value(i)[:1] * size}
                 for i in range(start, start + 20)]
        async with client_session.post(f"{survivor.url}/mset", json={"items": items}) as resp:
            assert resp.status == 200, await resp.text()
    os.kill(victim.pid, signal.SIGKILL)
    cluster.spawn(victim)
    await cluster.wait_ready([victim], timeout=60)
    async with client_session.get(f"{victim.url}/status") as resp:
        assert (await resp.json())["keys"] == count
    keys = [f"huge:{i}" for i in range(count)]
    async with client_session.post(f"{victim.url}/mget", json={"keys": keys}) as resp:
        values = (await resp.json())["values"]
    assert all(values.get(f"huge:{i}") == _value(i)[:1] * size for i in range(count))
