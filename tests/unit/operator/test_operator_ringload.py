"""handlers.ringload.load_ring: the ring ConfigMap's ring; a new cache's first ring; a ring
ConfigMap deleted under running pods created again from the newest ring they hold, above
every version they report (never at v1 below them); a ConfigMap that is not a ring is a
problem to fix."""

from __future__ import annotations

from typing import Any

import pytest
from fakes_k8s import FakeApi, FakePeer, MemoryRingStore, node_status

from conftest import body
from distcache_node.cluster.coordinator import Coordinator
from distcache_node.cluster.ring import Member, RingDoc, RingError
from distcache_operator.handlers.problem import Problem
from distcache_operator.handlers.ringload import load_ring


def _coordinator(store: MemoryRingStore, nodes: dict[str, dict[str, Any] | None],
                 held: dict[str, RingDoc] | None = None) -> Coordinator:
    return Coordinator(store, lambda m: FakePeer(nodes, m, held))  # type: ignore[arg-type,return-value]


async def test_a_new_cache_gets_its_first_ring(make_dc) -> None:
    dc = make_dc(replicas=3)
    api, store = FakeApi(body()), MemoryRingStore()
    got = await load_ring(api, dc, store, _coordinator(store, {}), None)  # type: ignore[arg-type]
    assert got.created and got.ring == store.doc and got.ring is not None
    assert got.ring.version == 1 and len(got.ring.members) == 3
    assert api.reasons() == ["RingCreated"]
    again = await load_ring(api, dc, store, _coordinator(store, {}), 3)  # type: ignore[arg-type]
    assert not again.created and again.ring == got.ring


async def test_a_deleted_ring_configmap_comes_back_above_what_the_pods_hold(make_dc) -> None:
    dc = make_dc(replicas=3)
    held = RingDoc(5, 2, tuple(Member(dc.member_id(i), dc.member_url(i), "active")
                               for i in range(4)))  # cache-3 still a member (not drained)
    nodes: dict[str, dict[str, Any] | None] = {
        dc.member_id(i): node_status(5) for i in range(4)}
    api, store = FakeApi(body()), MemoryRingStore()
    got = await load_ring(api, dc, store,  # type: ignore[arg-type]
                          _coordinator(store, nodes, {m: held for m in nodes}), 4)
    assert got.ring is not None and got.ring.version == 6
    assert [m.id for m in got.ring.members] == [m.id for m in held.members]
    assert api.events[0][0] == "RingRecovered" and api.events[0][2]
    assert all(n is not None and n["ring_version"] == 6 for n in nodes.values())  # pushed


async def test_a_configmap_that_is_not_a_ring_is_a_problem(make_dc) -> None:
    class Broken(MemoryRingStore):
        async def load_or_none(self) -> RingDoc | None:
            raise RingError("version must be an integer")

    store = Broken()
    with pytest.raises(Problem) as got:
        await load_ring(FakeApi(body()), make_dc(), store, _coordinator(store, {}),  # type: ignore[arg-type]
                        3)
    assert got.value.reason == "RingInvalid" and "version" in got.value.message
