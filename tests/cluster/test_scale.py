"""Scale churn 3 -> 5 -> 2 -> 4 with 10,000 keys: none lost, TTLs kept."""

from __future__ import annotations

import aiohttp

from distcache_node.local.runner import LocalCluster

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
