"""The shared membership machine (cluster/resize.py) on its own, named the way no Kubernetes
object is (shards on plain hosts), run step by step to the end against simulated nodes. The
operator's states are covered through its adapter in tests/unit/operator/test_operator_steps.py."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from distcache_node.cluster.coordinator import Coordinator
from distcache_node.cluster.resize import Action, Kind, Observed, Target, decide, first_ring
from distcache_node.cluster.ring import RingDoc

MiB = 1024 * 1024


def shard_id(ordinal: int) -> str:
    return f"shard{ordinal:02d}"


def shard_url(ordinal: int) -> str:
    return f"http://10.9.0.{ordinal + 1}:7000"


def shard_ordinal(member_id: str) -> int:
    return int(member_id.removeprefix("shard"))


def target(size: int, **kw: Any) -> Target:
    return Target(size=size, replication=kw.pop("replication", 2), member_id=shard_id,
                  member_url=shard_url, ordinal=shard_ordinal, record="ring file /srv/ring",
                  workload="shard set", slot="shard", size_setting="--shards", **kw)


class Shards:
    """Simulated nodes: each adopts a ring the moment it is pushed and needs `passes` looks
    to place it (a migration), like FakeMember in test_coordinator.py."""

    def __init__(self, size: int, passes: int = 2, used: int = 10 * MiB) -> None:
        self.ring = first_ring(target(size), size)
        self.slots = size
        self.passes = passes
        self.used = used
        self.nodes: dict[str, dict[str, int]] = {}
        for i in range(size):
            self._start(i)

    def _start(self, ordinal: int) -> None:
        # A new shard reads the ring record when it starts (outside the ring: detached).
        self.nodes[shard_id(ordinal)] = {"version": self.ring.version,
                                         "placed": self.ring.version, "left": 0}

    def observe(self, now: float = 0.0) -> Observed:
        statuses: dict[str, dict[str, Any] | None] = {}
        for member_id, n in self.nodes.items():
            if n["left"]:
                n["left"] -= 1
            else:
                n["placed"] = n["version"]
            done = n["placed"] >= n["version"]
            statuses[member_id] = {
                "ring_version": n["version"], "bytes_used": self.used, "max_memory": 64 * MiB,
                "ready": True, "migration": {"done": done, "placed_version": n["placed"],
                                             "keys_remaining": 0 if done else 5}}
        return Observed(self.ring, self.slots, statuses, now=now,
                        ready={m: True for m in self.nodes})

    def act(self, action: Action) -> None:
        if action.kind is Kind.SCALE:
            assert action.replicas is not None
            for i in range(self.slots, action.replicas):
                self._start(i)
            self.nodes = {m: n for m, n in self.nodes.items()
                          if shard_ordinal(m) < action.replicas}
            self.slots = action.replicas
        elif action.kind in (Kind.PUBLISH, Kind.REMOVE, Kind.DROP_DEAD):
            assert action.doc is not None
            heard = {m.id for m in (*self.ring.members, *action.doc.members)}
            self.ring = action.doc
            for member_id in heard & set(self.nodes):
                self.nodes[member_id].update(version=action.doc.version, left=self.passes)


def run(shards: Shards, t: Target, limit: int = 200) -> list[tuple[Action, RingDoc, Observed]]:
    """decide -> act until idle, as the operator's reconcile and `distcache local scale` do;
    each action with the ring and the observation it was decided on."""
    steps = []
    for _ in range(limit):
        obs = shards.observe()
        action = decide(t, obs)
        steps.append((action, shards.ring, obs))
        if action.kind in (Kind.IDLE, Kind.REFUSE):
            return steps
        shards.act(action)
        # No member is without its node at any step: the slots follow the ring, not lead it.
        assert shards.slots >= len(shards.ring.members), action
    raise AssertionError(f"not idle after {limit} steps: {steps[-1][0]}")


def test_grow_starts_the_shards_then_joins_them_then_activates_them() -> None:
    shards = Shards(3)
    steps = run(shards, target(5))
    kinds = [a.kind for a, _, _ in steps if a.kind is not Kind.WAIT]
    assert kinds == [Kind.SCALE, Kind.PUBLISH, Kind.PUBLISH, Kind.IDLE]
    assert steps[0][0].reason == "scale up 3 -> 5: shard set to 5 shards"
    joined = next(a.doc for a, _, _ in steps if a.kind is Kind.PUBLISH)
    assert joined is not None
    assert [(m.id, m.url, m.state) for m in joined.members][3:] == [
        ("shard03", "http://10.9.0.4:7000", "joining"),
        ("shard04", "http://10.9.0.5:7000", "joining")]
    assert [m.state for m in shards.ring.members] == ["active"] * 5
    # Activated only once every member had placed the joining ring.
    activate = next(i for i, (a, _, _) in enumerate(steps)
                    if a.kind is Kind.PUBLISH and a.doc and a.doc.version == 3)
    _, ring, obs = steps[activate]
    assert Coordinator.pending(ring, obs.statuses) == []


def test_shrink_by_several_removes_members_only_once_drained_then_stops_their_shards() -> None:
    shards = Shards(5)
    steps = run(shards, target(2))
    kinds = [a.kind for a, _, _ in steps if a.kind is not Kind.WAIT]
    assert kinds == [Kind.PUBLISH, Kind.REMOVE, Kind.SCALE, Kind.IDLE]
    for action, ring, obs in steps:
        if action.kind is Kind.REMOVE:
            assert action.doc is not None
            gone = {m.id for m in ring.members} - {m.id for m in action.doc.members}
            assert gone == {"shard02", "shard03", "shard04"}
            assert all(ring.member(m) is not None and ring.member(m).state == "leaving"  # type: ignore[union-attr]
                       for m in gone)
            assert Coordinator.pending(ring, obs.statuses) == [], "removed undrained"
    assert [m.id for m in shards.ring.members] == ["shard00", "shard01"]
    assert shards.slots == 2
    # Every reason is in the caller's words: nothing of Kubernetes in a local cluster's output.
    said = " ".join(a.reason for a, _, _ in steps)
    assert not any(word in said for word in ("StatefulSet", "pod", "spec.replicas", "ConfigMap"))


def test_a_shrink_the_rest_cannot_hold_is_refused_unless_forced() -> None:
    shards = Shards(3, used=50 * MiB)  # 75 MiB of data at R=2 would need 75 MiB on each of 2
    before = shards.ring
    refused = run(shards, target(2))[-1][0]
    assert refused.kind is Kind.REFUSE and refused.check is not None
    assert "cannot hold the data" in refused.reason and refused.check.missing > 0
    assert shards.ring == before and shards.slots == 3  # nothing changed
    forced = decide(target(2, force=True), shards.observe())
    assert forced.kind is Kind.PUBLISH and forced.doc is not None
    assert [m.state for m in forced.doc.members] == ["active", "active", "leaving"]
    # Forced or not, a cluster keeps one member.
    assert decide(target(0, force=True), shards.observe()).kind is Kind.REFUSE


def test_a_leaving_shard_is_dropped_after_the_callers_dead_after() -> None:
    shards = Shards(3)
    shards.act(decide(target(2), shards.observe()))  # shard02 leaving
    del shards.nodes["shard02"]  # its node is gone: no status, not ready
    t = target(2, dead_after=5.0)
    first = decide(t, shards.observe(now=100.0))
    assert first.kind is Kind.WAIT and first.unreachable_since == {"shard02": 100.0}
    obs = shards.observe(now=104.0)
    still = decide(t, Observed(obs.ring, obs.running, obs.statuses, now=104.0,
                               ready=obs.ready, unreachable_since=first.unreachable_since))
    assert still.kind is Kind.WAIT
    late = decide(t, Observed(obs.ring, obs.running, obs.statuses, now=106.0,
                              ready=obs.ready, unreachable_since=first.unreachable_since))
    assert late.kind is Kind.DROP_DEAD and late.dead == ("shard02",)


def test_action_kinds_are_an_enum_that_compares_as_text() -> None:
    action = Action("scale", replicas=3)
    assert action.kind is Kind.SCALE and action.kind == "scale" and f"{action.kind}" == "scale"
    with pytest.raises(ValueError, match="'resize'"):
        Action("resize")


def test_the_machine_imports_nothing_of_the_operator_or_kubernetes() -> None:
    code = ("import sys, distcache_node.cluster.resize; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('distcache_operator', 'kopf', 'kubernetes', 'kubernetes_asyncio')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
