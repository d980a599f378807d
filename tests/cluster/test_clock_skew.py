"""Write ordering with skewed wall clocks: real node processes, two of them under libfaketime
(one 30 s ahead, one 30 s behind). A write issued after another was acknowledged wins on
every replica, whichever nodes coordinate the two and however their clocks disagree."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from distcache_node.cluster.peers import SECRET_HEADER
from distcache_node.cluster.replication import unpack
from distcache_node.cluster.ring import RingDoc
from distcache_node.local.runner import LocalCluster, NodeProc
from support import free_port_range

API_KEY = "skew-test-key"
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
SKEWS = {"node-0": "+30", "node-2": "-30"}  # seconds; node-1 keeps the real time

needs_faketime = pytest.mark.skipif(
    not LIBFAKETIME.exists(),
    reason="libfaketime is not installed (scripts/ensure-debs.sh faketime=faketime)")


class SkewedCluster(LocalCluster):
    """LocalCluster whose nodes in SKEWS run with libfaketime preloaded."""

    def spawn(self, node: NodeProc) -> None:
        skew = SKEWS.get(node.id)
        if skew is None:
            super().spawn(node)
            return
        base = self._environment

        def environment() -> dict[str, str]:
            return {**base(), "LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": skew}

        self._environment = environment  # type: ignore[method-assign]
        try:
            super().spawn(node)
        finally:
            del self._environment


async def _replica_copy(session: aiohttp.ClientSession, cluster: LocalCluster, url: str,
                        key: str) -> tuple[Any, int] | None:
    """What one node itself holds for the key: (value, version), or None."""
    async with session.post(f"{url}/cluster/get", data=orjson.dumps({"keys": [key]}),
                            headers={SECRET_HEADER: cluster.state.secret}) as resp:
        assert resp.status == 200, await resp.text()
        entries = (await resp.json())["entries"]
    return (entries[0][1], entries[0][3]) if entries else None


@needs_faketime
async def test_a_later_write_wins_on_every_replica_despite_clock_skew(tmp_path: Path) -> None:
    cluster = SkewedCluster.create(tmp_path / "skew", free_port_range(6), API_KEY, 2, False,
                                   "64MiB")
    try:
        await cluster.up(3)
        nodes = {n.id: n.url for n in cluster.state.nodes}
        ring = RingDoc.from_json(orjson.loads(cluster.ring_path.read_bytes())).target()
        async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as session:

            async def write(via: str, key: str, value: Any) -> None:
                async with session.post(f"{nodes[via]}/set",
                                        json={"key": key, "value": value}) as resp:
                    assert resp.status == 200, await resp.text()

            async def delete(via: str, key: str) -> None:
                async with session.delete(f"{nodes[via]}/delete", params={"key": key}) as resp:
                    assert resp.status == 200, await resp.text()

            async def assert_everywhere(key: str, value: Any) -> None:
                owners = ring.owners(key)
                for member in owners:
                    copy = await _replica_copy(session, cluster, nodes[member], key)
                    held = None if copy is None else copy[0]
                    assert held == value, f"{key}: {member} holds {held!r}, not {value!r}"
                for url in nodes.values():
                    async with session.get(f"{url}/get", params={"key": key}) as resp:
                        if value is None:
                            assert resp.status == 404
                        else:
                            assert (await resp.json())["value"] == value

            # The skew is real: node-0 stamps versions about 30 s into the future.
            key0 = next(f"probe-{i}" for i in range(100) if "node-0" in ring.owners(f"probe-{i}"))
            await write("node-0", key0, "probe")
            copy = await _replica_copy(session, cluster, nodes["node-0"], key0)
            assert copy is not None
            ahead_ms = unpack(copy[1])[0] - time.time() * 1000
            assert 25_000 < ahead_ms < 35_000, f"node-0's clock is {ahead_ms} ms ahead"

            # Every ordered pair of coordinators, on keys placed every way: the write issued
            # second (after the first was acknowledged) is what every replica keeps.
            keys = [f"user:{i}" for i in range(6)]
            for key, (first, second) in itertools.product(
                    keys, itertools.permutations(sorted(nodes), 2)):
                await write(first, key, f"{first} first")
                await write(second, key, f"{second} second")
                await assert_everywhere(key, f"{second} second")
            # Deletes too, both ways.
            for key, (first, second) in itertools.product(
                    keys[:3], itertools.permutations(sorted(nodes), 2)):
                await write(first, key, "doomed")
                await delete(second, key)
                await assert_everywhere(key, None)
                await write(first, key, "back")
                await assert_everywhere(key, "back")
            # mset through the node whose clock is behind, after node-0 wrote the keys.
            await write("node-0", "batch-a", 1)
            await write("node-0", "batch-b", 1)
            async with session.post(f"{nodes['node-2']}/mset", json={"items": [
                    {"key": "batch-a", "value": 2}, {"key": "batch-b", "value": 2}]}) as resp:
                assert resp.status == 200
            await assert_everywhere("batch-a", 2)
            await assert_everywhere("batch-b", 2)

            # Concurrent writers on one key through every node: each write is acknowledged
            # (a re-issue happens at most once, a newer version met after it is a concurrent
            # write that supersedes it), and the owners end up with the same version.
            hot = "hot-key"
            results = await asyncio.gather(*(
                session.post(f"{nodes[via]}/set", json={"key": hot, "value": f"{via}-{i}"})
                for i in range(30) for via in sorted(nodes)))
            assert [r.status for r in results] == [200] * len(results)
            for r in results:
                r.release()
            copies = [await _replica_copy(session, cluster, nodes[m], hot)
                      for m in ring.owners(hot)]
            assert copies[0] is not None and all(c == copies[0] for c in copies), copies
    finally:
        cluster.stop_all()
        await cluster.close()


async def test_apply_reports_what_the_replica_holds(make_cluster) -> None:
    """/cluster/apply answers, per key, whether this replica holds the sent version or newer
    (no not_held) and which keys it holds at a newer version; a tombstone counts."""
    cluster: LocalCluster = await make_cluster(1, replication=1)
    url = cluster.state.nodes[0].url
    headers = {SECRET_HEADER: cluster.state.secret}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def apply(entries: list[Any], deletes: list[Any]) -> dict[str, Any]:
            async with session.post(f"{url}/cluster/apply", data=orjson.dumps(
                    {"entries": entries, "deletes": deletes})) as resp:
                assert resp.status == 200, await resp.text()
                body: dict[str, Any] = await resp.json()
                return body

        assert await apply([["k", "v100", None, 100]], []) == {
            "applied": 1, "deleted": [], "not_held": [], "newer": []}
        assert await apply([["k", "v100", None, 100]], []) == {  # repeated: still held
            "applied": 0, "deleted": [], "not_held": [], "newer": []}
        assert await apply([["k", "v50", None, 50]], []) == {
            "applied": 0, "deleted": [], "not_held": [], "newer": [["k", 100]]}
        assert await apply([], [["k", 200]]) == {
            "applied": 0, "deleted": ["k"], "not_held": [], "newer": []}
        assert await apply([["k", "v150", None, 150]], [["gone", 10]]) == {
            "applied": 0, "deleted": [], "not_held": [], "newer": [["k", 200]]}
        async with session.post(f"{url}/cluster/get", json={"keys": ["k"]}) as resp:
            assert (await resp.json())["entries"] == []
        # The node's clock moved past what it received: its next write is above 200... and
        # above a version from far ahead.
        far = (int(time.time() * 1000) + 3_600_000) << 21
        await apply([["future", 1, None, far]], [])
        async with session.post(f"{url}/set", json={"key": "after", "value": 1},
                                headers={"X-API-Key": cluster.state.api_key}) as resp:
            assert resp.status == 200
        async with session.post(f"{url}/cluster/get", json={"keys": ["after"]}) as resp:
            assert (await resp.json())["entries"][0][3] > far
        for bad in (-1, 2**63, True, "7"):
            async with session.post(f"{url}/cluster/apply", data=orjson.dumps(
                    {"entries": [["x", 1, None, bad]], "deletes": []})) as resp:
                assert resp.status == 400
