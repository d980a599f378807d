"""Three real node processes: any node serves any key."""

from __future__ import annotations

import aiohttp

from distcache_node.local.runner import LocalCluster


async def test_write_through_one_read_through_every_node(
    make_cluster, client_session: aiohttp.ClientSession
) -> None:
    cluster: LocalCluster = await make_cluster(3)
    urls = [n.url for n in cluster.state.nodes]
    for i in range(50):
        async with client_session.post(f"{urls[0]}/set",
                                       json={"key": f"user:{i}", "value": {"n": i}}) as resp:
            assert resp.status == 200, await resp.text()
    for url in urls:
        for i in range(50):
            async with client_session.get(f"{url}/get", params={"key": f"user:{i}"}) as resp:
                assert resp.status == 200
                assert (await resp.json())["value"] == {"n": i}
    # Each key is on exactly R=2 nodes.
    total = 0
    for url in urls:
        async with client_session.get(f"{url}/status") as resp:
            total += (await resp.json())["keys"]
    assert total == 100


async def test_mget_mset_across_owners(make_cluster, client_session) -> None:
    cluster: LocalCluster = await make_cluster(3)
    urls = [n.url for n in cluster.state.nodes]
    items = [{"key": f"k{i}", "value": i, "ttl": 600} for i in range(300)]
    async with client_session.post(f"{urls[1]}/mset", json={"items": items}) as resp:
        assert resp.status == 200
        assert await resp.json() == {"stored": 300}
    keys = [f"k{i}" for i in range(300)] + ["absent"]
    async with client_session.post(f"{urls[2]}/mget", json={"keys": keys}) as resp:
        body = await resp.json()
    assert body["values"] == {f"k{i}": i for i in range(300)}
    assert body["missing"] == ["absent"]
    async with client_session.get(f"{urls[0]}/get", params={"key": "k7"}) as resp:
        ttl = (await resp.json())["ttl"]
    assert 590 < ttl <= 600


async def test_incr_is_atomic_cluster_wide(make_cluster, client_session) -> None:
    import asyncio

    cluster: LocalCluster = await make_cluster(3)
    urls = [n.url for n in cluster.state.nodes]

    async def bump(i: int) -> None:
        async with client_session.post(f"{urls[i % 3]}/incr", json={"key": "hits"}) as resp:
            assert resp.status == 200

    await asyncio.gather(*(bump(i) for i in range(90)))
    async with client_session.get(f"{urls[2]}/get", params={"key": "hits"}) as resp:
        assert (await resp.json())["value"] == 90


async def test_delete_reaches_every_replica(make_cluster, client_session) -> None:
    cluster: LocalCluster = await make_cluster(3)
    urls = [n.url for n in cluster.state.nodes]
    async with client_session.post(f"{urls[0]}/set", json={"key": "gone", "value": 1}) as resp:
        assert resp.status == 200
    async with client_session.delete(f"{urls[1]}/delete", params={"key": "gone"}) as resp:
        assert await resp.json() == {"deleted": True}
    for url in urls:
        async with client_session.get(f"{url}/get", params={"key": "gone"}) as resp:
            assert resp.status == 404


async def test_internal_endpoints_refuse_api_key_alone(make_cluster, client_session) -> None:
    cluster: LocalCluster = await make_cluster(2)
    url = cluster.state.nodes[0].url
    body = {"entries": [["evil", 1, None, 2**62]], "deletes": []}
    async with client_session.post(f"{url}/cluster/apply", json=body) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"] == "forbidden"
    async with client_session.get(f"{url}/get", params={"key": "evil"}) as resp:
        assert resp.status == 404
    # (That the read-only cluster views refuse the API key too is test_doors'.)
    async with client_session.get(f"{url}/status") as resp:
        assert resp.status == 200
        assert len((await resp.json())["members"]) == 2


async def test_local_up_refuses_to_orphan_a_running_cluster(make_cluster) -> None:
    import asyncio
    import sys

    cluster: LocalCluster = await make_cluster(1, replication=1)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "distcache_node.local.cli", "local", "up", "--nodes", "1",
        "--dir", str(cluster.dir), "--base-port", str(cluster.state.base_port + 5),
        stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "already running" in stderr.decode()
    assert str(cluster.state.nodes[0].pid) in stderr.decode()


async def test_secrets_that_look_like_flags_reach_the_nodes(tmp_path) -> None:
    """Secrets travel in the environment: a generated secret starting with '-' once made a
    node read it as a missing flag value and exit."""
    import aiohttp

    from support import free_port_range

    cluster = LocalCluster.create(tmp_path / "dash", free_port_range(2), "-dash-key", 2,
                                  False, "64MiB")
    cluster.state.secret = "-dash-secret"
    try:
        await cluster.up(2)
        async with aiohttp.ClientSession(headers={"X-API-Key": "-dash-key"}) as session:
            url = cluster.state.nodes[0].url
            async with session.post(f"{url}/set", json={"key": "a", "value": 1}) as resp:
                assert resp.status == 200  # both replicas acknowledged: peers accepted
            async with session.get(f"{url}/status") as resp:
                assert (await resp.json())["keys"] == 1
    finally:
        cluster.stop_all()
        await cluster.close()
