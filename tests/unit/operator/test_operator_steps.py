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
    # First seen unreachable at 1000 (status.members[].unreachableSince carries it).
    a = decide(dc, Observed(leaving, 3, statuses, transition_since=1000.0, now=1010.0,
                            unreachable_since={"cache-2": 1000.0}))
    assert a.kind == "wait" and a.unreachable_since == {"cache-2": 1000.0}
    a = decide(dc, Observed(leaving, 3, statuses, transition_since=1000.0,
                            now=1001.0 + DEAD_AFTER, unreachable_since={"cache-2": 1000.0}))
    assert a.kind == "drop_dead" and a.dead == ("cache-2",)
    assert [m.id for m in a.doc.members] == ["cache-0", "cache-1"]


# -- issue 14, defect 2: DEAD_AFTER counts each member's unreachability, not the drain's age --
def test_one_failed_status_call_late_in_a_long_drain_drops_nothing(make_dc) -> None:
    dc = make_dc(replicas=2)
    leaving = ring_of(dc, {0: "active", 1: "active", 2: "leaving"})
    statuses = {**all_settled(dc, leaving), "cache-2": None}  # one call timed out, once
    now = 1000.0 + DEAD_AFTER + 60  # the drain has been running for 3 minutes
    a = decide(dc, Observed(leaving, 3, statuses, transition_since=1000.0, now=now))
    assert a.kind == "wait", a.reason
    assert a.unreachable_since == {"cache-2": now}  # the count starts now


def test_unreachability_must_last_dead_after_in_a_row(make_dc) -> None:
    """Steps fed back what the last one wrote to status, as the reconciler does: an answer
    in between starts the count again."""
    dc = make_dc(replicas=2)
    leaving = ring_of(dc, {0: "active", 1: "active", 2: "leaving"})
    down = {**all_settled(dc, leaving), "cache-2": None}
    up = all_settled(dc, leaving)
    up["cache-2"] = st(leaving.version, done=False, remaining=5)
    carried: dict[str, float] = {}
    kinds = []
    for now, statuses in [(0.0, down), (100.0, down), (110.0, up), (120.0, down),
                          (120.0 + DEAD_AFTER - 1, down), (121.0 + DEAD_AFTER, down)]:
        a = decide(dc, Observed(leaving, 3, statuses, transition_since=-500.0, now=now,
                                unreachable_since=carried))
        kinds.append(a.kind)
        carried = dict(a.unreachable_since)
    assert kinds == ["wait"] * 5 + ["drop_dead"]


def test_a_running_ready_pod_is_not_a_dead_member(make_dc) -> None:
    dc = make_dc(replicas=2)
    leaving = ring_of(dc, {0: "active", 1: "active", 2: "leaving"})
    statuses = {**all_settled(dc, leaving), "cache-2": None}  # the operator cannot reach it
    a = decide(dc, Observed(leaving, 3, statuses, transition_since=0.0, now=10 * DEAD_AFTER,
                            unreachable_since={"cache-2": 0.0},
                            ready={"cache-0": True, "cache-1": True, "cache-2": True}))
    assert a.kind == "wait" and a.unreachable_since == {}


def test_the_unreachable_count_survives_an_operator_restart_through_status(make_dc) -> None:
    from datetime import UTC, datetime

    from distcache_operator import status

    dc = make_dc(replicas=2)
    leaving = ring_of(dc, {0: "active", 1: "active", 2: "leaving"})
    statuses = {**all_settled(dc, leaving), "cache-2": None}
    a = decide(dc, Observed(leaving, 3, statuses, transition_since=0.0, now=1_700_000_000.0))
    written = status.compute(dc, Observed(leaving, 3, statuses), a, {}, {})
    since = {m["id"]: datetime.strptime(m["unreachableSince"], "%Y-%m-%dT%H:%M:%SZ")
             .replace(tzinfo=UTC).timestamp()
             for m in written["members"] if "unreachableSince" in m}
    assert since == {"cache-2": 1_700_000_000.0}
    # A new operator process reads it back: the count goes on from there.
    a = decide(dc, Observed(leaving, 3, statuses, transition_since=0.0,
                            now=1_700_000_001.0 + DEAD_AFTER, unreachable_since=since))
    assert a.kind == "drop_dead"


# -- issue 14, defect 3: the ring version never goes backwards ---------------------------------
def held_ring(dc, states: dict[int, str], version: int) -> RingDoc:
    return ring_of(dc, states, version=version)


def test_no_configmap_while_pods_run_a_ring_creates_none_at_v1(make_dc) -> None:
    dc = make_dc(replicas=5)
    statuses = {dc.member_id(i): st(9) for i in range(5)}  # their ring not read (yet)
    a = decide(dc, Observed(None, 5, statuses))
    assert a.doc is None or a.doc.version > 9, (a.kind, a.doc)
    assert a.kind == "wait" and "v9" in a.reason


def test_no_configmap_recreates_the_newest_ring_the_pods_hold_above_every_version(
        make_dc) -> None:
    dc = make_dc(replicas=3)
    newest = held_ring(dc, {0: "active", 1: "active", 2: "active", 3: "leaving",
                            4: "leaving"}, version=9)
    older = held_ring(dc, {i: "active" for i in range(5)}, version=7)
    statuses = {"cache-0": st(9), "cache-1": st(7), "cache-2": None}
    a = decide(dc, Observed(None, 3, statuses, held={"cache-0": newest, "cache-1": older}))
    assert a.kind == "create_ring" and a.doc.version == 10
    assert a.doc.members == newest.members and a.doc.replication == newest.replication
    assert a.event is not None and a.event[0] == "RingRecovered"
    # The leaving members (never drained) need their pods back, then drain as usual.
    b = decide(dc, Observed(a.doc, 3, all_settled(dc, newest)))
    assert (b.kind, b.replicas) == ("scale", 5)


def test_a_new_cache_and_pods_without_a_ring_still_start_at_v1(make_dc) -> None:
    dc = make_dc(replicas=3)
    a = decide(dc, Observed(None, 3, {f"cache-{i}": st(0) for i in range(3)}))
    assert a.kind == "create_ring" and a.doc == initial_ring(dc, 3)


def test_a_node_ahead_of_the_configmap_is_a_conflict_never_settled(make_dc) -> None:
    """Measured on kind: ConfigMap deleted, created again at v1 by hand, then a shrink
    5 -> 3 'settled' on nodes at v9 that never saw it, and keys were lost."""
    dc = make_dc(replicas=3)
    behind = ring_of(dc, {i: "active" for i in range(5)}, version=1)
    statuses = {dc.member_id(i): st(9) for i in range(5)}
    a = decide(dc, Observed(behind, 5, statuses))
    assert a.kind == "wait" and "conflict" in a.reason, (a.kind, a.reason)
    assert a.doc is None and a.push_to == ()
    # With their ring read: published again above every version reported.
    theirs = held_ring(dc, {0: "active", 1: "active", 2: "active", 3: "leaving",
                            4: "leaving"}, version=9)
    a = decide(dc, Observed(behind, 5, statuses, held={"cache-0": theirs}))
    assert a.kind == "publish" and a.doc.version == 10 and a.doc.members == theirs.members
    assert a.event is not None and a.event[0] == "RingConflict" and "cache-0" in a.event[1]
    # From there the drain goes on: nothing is removed before the leaving members settle.
    after = a.doc
    statuses = {dc.member_id(i): st(9) for i in range(5)}
    assert decide(dc, Observed(after, 5, statuses)).kind == "wait"


def test_a_leaving_member_ahead_is_not_removed(make_dc) -> None:
    dc = make_dc(replicas=2)
    leaving = ring_of(dc, {0: "active", 1: "active", 2: "leaving"}, version=4)
    statuses = all_settled(dc, leaving)
    statuses["cache-2"] = st(6)
    a = decide(dc, Observed(leaving, 3, statuses))
    assert a.kind not in ("remove", "drop_dead", "scale"), a


# -- issue 14, defect 6: a joining member that never came up --------------------------------
def joining_ring(dc) -> RingDoc:
    return ring_of(dc, {0: "active", 1: "active", 2: "active", 3: "joining", 4: "joining"},
                   version=6)


def test_a_joining_member_that_never_came_up_is_taken_back_when_replicas_drop(
        make_dc) -> None:
    dc = make_dc(replicas=3)  # was 5; cache-3 and cache-4 crash-loop
    ring = joining_ring(dc)
    statuses = {**all_settled(dc, ring), "cache-3": None, "cache-4": None}
    a = decide(dc, Observed(ring, 5, statuses))
    assert a.kind == "publish" and a.doc.version == 7, (a.kind, a.reason)
    assert [(m.id, m.state) for m in a.doc.members] == [
        ("cache-0", "active"), ("cache-1", "active"), ("cache-2", "active")]
    # Then the StatefulSet gives the pods back.
    b = decide(dc, Observed(a.doc, 5, all_settled(dc, a.doc)))
    assert (b.kind, b.replicas) == ("scale", 3)


def test_only_joining_members_beyond_the_new_size_that_are_not_up_are_taken_back(
        make_dc) -> None:
    dc = make_dc(replicas=4)
    ring = joining_ring(dc)
    statuses = {**all_settled(dc, ring, done=False, remaining=9), "cache-4": None}
    a = decide(dc, Observed(ring, 5, statuses, ready={"cache-3": True}))
    assert a.kind == "publish"
    assert [(m.id, m.state) for m in a.doc.members][3:] == [("cache-3", "joining")]
    # A joining member that is up is not taken back: its transition finishes first.
    up = {**all_settled(dc, ring, done=False, remaining=9)}
    up["cache-4"] = {**st(6, done=False, remaining=9), "ready": True}
    a = decide(dc, Observed(ring, 5, up))
    assert a.kind == "wait"


def test_with_replication_1_a_joining_member_is_drained_back_not_dropped(make_dc) -> None:
    dc = make_dc(replicas=3, replicationFactor=1)
    ring = joining_ring(dc)
    statuses = {**all_settled(dc, ring), "cache-4": None, "cache-3": {
        **st(6), "ready": False}}
    a = decide(dc, Observed(ring, 5, statuses))
    assert a.kind == "publish" and a.migration == "Draining"
    assert [(m.id, m.state) for m in a.doc.members][3:] == [
        ("cache-3", "leaving"), ("cache-4", "leaving")]


def test_a_join_held_up_past_the_deadline_is_degraded_with_one_event(make_dc) -> None:
    dc = make_dc(replicas=5)
    ring = joining_ring(dc)
    statuses = {**all_settled(dc, ring), "cache-4": None}
    ready = {dc.member_id(i): True for i in range(4)}
    early = decide(dc, Observed(ring, 5, statuses, transition_since=0.0, now=599.0,
                                join_deadline=600.0, ready=ready))
    assert early.kind == "wait" and early.degraded is None and early.event is None
    late = decide(dc, Observed(ring, 5, statuses, transition_since=0.0, now=601.0,
                               join_deadline=600.0, ready=ready))
    assert late.kind == "wait" and late.degraded is not None
    assert late.degraded[0] == "JoinStuck" and "cache-4" in late.degraded[1]
    assert "cache-3" not in late.degraded[1]
    assert late.event == late.degraded
    from distcache_operator import status

    written = status.compute(dc, Observed(ring, 5, statuses), late, ready, {})
    degraded = next(c for c in written["conditions"] if c["type"] == "Degraded")
    assert written["phase"] == "Degraded" and degraded["reason"] == "JoinStuck"
    assert written["migration"]["lastError"] == late.degraded[1]
    # The Event once: the next step finds its message in status.migration.lastError.
    again = decide(dc, Observed(ring, 5, statuses, transition_since=0.0, now=700.0,
                                join_deadline=600.0, ready=ready, last_error=late.degraded[1]))
    assert again.degraded == late.degraded and again.event is None


def test_new_pods_that_never_answer_are_degraded_past_the_deadline(make_dc) -> None:
    dc = make_dc(replicas=5)
    ring = ring_of(dc, {0: "active", 1: "active", 2: "active"})
    statuses = {**all_settled(dc, ring), "cache-3": st(5), "cache-4": None}
    a = decide(dc, Observed(ring, 5, statuses, transition_since=0.0, now=30.0,
                            join_deadline=20.0))
    assert a.kind == "wait" and a.degraded is not None and "cache-4" in a.degraded[1]


def test_the_join_deadline_is_the_operators_setting(monkeypatch) -> None:
    from distcache_operator import steps

    assert steps.join_deadline() == steps.JOIN_DEADLINE == 600.0
    monkeypatch.setenv("DISTCACHE_OPERATOR_JOIN_DEADLINE_SECONDS", "45")
    assert steps.join_deadline() == 45.0


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


def test_raising_the_replication_factor_is_checked_like_a_shrink(make_dc) -> None:
    """R 2 -> 3 puts a third copy of every key on the same 3 members: 50% more bytes each.
    Before: published with no capacity check, and the nodes then evicted keys."""
    dc = make_dc(replicas=3, replicationFactor=3)
    ring = RingDoc(5, 2, ring_of(dc, {0: "active", 1: "active", 2: "active"}).members)
    full = all_settled(dc, ring, used=200 * MiB, limit=256 * MiB)  # 200 -> 300 MiB each
    a = decide(dc, Observed(ring, 3, full))
    assert a.kind == "refuse" and "replication 2 -> 3 refused" in a.reason, a
    from distcache_operator.steps import refusal_reason
    assert refusal_reason(a) == "ReplicationRefused"
    roomy = all_settled(dc, ring, used=20 * MiB, limit=256 * MiB)
    a = decide(dc, Observed(ring, 3, roomy))
    assert a.kind == "publish" and a.doc is not None and a.doc.replication == 3
    # Lowering it never needs room.
    down = make_dc(replicas=3, replicationFactor=1)
    a = decide(down, Observed(ring, 3, full))
    assert a.kind == "publish" and a.doc is not None and a.doc.replication == 1
