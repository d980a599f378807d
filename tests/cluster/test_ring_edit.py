"""A ring edited by hand (or a new replication factor) moves keys without any member
joining or leaving: until every member has placed it, a read must not take a new owner's
miss as final. Real node processes on loopback."""

from __future__ import annotations

import time

import aiohttp

from distcache_node.cluster.ring import RingDoc
from distcache_node.local.runner import FileRingStore, LocalCluster

KEYS = 30_000


async def _settled(session: aiohttp.ClientSession, cluster: LocalCluster, version: int) -> bool:
    for node in cluster.state.nodes:
        async with session.get(f"{node.url}/status") as resp:
            status = await resp.json()
        if status["ring_version"] != version or not status["migration"]["done"]:
            return False
    return True


async def test_a_new_replication_factor_never_answers_a_false_miss(
        make_cluster, client_session) -> None:
    cluster: LocalCluster = await make_cluster(3, replication=2)
    keys = [f"edit:{i}" for i in range(KEYS)]
    urls = [n.url for n in cluster.state.nodes]
    for start in range(0, KEYS, 2000):
        async with client_session.post(f"{urls[0]}/mset", json={"items": [
                {"key": k, "value": k} for k in keys[start:start + 2000]]}) as r:
            assert r.status == 200, await r.text()
    ring = await FileRingStore(cluster.ring_path).load()
    wider = RingDoc(ring.version + 1, 3, ring.members)
    # Pushed to one node only: the others learn it from their peers, as pods that read a
    # ConfigMap each in their own time do.
    async with client_session.put(
            f"{urls[0]}/cluster/ring", json=wider.to_json(),
            headers={"X-DistCache-Cluster-Secret": cluster.state.secret}) as resp:
        assert resp.status == 200, await resp.text()
    misses: dict[str, int] = {}
    rounds = 0
    deadline = time.monotonic() + 60
    while True:
        rounds += 1
        for url in urls:
            for start in range(0, KEYS, 10_000):
                async with client_session.post(f"{url}/mget", json={
                        "keys": keys[start:start + 10_000]}) as resp:
                    assert resp.status == 200, await resp.text()
                    body = await resp.json()
                if body["missing"]:
                    misses[url] = misses.get(url, 0) + len(body["missing"])
        if await _settled(client_session, cluster, wider.version):
            break
        assert time.monotonic() < deadline, "ring v2 did not settle in 60 s"
    assert misses == {}, f"false misses while ring v{wider.version} settled: {misses}"
    # And it did move keys: every node now holds every key (R=3 on 3 nodes).
    for url in urls:
        async with client_session.get(f"{url}/status") as resp:
            assert (await resp.json())["keys"] == KEYS
