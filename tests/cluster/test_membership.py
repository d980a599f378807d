"""Failure detection, ring distribution (push, file, gossip), drain and the ring-aware
client, on real node processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
import orjson

from distcache_node.client import DistCacheClient
from distcache_node.cluster.ring import RingDoc
from distcache_node.local.runner import FileRingStore, LocalCluster
from support import check_timing, eventually


async def _status(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(f"{url}/status") as resp:
        assert resp.status == 200
        return await resp.json()


def _member(status: dict, member_id: str) -> dict:
    return next(m for m in status["members"] if m["id"] == member_id)


async def test_sigkilled_node_is_routed_around_within_3s(make_cluster, client_session) -> None:
    cluster: LocalCluster = await make_cluster(3)
    first, _, victim = cluster.state.nodes
    items = [{"key": f"d{i}", "value": i} for i in range(300)]
    async with client_session.post(f"{first.url}/mset", json={"items": items}) as resp:
        assert resp.status == 200
    os.kill(victim.pid, signal.SIGKILL)
    killed = time.monotonic()

    async def routed_around() -> bool:
        return not _member(await _status(client_session, first.url), victim.id)["alive"]

    await eventually(routed_around, 60, "the SIGKILLed node routed around")
    # Detection within 3 s is the product's promise (a refused connection convicts at once,
    # and heartbeats run every second); on an overloaded machine the poll and the heartbeat
    # both wait for a CPU, so there only a looser bound is asserted (with a warning giving
    # the real figure). `make bench` measures it on a quiet machine.
    check_timing("SIGKILL to routed around", time.monotonic() - killed, 3.0, 15.0)
    # Every key still reads, and writes still reach a quorum on the survivors.
    keys = [f"d{i}" for i in range(300)]
    async with client_session.post(f"{first.url}/mget", json={"keys": keys}) as resp:
        assert (await resp.json())["missing"] == []
    async with client_session.post(f"{first.url}/set", json={"key": "new", "value": 1}) as resp:
        assert resp.status == 200


async def test_write_without_quorum_is_refused_not_acknowledged(
    make_cluster, client_session
) -> None:
    cluster: LocalCluster = await make_cluster(2)
    survivor, victim = cluster.state.nodes
    os.kill(victim.pid, signal.SIGKILL)
    await asyncio.sleep(0.2)
    async with client_session.post(f"{survivor.url}/set", json={"key": "k", "value": 1}) as r:
        assert r.status == 503
        body = await r.json()
        assert body["error"] == "unavailable" and "replicas" in body["message"]


async def test_ring_push_rules(make_cluster, client_session) -> None:
    cluster: LocalCluster = await make_cluster(2)
    url = cluster.state.nodes[0].url
    peer_headers = {"X-DistCache-Cluster-Secret": cluster.state.secret}
    ring = await FileRingStore(cluster.ring_path).load()
    stale = RingDoc(0, ring.replication, ring.members).to_json()
    async with client_session.put(f"{url}/cluster/ring", json=stale,
                                  headers=peer_headers) as resp:
        assert resp.status == 409
    async with client_session.put(f"{url}/cluster/ring", json={"version": "x"},
                                  headers=peer_headers) as resp:
        assert resp.status == 400
    async with client_session.put(f"{url}/cluster/ring", json=ring.to_json()) as resp:
        assert resp.status == 403  # the data API key alone cannot change the ring
    async with client_session.get(f"{url}/cluster/ring", headers=peer_headers) as resp:
        assert (await resp.json())["version"] == ring.version


async def test_ring_file_replaced_atomically_is_picked_up(make_cluster, client_session) -> None:
    cluster: LocalCluster = await make_cluster(2)
    store = FileRingStore(cluster.ring_path)
    ring = await store.load()
    await store.save(RingDoc(ring.version + 5, ring.replication, ring.members), ring)
    for node in cluster.state.nodes:
        async def picked_up(url: str = node.url) -> bool:
            return bool((await _status(client_session, url))["ring_version"] == ring.version + 5)

        await eventually(picked_up, 30, f"{node.id} follows the replaced ring file")
    # A broken file is ignored, the node keeps its ring.
    cluster.ring_path.write_text("{not json")
    await asyncio.sleep(1.0)
    assert (await _status(client_session, cluster.state.nodes[0].url))["ring_version"] == (
        ring.version + 5)


async def test_drain_hands_every_key_on_and_keeps_serving(make_cluster, client_session) -> None:
    cluster: LocalCluster = await make_cluster(3)
    nodes = cluster.state.nodes
    items = [{"key": f"dr{i}", "value": i} for i in range(3000)]
    async with client_session.post(f"{nodes[0].url}/mset", json={"items": items}) as resp:
        assert resp.status == 200
    leaving = nodes[2]
    before = (await _status(client_session, leaving.url))["keys"]
    assert before > 0
    async with client_session.post(
        f"{leaving.url}/cluster/drain",
        headers={"X-DistCache-Cluster-Secret": cluster.state.secret},
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["state"] == "leaving"
    async def drained() -> dict | None:
        status = await _status(client_session, leaving.url)
        return status if status["keys"] == 0 and status["migration"]["done"] else None

    status = await eventually(drained, 90, f"{leaving.id} drained", 0.1)
    # Each of its keys needed one new copy, sent once by the partner that keeps it; the
    # leaving node itself had nothing to send while its partners were up.
    assert status["migration"]["keys_moved"] == 0
    moved = [(await _status(client_session, n.url))["migration"]["keys_moved"]
             for n in nodes[:2]]
    assert sum(moved) == before and all(moved)
    keys = [f"dr{i}" for i in range(3000)]
    for node in nodes:  # the leaving node still serves, by forwarding
        async with client_session.post(f"{node.url}/mget", json={"keys": keys}) as resp:
            assert (await resp.json())["missing"] == []
    # The other two now hold both copies of everything.
    remaining = [(await _status(client_session, n.url))["keys"] for n in nodes[:2]]
    assert remaining == [3000, 3000]


async def test_ring_aware_client_routes_to_owners_and_follows_scale(
    make_cluster, cluster_api_key: str
) -> None:
    cluster: LocalCluster = await make_cluster(3)
    async with DistCacheClient([cluster.state.nodes[0].url], api_key=cluster_api_key) as cache:
        await cache.set("alpha", {"x": 1}, ttl=60)
        assert await cache.get("alpha") == {"x": 1}
        assert await cache.get("nope", "dflt") == "dflt"
        assert await cache.incr("n", 5) == 5
        await cache.mset((f"c{i}", i, None) for i in range(500))
        assert await cache.mget([f"c{i}" for i in range(500)]) == {f"c{i}": i for i in range(500)}
        assert await cache.delete("alpha") is True
        owners = {cache.owner_url(f"c{i}") for i in range(500)}
        assert len(owners) == 3
        version = cache.ring.version
        await cluster.scale(4)
        await cache.get("c1")  # any response carries the new ring version...

        async def refreshed() -> bool:
            return cache.ring.version > version

        await eventually(refreshed, 30, "the client refreshes its ring")
        assert len(cache.ring.members) == 4  # ...and the client refreshed
        assert await cache.mget([f"c{i}" for i in range(500)]) == {f"c{i}": i for i in range(500)}


async def test_rate_limit_is_cluster_wide(make_cluster, client_session) -> None:
    cluster: LocalCluster = await make_cluster(3, node_args=["--rate-limit", "10"])
    urls = [n.url for n in cluster.state.nodes]

    async def get(i: int) -> int:
        async with client_session.get(f"{urls[i % 3]}/get", params={"key": "x"}) as resp:
            if resp.status == 429:
                assert int(resp.headers["Retry-After"]) >= 1
                assert orjson.loads(await resp.read())["error"] == "rate_limited"
            return resp.status

    # 60 requests at once, spread over every node: a limit per node would let 30 through.
    started = time.monotonic()
    statuses = await asyncio.gather(*(get(i) for i in range(60)))
    took = time.monotonic() - started
    allowed = statuses.count(404)
    assert statuses.count(429) == 60 - allowed
    # One shared counter: 10 per sliding second in total. The burst usually takes a fraction
    # of a second; on a busy machine it can straddle more of the window, which lets through
    # 10 more per extra second: allow for the time it really took rather than assume it.
    assert 8 <= allowed <= 10 * (1 + took) + 4, (took, statuses)


async def test_restarted_node_takes_its_share_back_before_it_is_ready(
    make_cluster, client_session
) -> None:
    cluster: LocalCluster = await make_cluster(3)
    nodes = cluster.state.nodes
    keys = [f"rf{i}" for i in range(2000)]
    items = [{"key": k, "value": k} for k in keys]
    async with client_session.post(f"{nodes[0].url}/mset", json={"items": items}) as resp:
        assert resp.status == 200
    victim = nodes[1]
    ring = (await FileRingStore(cluster.ring_path).load()).target()
    share = sum(1 for k in keys if victim.id in ring.owners(k))
    os.kill(victim.pid, signal.SIGKILL)
    await asyncio.sleep(0.5)
    # Written while it is down: must reach it too, through the refill.
    async with client_session.post(f"{nodes[0].url}/set",
                                   json={"key": "while-down", "value": 1}) as resp:
        assert resp.status == 200
    cluster.spawn(victim)
    await cluster.wait_ready([victim])  # /readyz says 200 only after the refill
    status = await _status(client_session, victim.url)
    expected = share + (victim.id in ring.owners("while-down"))
    assert status["keys"] == expected, (status["keys"], expected, status["reason"])
    assert status["reason"].startswith("refilled")


async def test_rate_limiter_fails_open_when_its_counters_lose_quorum(
    make_cluster, client_session
) -> None:
    cluster: LocalCluster = await make_cluster(2, node_args=["--rate-limit", "1000"])
    survivor, victim = cluster.state.nodes
    async with client_session.post(f"{survivor.url}/set", json={"key": "k", "value": 1}) as r:
        assert r.status == 200
    os.kill(victim.pid, signal.SIGKILL)
    await asyncio.sleep(0.3)
    # The counter's incr cannot reach 2 replicas now, but reads are still served.
    async with client_session.get(f"{survivor.url}/get", params={"key": "k"}) as resp:
        assert resp.status == 200, await resp.text()
        assert "X-RateLimit-Limit" not in resp.headers
