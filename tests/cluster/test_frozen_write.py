"""A write frozen in a stopped node is not applied over the writes that came after it.

A client sends a write to a node that has stopped (its process frozen: a paused node, a long
GC or swap stall): the kernel takes the request into the socket buffer, nothing answers, the
client gives up and writes again elsewhere, and goes on writing. When the node runs again it
reads the old request; coordinated then, it would get a fresh version and overwrite every
newer write: an acknowledged write lost (seen on kind: 4 of 2,840 keys after a worker was
paused 70 s). The client's deadline (X-DistCache-Deadline) makes the node refuse it instead.
Real node processes; the freeze is SIGSTOP / SIGCONT.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
import pytest
from test_failures import held, mget, set_key, target_ring

from conftest import API_KEY
from distcache_node.client import DistCacheClient
from distcache_node.local.runner import LocalCluster
from distcache_node.protocol import DEADLINE_HEADER
from support import eventually


async def test_a_write_frozen_in_a_stopped_node_is_not_applied_over_later_writes(
        make_cluster, client_session: aiohttp.ClientSession) -> None:
    cluster: LocalCluster = await make_cluster(3, replication=2, node_args=[
        "--suspect-after", "1", "--heartbeat-interval", "0.2"])
    frozen, other = cluster.state.nodes[0], cluster.state.nodes[1]
    # A key the frozen node coordinates for the project's client (its primary).
    key = next(k for k in (f"frozen:{i}" for i in range(1000))
               if target_ring(cluster).primary(k) == frozen.id)
    await set_key(client_session, other.url, key, "first")
    client = DistCacheClient([frozen.url], API_KEY, timeout=1.0, retry_for=0)
    await client.refresh()
    assert frozen.pid
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        # The client's attempt at the frozen node, given up after its 1 s timeout.
        with pytest.raises(ConnectionError):
            await client.set(key, "given up")
        # Sent again elsewhere, then newer writes: all acknowledged.
        await set_key(client_session, other.url, key, "given up")
        await set_key(client_session, other.url, key, "newest")
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
        await client.close()
    await cluster.wait_ready([frozen])
    await asyncio.sleep(1.0)  # the frozen request has long been read by now

    async def settled_everywhere() -> bool:
        seen = [await mget(client_session, n.url, [key]) for n in cluster.state.nodes]
        return all(s == {key: "newest"} for s in seen)

    await eventually(settled_everywhere, 20, "every node answers the newest write")
    for node in cluster.state.nodes:
        assert (await held(client_session, cluster, node, [key])).get(key) in (None, "newest")


async def test_a_write_with_a_deadline_passed_is_refused_and_changes_nothing(
        make_cluster, client_session: aiohttp.ClientSession) -> None:
    cluster: LocalCluster = await make_cluster(2, replication=2)
    url = cluster.state.nodes[0].url
    await set_key(client_session, url, "deadline:k", "kept")
    for path, body in (("/set", {"key": "deadline:k", "value": "late"}),
                       ("/mset", {"items": [{"key": "deadline:k", "value": "late"}]}),
                       ("/incr", {"key": "deadline:n"}),
                       ("/delete", {"key": "deadline:k"})):
        async with client_session.post(f"{url}{path}", json=body, headers={
                DEADLINE_HEADER: f"{time.time() - 0.5:.3f}"}) as resp:
            assert resp.status == 408, (path, await resp.text())
            answer = await resp.json()
            assert answer["error"] == "deadline_exceeded", answer
            assert "not applied" in answer["message"]
        async with client_session.post(f"{url}{path}", json=body, headers={
                DEADLINE_HEADER: "soon"}) as resp:
            assert resp.status == 400, (path, await resp.text())
            assert (await resp.json())["error"] == "invalid_deadline"
    assert await mget(client_session, url, ["deadline:k", "deadline:n"]) == {
        "deadline:k": "kept"}
    async with client_session.post(f"{url}/set", json={"key": "deadline:k", "value": "on time"},
                                   headers={DEADLINE_HEADER: f"{time.time() + 5:.3f}"}) as resp:
        assert resp.status == 200, await resp.text()
    assert await mget(client_session, url, ["deadline:k"]) == {"deadline:k": "on time"}


async def test_a_node_stopped_past_the_silence_window_answers_no_read_from_its_stale_copies(
        make_cluster, client_session: aiohttp.ClientSession) -> None:
    """Peers wrote around the stopped node. Reads queued in its sockets while it was stopped
    are answered when it runs again, before any peer's heartbeat has told it: from its own
    copies they would be the values before the stop (seen on kind: 4 stale reads right
    after a paused worker came back). It notices the stop itself (cluster/stall.py)."""
    cluster: LocalCluster = await make_cluster(3, replication=2, node_args=[
        "--suspect-after", "1", "--heartbeat-interval", "0.2"])
    frozen, other = cluster.state.nodes[0], cluster.state.nodes[1]
    ring = target_ring(cluster)
    keys = [k for k in (f"stale:{i}" for i in range(400)) if frozen.id in ring.owners(k)][:40]
    async with client_session.post(f"{other.url}/mset", json={"items": [
            {"key": k, "value": "before"} for k in keys]}) as resp:
        assert resp.status == 200, await resp.text()
    # A connection each, open before the stop, as a client's pool has them: the reads then
    # wait in sockets the node reads as soon as it runs, not in its accept queue.
    assert await asyncio.gather(*(mget(client_session, frozen.url, [k]) for k in keys)) == [
        {k: "before"} for k in keys]
    assert frozen.pid
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(2.5)  # past the silence window: the peers route around it
        async with client_session.post(f"{other.url}/mset", json={"items": [
                {"key": k, "value": "after"} for k in keys]}) as resp:
            assert resp.status == 200, await resp.text()
        # Reads sent to the stopped node wait in its socket.
        reads = [asyncio.create_task(mget(client_session, frozen.url, [k])) for k in keys]
        await asyncio.sleep(0.5)
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    got = {k: v for r in await asyncio.gather(*reads) for k, v in r.items()}
    stale = sorted(k for k in keys if got.get(k) != "after")
    assert not stale, f"{len(stale)} of {len(keys)} reads answered from stale copies: " \
                      f"{[(k, got.get(k)) for k in stale[:5]]}"


async def test_a_write_held_up_past_its_deadline_is_not_re_issued_over_a_newer_one(
        make_cluster, client_session: aiohttp.ClientSession) -> None:
    """A coordinator whose write waits on an owner that stopped answering finds, when it
    looks again, an owner holding a newer version: the client gave up on the old write and
    wrote the key again. Re-issued above that version, as a write whose clock was behind is,
    the old value would bury the newer acknowledged one (seen on kind during a zone outage:
    one key read stale for 13 s)."""
    cluster: LocalCluster = await make_cluster(3, replication=2, node_args=[
        "--suspect-after", "1", "--heartbeat-interval", "0.2", "--peer-timeout", "2"])
    ring = target_ring(cluster)
    coordinator = cluster.state.nodes[0]
    frozen, other = cluster.state.nodes[1], cluster.state.nodes[2]
    # Owned by the node that will stop and the third one, coordinated by the first.
    key = next(k for k in (f"held:{i}" for i in range(2000))
               if ring.owners(k) == [frozen.id, other.id])
    await set_key(client_session, other.url, key, "first")
    assert frozen.pid
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        given_up = asyncio.create_task(client_session.post(
            f"{coordinator.url}/set", json={"key": key, "value": "given up"},
            headers={DEADLINE_HEADER: f"{time.time() + 1:.3f}"}))
        await asyncio.sleep(1.5)  # the client's deadline passed; the peers judged it dead
        await set_key(client_session, other.url, key, "newest")
        async with await given_up as resp:  # the coordinator's own end of the old write
            assert resp.status in (408, 503), await resp.text()
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    await cluster.wait_ready([frozen])

    async def newest_everywhere() -> bool:
        seen = [await mget(client_session, n.url, [key]) for n in cluster.state.nodes]
        return all(s == {key: "newest"} for s in seen)

    await eventually(newest_everywhere, 20, "every node answers the newest write")
