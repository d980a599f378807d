"""The membership machine and zones: members join with their slot's zone, a new cluster's
first ring carries them, and a settled ring follows a slot that moved to another zone."""

from __future__ import annotations

from dataclasses import replace

from test_resize import Shards, run, shard_id, target

from distcache_node.cluster.resize import Kind, decide, first_ring

ZONES = {shard_id(i): "zone-a" if i % 2 else "zone-b" for i in range(6)}


def test_a_new_clusters_first_ring_carries_the_zones_known() -> None:
    doc = first_ring(target(3), 3, zones={shard_id(0): "zone-a", shard_id(1): "zone-b"})
    assert [m.zone for m in doc.members] == ["zone-a", "zone-b", ""]
    obs = replace(Shards(3).observe(), ring=None, statuses={}, running=None, zones=ZONES)
    action = decide(target(3), obs)
    assert action.kind is Kind.CREATE_RING and action.doc is not None
    assert action.doc.zones() == {m: z for m, z in ZONES.items() if m in action.doc.zones()}
    assert len(action.doc.zones()) == 3


def test_joining_members_carry_their_zone() -> None:
    shards = Shards(3)
    steps = []
    for _ in range(50):
        obs = replace(shards.observe(), zones=ZONES)
        action = decide(target(5), obs)
        steps.append(action)
        if action.kind is Kind.IDLE:
            break
        shards.act(action)
    joined = next(a.doc for a in steps if a.kind is Kind.PUBLISH and a.doc
                  and any(m.state == "joining" for m in a.doc.members))
    assert {m.id: m.zone for m in joined.members if m.state == "joining"} == {
        shard_id(3): ZONES[shard_id(3)], shard_id(4): ZONES[shard_id(4)]}


def test_a_settled_ring_takes_a_zone_that_changed_and_nothing_when_unknown() -> None:
    shards = Shards(3)
    assert run(shards, target(3))[-1][0].kind is Kind.IDLE
    # No zone known (no node labels): nothing to change.
    assert decide(target(3), replace(shards.observe(), zones={})).kind is Kind.IDLE
    action = decide(target(3), replace(shards.observe(), zones=ZONES))
    assert action.kind is Kind.PUBLISH and action.doc is not None
    assert action.doc.version == shards.ring.version + 1
    assert action.doc.zones() == {m.id: ZONES[m.id] for m in shards.ring.members}
    assert "zones: shard00 in zone-b" in action.reason
    shards.act(action)
    # Once the ring says so, it is settled again.
    assert decide(target(3), replace(shards.observe(), zones=ZONES)).kind in (Kind.WAIT,
                                                                               Kind.IDLE)
    assert run_with_zones(shards)[-1].kind is Kind.IDLE
    # A pod rescheduled onto a node in the other zone: the ring follows.
    moved = dict(ZONES, **{shard_id(0): "zone-a"})
    action = decide(target(3), replace(shards.observe(), zones=moved))
    assert action.kind is Kind.PUBLISH and action.doc is not None
    assert action.doc.member(shard_id(0)).zone == "zone-a"  # type: ignore[union-attr]


def run_with_zones(shards: Shards) -> list:  # type: ignore[type-arg]
    out = []
    for _ in range(50):
        action = decide(target(3), replace(shards.observe(), zones=ZONES))
        out.append(action)
        if action.kind is Kind.IDLE:
            return out
        shards.act(action)
    raise AssertionError(out[-1])
