"""Migration planning (PassPlan): who sends which key where when the ring changes, with no
I/O. The invariants: every new owner gets each key exactly once from the nodes together,
only when its partner is gone does a leaving node send, and nothing is dropped that its
owners may not hold."""

from __future__ import annotations

from collections import Counter

from distcache_node.cluster.migration import PassPlan, choose_sender, plan_deletes
from distcache_node.cluster.peers import WireEntry
from distcache_node.cluster.ring import Ring

KEYS = [f"key:{i}" for i in range(3000)]


def entry(key: str) -> WireEntry:
    return (key, b'"v"', None, 1)


def holdings(ring: Ring) -> dict[str, list[WireEntry]]:
    """What each member holds when every key sits on its R owners."""
    held: dict[str, list[WireEntry]] = {m: [] for m in ring.members}
    for key in KEYS:
        for member in ring.owners(key):
            held[member].append(entry(key))
    return held


def plan_all(placed: Ring, target: Ring, dead: frozenset[str] = frozenset()
             ) -> dict[str, PassPlan]:
    def alive(member: str) -> bool:
        return member not in dead

    def live_owners(key: str) -> list[str]:
        return [m for m in target.preference(key) if alive(m)][:target.replication]

    plans = {}
    for member, entries in holdings(placed).items():
        if member in dead:
            continue
        plan = PassPlan(member, placed, target, alive, live_owners, entry)
        plan.add(e[0] for e in entries)
        plans[member] = plan
    return plans


def deliveries(plans: dict[str, PassPlan]) -> Counter[tuple[str, str]]:
    return Counter((dest, e[0]) for p in plans.values() for dest, es in p.sends.items()
                   for e in es)


def test_shrink_sends_each_missing_copy_once_and_the_leaving_node_sends_nothing() -> None:
    placed, target = Ring(["a", "b", "c"], 2), Ring(["a", "b"], 2)
    plans = plan_all(placed, target)
    sent = deliveries(plans)
    needed = {(m, k) for k in KEYS for m in target.owners(k) if m not in placed.owners(k)}
    assert set(sent) == needed
    assert all(count == 1 for count in sent.values())
    assert plans["c"].sends == {}
    # The leaving node keeps its copies until the ring settles: none dropped early.
    assert plans["c"].handoff == []
    assert plans["c"].surplus == sum(1 for k in KEYS if "c" in placed.owners(k))


def test_shrink_with_the_partner_dead_makes_the_leaving_node_send() -> None:
    placed, target = Ring(["a", "b", "c"], 2), Ring(["a", "b"], 2)
    plans = plan_all(placed, target, dead=frozenset({"a"}))
    # Keys whose old owners were exactly {a, c}: only c holds them now, so c sends them.
    only_c = [k for k in KEYS if set(placed.owners(k)) == {"a", "c"}]
    assert only_c
    sent_by_c = {e[0] for es in plans["c"].sends.values() for e in es}
    assert set(only_c) <= sent_by_c
    # c drops a copy only where every natural owner is among its destinations.
    for handed, dests in plans["c"].handoff:
        assert set(dests) <= set(target.owners(handed[0])) | {"a"}


def test_growth_splits_the_work_and_moves_only_what_changed_owner() -> None:
    placed, target = Ring(["a", "b", "c"], 2), Ring(["a", "b", "c", "d", "e"], 2)
    plans = plan_all(placed, target)
    sent = deliveries(plans)
    needed = {(m, k) for k in KEYS for m in target.owners(k) if m not in placed.owners(k)}
    assert set(sent) == needed and all(c == 1 for c in sent.values())
    assert {dest for dest, _ in sent} == {"d", "e"}
    senders = [m for m, p in plans.items() if p.sends]
    assert len(senders) == 3  # every old member takes a share


def test_unchanged_ring_plans_nothing_but_strays() -> None:
    ring = Ring(["a", "b", "c"], 2)
    stray = next(k for k in KEYS if "a" not in ring.owners(k))
    plan = PassPlan("a", ring, ring, lambda m: True,
                    lambda k: ring.owners(k), entry, strays={stray})
    plan.add([k for k in KEYS if "a" in ring.owners(k)] + [stray])
    assert {d: [e[0] for e in es] for d, es in plan.sends.items()} == {
        m: [stray] for m in ring.owners(stray)}
    assert [h[0][0] for h in plan.handoff] == [stray]


def test_a_retry_skips_members_that_took_everything() -> None:
    placed, target = Ring(["a", "b", "c"], 2), Ring(["a", "b", "c", "d"], 2)
    first = PassPlan("a", placed, target, lambda m: True, target.owners, entry)
    first.add(e[0] for e in holdings(placed)["a"])
    assert "d" in first.sends
    retry = PassPlan("a", placed, target, lambda m: True, target.owners, entry,
                     delivered={"d"})
    retry.add(e[0] for e in holdings(placed)["a"])
    assert "d" not in retry.sends


def test_keys_gone_since_the_key_list_was_taken_are_skipped() -> None:
    placed, target = Ring(["a", "b", "c"], 2), Ring(["a", "b", "c", "d"], 2)
    plan = PassPlan("a", placed, target, lambda m: True, target.owners, lambda key: None)
    plan.add(e[0] for e in holdings(placed)["a"])
    assert plan.sends == {} and plan.handoff == []


def test_choose_sender_prefers_a_surviving_owner() -> None:
    alive = {"a", "c"}.__contains__
    assert choose_sender(["c", "a"], ["a", "b"], alive) == "a"
    assert choose_sender(["c", "b"], ["a", "b"], alive) == "c"  # b is dead: c must send
    assert choose_sender(["b"], ["a"], alive) is None


def test_deletes_go_to_new_owners_when_the_ring_moves_them() -> None:
    """A delete remembered by an old owner reaches every member that becomes an owner (the
    copy it deleted may have been sent there before the delete arrived), and nobody else."""
    placed, target = Ring(["a", "b", "c"], 2), Ring(["a", "b"], 2)
    tombstones = [(k, 7) for k in KEYS if "a" in placed.owners(k)]
    sent = plan_deletes("a", placed, target, tombstones, target.owners)
    want = {(m, k) for k, _ in tombstones for m in target.owners(k)
            if m not in placed.owners(k)}
    assert {(m, k) for m, ds in sent.items() for k, _ in ds} == want
    assert want and all(v == 7 for ds in sent.values() for _, v in ds)


def test_a_delete_for_a_key_not_ours_goes_to_its_live_owners() -> None:
    ring = Ring(["a", "b", "c", "d"], 2)
    key = next(k for k in KEYS if "a" not in ring.owners(k))
    dead = ring.owners(key)[0]

    def live_owners(k: str) -> list[str]:
        return [m for m in ring.preference(k) if m != dead][:2]

    sent = plan_deletes("a", ring, ring, [(key, 3)], live_owners)
    assert sent == {m: [(key, 3)] for m in live_owners(key) if m != "a"}
    # Owners that took this pass already are not sent it again.
    assert plan_deletes("a", ring, ring, [(key, 3)], live_owners, set(sent)) == {}


def test_an_unchanged_ring_sends_an_owner_no_deletes() -> None:
    ring = Ring(["a", "b", "c"], 2)
    mine = [(k, 1) for k in KEYS if "a" in ring.owners(k)]
    assert plan_deletes("a", ring, ring, mine, ring.owners) == {}


def test_a_new_owner_does_not_send_itself_its_deletes() -> None:
    placed, target = Ring(["a", "b", "c"], 2), Ring(["a", "b", "c", "d"], 2)
    gained = [(k, 1) for k in KEYS if "d" in target.owners(k)]
    sent = plan_deletes("d", placed, target, gained, target.owners)
    assert "d" not in sent
