"""ClusterNode.update_ring is all or nothing: a ring it cannot use leaves every part of the
node (ring, placement, peer clients) as it was. In-process: no server, no connections."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from distcache_node.cluster.node import ClusterNode
from distcache_node.cluster.ring import Member, RingConflict, RingDoc, RingError
from distcache_node.config import NodeConfig
from distcache_node.store import Store

ME = Member("n1", "http://127.0.0.1:1")
PEER = Member("n2", "http://127.0.0.1:2")


@pytest.fixture
async def node() -> AsyncIterator[ClusterNode]:
    config = NodeConfig(node_id="n1", advertise_url=ME.url, cluster_secret="s").validate()
    node = ClusterNode(config, Store(1024**2, track_versions=True), {"ready": True,
                                                                      "reason": ""})
    node.session = aiohttp.ClientSession()
    assert node.update_ring(RingDoc(1, 2, (ME, PEER)), "test")
    yield node
    for peer in node.peers.values():
        if peer.fast is not None:
            peer.fast.close()
    await node.session.close()


def _snapshot(node: ClusterNode) -> tuple[object, ...]:
    return (node.doc, node.target.members, node.previous.members, dict(node.peers),
            {p: c.url for p, c in node.peers.items()}, set(node.membership.health))


async def test_a_ring_whose_peer_client_cannot_be_built_changes_nothing(
    node: ClusterNode,
) -> None:
    before = _snapshot(node)
    # Built directly, past from_json's checks: the node must not trust its callers.
    bad = RingDoc(2, 2, (ME, Member("n2", "http://127.0.0.1:3"), Member("n3", "http://a:xx")))
    with pytest.raises(RingError, match="n3"):
        node.update_ring(bad, "test")
    assert _snapshot(node) == before
    # ...and the node still takes a good ring afterwards.
    assert node.update_ring(RingDoc(2, 2, (ME, PEER, Member("n3", "http://127.0.0.1:4"))), "t")
    assert node.doc.version == 2 and set(node.peers) == {"n2", "n3"}


async def test_same_version_other_content_is_a_conflict(node: ClusterNode) -> None:
    before = _snapshot(node)
    with pytest.raises(RingConflict, match="v1"):
        node.update_ring(RingDoc(1, 2, (ME,)), "test")
    with pytest.raises(RingConflict):
        node.update_ring(RingDoc(1, 1, (ME, PEER)), "test")
    assert _snapshot(node) == before


async def test_the_same_ring_again_or_an_older_one_is_a_no_op(node: ClusterNode) -> None:
    before = _snapshot(node)
    assert node.update_ring(RingDoc(1, 2, (PEER, ME)), "test") is False  # order is no change
    assert node.update_ring(RingDoc(0, 1, (ME,)), "test") is False  # older: ignored
    assert _snapshot(node) == before
