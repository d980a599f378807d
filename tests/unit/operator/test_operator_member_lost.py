"""Defect 10 (tail): a member dropped undrained leaves some keys with fewer copies than asked
for until the survivors have re-replicated them. Degraded (MemberLost, naming the member and
when) stays in status for that whole time, not for one step, and an operator restarted
meanwhile (empty memory) keeps saying it, because it is read back from status.

Driven through handlers.membership.step_membership and handlers.report.write_status, the
ring in memory and the nodes' status from a table (fakes_k8s)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fakes_k8s import FakeApi, FakePeer, MemoryRingStore, node_status

from distcache_node.cluster.coordinator import Coordinator
from distcache_node.cluster.ring import Member, RingDoc
from distcache_operator.handlers.membership import member_statuses, step_membership
from distcache_operator.handlers.memory import DistCacheMemory
from distcache_operator.handlers.report import write_problem, write_status
from distcache_operator.handlers.tlsstep import TLSState
from distcache_operator.model import DistCache
from distcache_operator.steps import DEAD_AFTER


def _degraded(st: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in st["conditions"] if c["type"] == "Degraded")


async def _step(api: FakeApi, dc: DistCache, store: MemoryRingStore,
                nodes: dict[str, dict[str, Any] | None]) -> tuple[str, dict[str, Any]]:
    """One step as handlers.step runs it, on a fresh memory (as after a restart)."""
    assert store.doc is not None and api.body is not None
    mem = DistCacheMemory()
    coordinator = Coordinator(store, lambda m: FakePeer(nodes, m))  # type: ignore[arg-type,return-value]
    members, statuses = await member_statuses(coordinator, dc, store.doc, api.sts)
    got = await step_membership(api, dc, mem, coordinator, store.doc, api.sts,  # type: ignore[arg-type]
                                members, statuses, api.body.get("status") or {})
    await write_status(api, dc, mem, api.body.get("status") or {}, got,  # type: ignore[arg-type]
                       TLSState(), 0.0)
    return str(got.action.kind), api.body["status"]


async def test_member_lost_stays_degraded_until_the_survivors_have_re_replicated(
        make_dc) -> None:
    from conftest import body

    dc: DistCache = make_dc(replicas=2, replicationFactor=2)
    ring = RingDoc(4, 2, (Member("cache-0", dc.member_url(0), "active"),
                          Member("cache-1", dc.member_url(1), "active"),
                          Member("cache-2", dc.member_url(2), "leaving")))
    store = MemoryRingStore(ring)
    lost_since = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=DEAD_AFTER + 30)
                  ).strftime("%Y-%m-%dT%H:%M:%SZ")
    previous = {"phase": "Migrating", "members": [
        {"id": "cache-2", "pod": "cache-2", "state": "leaving", "ready": False,
         "unreachableSince": lost_since}],
        "migration": {"state": "Draining", "members": ["cache-2"], "started": lost_since}}
    api = FakeApi({**body({"replicas": 2, "replicationFactor": 2}), "status": previous}, sts=3)
    api.ready = {"cache-0": True, "cache-1": True, "cache-2": False}
    # cache-2 (leaving) has not answered for over DEAD_AFTER: dropped without a drain.
    nodes: dict[str, dict[str, Any] | None] = {
        "cache-0": node_status(4, done=False), "cache-1": node_status(4, done=False),
        "cache-2": None}
    kind, st = await _step(api, dc, store, nodes)
    assert kind == "drop_dead"
    assert store.doc is not None and store.doc.member("cache-2") is None
    lost = _degraded(st)
    assert (lost["status"], lost["reason"]) == ("True", "MemberLost")
    assert "cache-2 lost at " in lost["message"] and st["phase"] == "Degraded"
    assert ("MemberLost", True) in [(e[0], e[2]) for e in api.events]

    # The survivors are on the new ring, still re-replicating: the next steps (the
    # StatefulSet shrunk to the ring, then nothing left to decide; each on a fresh memory:
    # an operator restarted in between) keep saying it, same message and same since-when.
    nodes["cache-0"], nodes["cache-1"] = node_status(5, done=False), node_status(5)
    kinds = []
    for _ in range(3):
        kind, st = await _step(api, dc, store, nodes)
        kinds.append(kind)
        assert _degraded(st) == lost and st["phase"] == "Degraded"
    assert kinds == ["scale", "idle", "idle"] and api.sts == 2
    assert api.reasons().count("MemberLost") == 1  # said once; status carries it after
    assert st["memberLost"] == lost["message"]

    # Another problem takes Degraded for a step (a Secret deleted by hand, say): once it is
    # fixed, the under-replication, not over yet, is said again, same message.
    await write_problem(api, dc, DistCacheMemory(), api.body["status"], "SecretMissing",
                        "Secret cache-api-key not found")
    assert _degraded(api.body["status"])["reason"] == "SecretMissing"
    kind, st = await _step(api, dc, store, nodes)
    assert _degraded(st) | {"lastTransitionTime": None} == lost | {"lastTransitionTime": None}
    assert st["phase"] == "Degraded" and st["memberLost"] == lost["message"]

    # Settled (both hold every key they own again): Degraded clears.
    nodes["cache-0"] = node_status(5)
    kind, st = await _step(api, dc, store, nodes)
    assert _degraded(st)["status"] == "False", _degraded(st)
    assert st["phase"] != "Degraded" and st["memberLost"] == ""
