"""The membership step machine: from what is observed now, the ONE next action. Pure.

Each reconcile reads the ring ConfigMap, the StatefulSet, and every member's
GET /cluster/status, calls `decide`, carries out the action, and comes back later. Nothing
that matters lives in the operator's memory: an operator restarted at any point reads the
same ring and status and picks the same next step.

Scale-up:   grow the StatefulSet -> the new pods answer -> add them `joining` -> settled
            -> mark them `active` -> settled.
Scale-down: capacity check (refuse, changing nothing, when it fails) -> mark the highest
            ordinals `leaving` -> settled (their keys placed on the others) -> ring without
            them -> only then shrink the StatefulSet.
A leaving member that stays unreachable for DEAD_AFTER seconds is removed without a drain
(with R >= 2 its keys have copies elsewhere; survivors re-replicate).
A transition in flight is finished before a new spec.replicas is acted on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from distcache_node.cluster.coordinator import CapacityCheck, Coordinator, check_capacity
from distcache_node.cluster.ring import Member, RingDoc
from distcache_operator.builders import initial_ring
from distcache_operator.model import DistCache

DEAD_AFTER = 120.0  # seconds a leaving member may stay unreachable before it is dropped
WAIT = 1.0  # seconds between steps while something is in flight

Statuses = Mapping[str, Mapping[str, Any] | None]


@dataclass(frozen=True)
class Observed:
    ring: RingDoc | None  # None: no ring ConfigMap yet
    sts_replicas: int | None  # None: no StatefulSet yet
    statuses: Statuses  # member or pod id -> GET /cluster/status, None when unreachable
    transition_since: float | None = None  # when the current ring change started (status)
    now: float = 0.0


@dataclass(frozen=True)
class Action:
    kind: str  # create_ring | scale | publish | remove | drop_dead | wait | refuse | idle
    reason: str = ""
    doc: RingDoc | None = None
    replicas: int | None = None
    pending: tuple[str, ...] = ()
    push_to: tuple[str, ...] = ()  # members still on an older ring: push it again
    check: CapacityCheck | None = None
    dead: tuple[str, ...] = ()
    delay: float = WAIT
    migration: str = "Idle"  # Idle | Joining | Draining
    members: tuple[str, ...] = field(default=())  # the members the migration is about


def _ordinals(dc: DistCache, doc: RingDoc) -> list[int]:
    return sorted(dc.ordinal(m.id) for m in doc.members)


def decide(dc: DistCache, obs: Observed) -> Action:
    desired = dc.spec.replicas
    ring = obs.ring
    if ring is None:
        n = desired if obs.sts_replicas is None else obs.sts_replicas
        return Action("create_ring", f"new cache of {n} member(s)", doc=initial_ring(dc, n))
    ordinals = _ordinals(dc, ring)
    top = ordinals[-1] + 1 if ordinals else 0
    if obs.sts_replicas is not None and obs.sts_replicas < top:
        # Every member needs its pod (someone shrank the StatefulSet under us).
        return Action("scale", f"StatefulSet has {obs.sts_replicas} pods, the ring names {top}",
                      replicas=top)

    joining = tuple(m.id for m in ring.members if m.state == "joining")
    leaving = tuple(m.id for m in ring.members if m.state == "leaving")
    if joining or leaving:
        migration = "Draining" if leaving else "Joining"
        members = leaving or joining
        pending = tuple(Coordinator.pending(ring, obs.statuses))
        if pending:
            dead = tuple(m for m in leaving if obs.statuses.get(m) is None)
            since = obs.transition_since
            if dead and since is not None and obs.now - since > DEAD_AFTER:
                keep = [m for m in ring.members if m.id not in dead]
                return Action("drop_dead", f"leaving member(s) {', '.join(dead)} unreachable "
                              f"for over {DEAD_AFTER:.0f} s: removed without a drain",
                              doc=ring.with_members(keep), dead=dead, migration=migration,
                              members=members)
            stale = tuple(
                m.id for m in ring.members
                if (s := obs.statuses.get(m.id)) is not None and s["ring_version"] < ring.version)
            return Action("wait", f"ring v{ring.version} settling", pending=pending,
                          push_to=stale, migration=migration, members=members)
        if leaving:
            keep = [m for m in ring.members if m.state != "leaving"]
            return Action("remove", f"{', '.join(leaving)} drained: removing from the ring",
                          doc=ring.with_members(keep), migration=migration, members=members)
        return Action("publish", f"{', '.join(joining)} took their share: now active",
                      doc=ring.with_state(joining, "active"), migration=migration,
                      members=members)

    n = len(ring.members)
    if ring.replication != dc.spec.replication_factor:
        return Action("publish", f"replication {ring.replication} -> "
                      f"{dc.spec.replication_factor}",
                      doc=RingDoc(ring.version + 1, dc.spec.replication_factor, ring.members))
    if desired > n:
        used = set(ordinals)
        new = [i for i in range(desired + len(used)) if i not in used][: desired - n]
        want = max(new) + 1
        if obs.sts_replicas is None or obs.sts_replicas < want:
            return Action("scale", f"scale up {n} -> {desired}: StatefulSet to {want} pods",
                          replicas=want)
        ids = tuple(dc.member_id(i) for i in new)
        missing = tuple(i for i in ids if obs.statuses.get(i) is None)
        if missing:
            return Action("wait", f"waiting for new pod(s) {', '.join(missing)} to answer",
                          pending=tuple(f"{i}: not answering yet" for i in missing),
                          delay=2.0, migration="Joining", members=ids)
        state = "active" if n == 0 else "joining"  # an empty cache has nothing to migrate
        doc = ring.with_members([*ring.members,
                                 *(Member(dc.member_id(i), dc.member_url(i), state)
                                   for i in new)])
        return Action("publish", f"scale up {n} -> {desired}: {', '.join(ids)} joining",
                      doc=doc, migration="Joining", members=ids)
    if desired < n:
        members_by_ordinal = sorted(ring.members, key=lambda m: dc.ordinal(m.id))
        gone = tuple(m.id for m in members_by_ordinal[desired:])
        remaining = [m.id for m in members_by_ordinal[:desired]]
        unknown = [m.id for m in ring.members if obs.statuses.get(m.id) is None]
        if unknown:
            return Action("wait", f"scale down {n} -> {desired} waits for the status of "
                          f"{', '.join(unknown)}",
                          pending=tuple(f"{i}: unreachable" for i in unknown), delay=2.0)
        statuses = {m.id: obs.statuses.get(m.id) for m in ring.members}
        check = check_capacity(statuses, remaining, ring.replication)
        if not check.ok:
            return Action("refuse", f"scale down {n} -> {desired} refused: {check.message}",
                          check=check, delay=5.0)
        return Action("publish", f"scale down {n} -> {desired}: {', '.join(gone)} leaving",
                      doc=ring.with_state(gone, "leaving"), check=check,
                      migration="Draining", members=gone)
    if obs.sts_replicas is None or obs.sts_replicas != top:
        return Action("scale", f"StatefulSet to the ring's {top} pod(s)", replicas=top)
    return Action("idle", "settled", delay=5.0)
