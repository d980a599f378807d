"""The step machine: the one next action for each state a DistCache can be in."""

from __future__ import annotations

from typing import Any

from distcache_node.cluster.ring import Member, RingDoc
from distcache_operator.builders import initial_ring
from distcache_operator.steps import DEAD_AFTER, Observed, decide

MiB = 1024 * 1024


def st(version: int, keys: int = 100, used: int = 10 * MiB, limit: int = 256 * MiB,
       done: bool = True, placed: int | None = None, remaining: int = 0,
       surplus: int = 0) -> dict[str, Any]:
    return {"ring_version": version, "keys": keys, "bytes_used": used, "max_memory": limit,
            "migration": {"done": done, "placed_version": version if placed is None else placed,
                          "keys_moved": 0, "keys_remaining": remaining, "surplus": surplus,
                          "reason": ""}}


def ring_of(dc, states: dict[int, str], version: int = 5) -> RingDoc:
    return RingDoc(version, dc.spec.replication_factor,
                   tuple(Member(dc.member_id(i), dc.member_url(i), s)
                         for i, s in states.items()))


def all_settled(dc, ring: RingDoc, extra: range = range(0), **kw: Any):
    out = {m.id: st(ring.version, **kw) for m in ring.members}
    out.update({dc.member_id(i): st(ring.version, **kw) for i in extra})
    return out


def test_new_cache_gets_a_ring_of_every_pod_active(make_dc) -> None:
    dc = make_dc(replicas=3)
    a = decide(dc, Observed(None, None, {}))
    assert a.kind == "create_ring" and a.doc == initial_ring(dc, 3)
    # The ConfigMap was deleted under a running StatefulSet: the pods that run.
    a = decide(dc, Observed(None, 4, {}))
    assert a.kind == "create_ring" and len(a.doc.members) == 4


def test_settled_cache_is_idle(make_dc) -> None:
    dc = make_dc(replicas=3)
    ring = ring_of(dc, {0: "active", 1: "active", 2: "active"})
    assert decide(dc, Observed(ring, 3, all_settled(dc, ring))).kind == "idle"


def test_scale_up_grows_the_statefulset_first(make_dc) -> None:
    dc = make_dc(replicas=5)
    ring = ring_of(dc, {0: "active", 1: "active", 2: "active"})
    a = decide(dc, Observed(ring, 3, all_settled(dc, ring)))
    assert (a.kind, a.replicas) == ("scale", 5)


def test_scale_up_waits_for_the_new_pods_to_answer(make_dc) -> None:
    dc = make_dc(replicas=5)
    ring = ring_of(dc, {0: "active", 1: "active", 2: "active"})
    statuses = {**all_settled(dc, ring), "cache-3": st(5), "cache-4": None}
    a = decide(dc, Observed(ring, 5, statuses))
    assert a.kind == "wait" and "cache-4" in a.reason and a.migration == "Joining"


def test_scale_up_adds_new_members_joining_then_active(make_dc) -> None:
    dc = make_dc(replicas=5)
    ring = ring_of(dc, {0: "active", 1: "active", 2: "active"})
    a = decide(dc, Observed(ring, 5, all_settled(dc, ring, range(3, 5))))
    assert a.kind == "publish" and a.doc.version == ring.version + 1
    assert [(m.id, m.state) for m in a.doc.members][3:] == [
        ("cache-3", "joining"), ("cache-4", "joining")]
    joining = a.doc
    # Not settled yet: wait, and push the ring again to members still on the old one.
    statuses = all_settled(dc, joining)
    statuses["cache-0"] = st(ring.version)
    statuses["cache-3"] = st(joining.version, done=False, remaining=50)
    a = decide(dc, Observed(joining, 5, statuses))
    assert a.kind == "wait" and a.push_to == ("cache-0",)
    assert any("cache-3: 50 keys to move" in p for p in a.pending)
    # Settled: mark active.
    a = decide(dc, Observed(joining, 5, all_settled(dc, joining)))
    assert a.kind == "publish"
    assert all(m.state == "active" for m in a.doc.members)


def test_empty_cache_adds_members_active(make_dc) -> None:
    dc = make_dc(replicas=2)
    ring = RingDoc(1, 2, ())
    a = decide(dc, Observed(ring, 2, {"cache-0": st(1), "cache-1": st(1)}))
    assert a.kind == "publish" and all(m.state == "active" for m in a.doc.members)


def test_scale_down_marks_the_highest_ordinals_leaving(make_dc) -> None:
    dc = make_dc(replicas=3)
    ring = ring_of(dc, {i: "active" for i in range(5)})
    a = decide(dc, Observed(ring, 5, all_settled(dc, ring)))
    assert a.kind == "publish" and a.migration == "Draining"
    assert [m.id for m in a.doc.members if m.state == "leaving"] == ["cache-3", "cache-4"]
    assert a.check is not None and a.check.ok


def test_scale_down_refused_when_the_rest_cannot_hold_the_data(make_dc) -> None:
    dc = make_dc(replicas=3)
    ring = ring_of(dc, {i: "active" for i in range(5)})
    statuses = all_settled(dc, ring, used=200 * MiB)  # 5 x 200 MiB at R=2 onto 3 x 256 MiB
    a = decide(dc, Observed(ring, 5, statuses))
    assert a.kind == "refuse" and not a.check.ok
    assert "cannot hold the data" in a.reason and "MiB missing" in a.reason


def test_scale_down_waits_for_every_member_status(make_dc) -> None:
    dc = make_dc(replicas=3)
    ring = ring_of(dc, {i: "active" for i in range(5)})
    statuses = {**all_settled(dc, ring), "cache-1": None}
    a = decide(dc, Observed(ring, 5, statuses))
    assert a.kind == "wait" and "cache-1" in a.reason


def test_drained_members_leave_the_ring_before_the_statefulset_shrinks(make_dc) -> None:
    dc = make_dc(replicas=3)
    leaving = ring_of(dc, {0: "active", 1: "active", 2: "active", 3: "leaving", 4: "leaving"})
    statuses = all_settled(dc, leaving)
    statuses["cache-4"] = st(leaving.version, done=False, remaining=10)
    assert decide(dc, Observed(leaving, 5, statuses)).kind == "wait"
    a = decide(dc, Observed(leaving, 5, all_settled(dc, leaving)))
    assert a.kind == "remove" and [m.id for m in a.doc.members] == [
        "cache-0", "cache-1", "cache-2"]
    after = a.doc
    a = decide(dc, Observed(after, 5, all_settled(dc, after)))
    assert (a.kind, a.replicas) == ("scale", 3)
    assert decide(dc, Observed(after, 3, all_settled(dc, after))).kind == "idle"


def test_a_leaving_member_dead_past_the_bound_is_dropped_without_drain(make_dc) -> None:
    dc = make_dc(replicas=2)
    leaving = ring_of(dc, {0: "active", 1: "active", 2: "leaving"})
    statuses = {**all_settled(dc, leaving), "cache-2": None}
    a = decide(dc, Observed(leaving, 3, statuses, transition_since=1000.0, now=1010.0))
    assert a.kind == "wait"
    a = decide(dc, Observed(leaving, 3, statuses, transition_since=1000.0,
                            now=1001.0 + DEAD_AFTER))
    assert a.kind == "drop_dead" and a.dead == ("cache-2",)
    assert [m.id for m in a.doc.members] == ["cache-0", "cache-1"]


def test_a_transition_in_flight_finishes_before_a_new_replica_count(make_dc) -> None:
    dc = make_dc(replicas=5)  # the user scaled back up during a drain
    leaving = ring_of(dc, {0: "active", 1: "active", 2: "active", 3: "leaving"})
    a = decide(dc, Observed(leaving, 4, all_settled(dc, leaving)))
    assert a.kind == "remove"


def test_statefulset_shrunk_under_the_ring_is_put_back(make_dc) -> None:
    dc = make_dc(replicas=3)
    ring = ring_of(dc, {i: "active" for i in range(3)})
    a = decide(dc, Observed(ring, 1, all_settled(dc, ring)))
    assert (a.kind, a.replicas) == ("scale", 3)


def test_replication_change_is_a_ring_change(make_dc) -> None:
    dc = make_dc(replicas=3, replicationFactor=3)
    ring = ring_of(dc, {i: "active" for i in range(3)})
    ring = RingDoc(ring.version, 2, ring.members)
    a = decide(dc, Observed(ring, 3, all_settled(dc, ring)))
    assert a.kind == "publish" and a.doc.replication == 3


def test_scale_to_zero_is_refused_rather_than_dropping_every_key(make_dc) -> None:
    dc = make_dc(replicas=0)
    ring = ring_of(dc, {i: "active" for i in range(3)})
    a = decide(dc, Observed(ring, 3, all_settled(dc, ring)))
    assert a.kind == "refuse" and "at least one member" in a.reason
