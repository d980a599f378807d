"""A stand-in's copy does not outlive the owner it stood in for. Real node processes.

While an owner is down its writes go to the next member along the ring (a stand-in). When
the owner is back, the stand-in hands those copies over and drops its own: kept, a copy
nobody updates any more (a later delete or write goes to the owners) comes back to life the
day a ring change makes its holder an owner: a deleted key read back with an old value.
"""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
from test_failures import held, mget, peer_view, target_ring

from distcache_node.local.runner import LocalCluster, NodeProc
from support import eventually


async def test_a_stand_in_copy_is_handed_back_and_a_later_delete_stays_deleted(
        make_cluster, client_session: aiohttp.ClientSession) -> None:
    cluster: LocalCluster = await make_cluster(3, replication=2)
    x, leaving, standin = cluster.state.nodes[0], cluster.state.nodes[2], cluster.state.nodes[1]
    ring = target_ring(cluster)
    # Keys owned by x and the node the shrink removes, so the third node stands in for x.
    keys = [k for k in (f"standin:{i}" for i in range(600))
            if ring.preference(k) == [x.id, leaving.id, standin.id]][:40]
    assert len(keys) >= 20
    deleted, rewritten = keys[::2], keys[1::2]

    await asyncio.to_thread(cluster.stop, x)
    async with client_session.post(f"{leaving.url}/mset", json={"items": [
            {"key": k, "value": "while x was down"} for k in keys]}) as resp:
        assert resp.status == 200, await resp.text()
    assert await held(client_session, cluster, standin, keys) == {
        k: "while x was down" for k in keys}, "the writes did not go to the stand-in"

    cluster.spawn(x)
    await cluster.wait_ready([x])
    # The owners are back: these go to x and `leaving`, not to the stand-in.
    for key in deleted:
        async with client_session.post(f"{leaving.url}/delete", json={"key": key}) as resp:
            assert resp.status == 200, await resp.text()
    async with client_session.post(f"{leaving.url}/mset", json={"items": [
            {"key": k, "value": "after x came back"} for k in rewritten]}) as resp:
        assert resp.status == 200, await resp.text()

    async def stand_in_let_go() -> bool:
        return await held(client_session, cluster, standin, keys) == {}

    await eventually(stand_in_let_go, 30, "the stand-in drops the copies it held for x")
    assert await held(client_session, cluster, x, rewritten) == {
        k: "after x came back" for k in rewritten}

    # The shrink makes the former stand-in an owner of these keys.
    await cluster.scale(2)
    want = {k: "after x came back" for k in rewritten}
    for node in cluster.state.nodes:
        assert await mget(client_session, node.url, keys) == want, node.id


async def test_a_node_writes_went_around_takes_its_share_back_deletes_included(
        make_cluster, client_session: aiohttp.ClientSession) -> None:
    """Peers that judged a node dead while it was up (here: frozen past the silence window)
    sent writes and deletes around it. On the ping that finds it again they say so, and it
    takes its share back from them, deletes included: pushing it the values it missed is
    not enough, since a delete leaves no value to push."""
    cluster: LocalCluster = await make_cluster(3, replication=2, node_args=[
        "--suspect-after", "1", "--heartbeat-interval", "0.2"])
    x, others = cluster.state.nodes[0], cluster.state.nodes[1:]
    ring = target_ring(cluster)
    keys = [k for k in (f"around:{i}" for i in range(200)) if x.id in ring.owners(k)][:30]
    async with client_session.post(f"{others[0].url}/mset", json={"items": [
            {"key": k, "value": "before"} for k in keys]}) as resp:
        assert resp.status == 200, await resp.text()
    assert await held(client_session, cluster, x, keys) == dict.fromkeys(keys, "before")

    assert x.pid
    os.kill(x.pid, signal.SIGSTOP)
    try:
        await eventually(lambda: _dead_everywhere(client_session, cluster, x), 30,
                         f"every peer judges the frozen {x.id} dead")
        for key in keys:
            async with client_session.post(f"{others[0].url}/delete",
                                           json={"key": key}) as resp:
                assert resp.status == 200, await resp.text()
    finally:
        os.kill(x.pid, signal.SIGCONT)

    async def forgotten() -> bool:
        return await held(client_session, cluster, x, keys) == {}

    await eventually(forgotten, 30, f"{x.id} learns the deletes made around it")
    await cluster.wait_ready([x])
    assert await mget(client_session, x.url, keys) == {}


async def _dead_everywhere(session: aiohttp.ClientSession, cluster: LocalCluster,
                           node: NodeProc) -> bool:
    views = [await peer_view(session, cluster, viewer, node)
             for viewer in cluster.state.nodes if viewer is not node]
    return not any(view["alive"] for view in views)
