"""The membership step machine: from what is observed now, the ONE next action. Pure.

Each reconcile reads the ring ConfigMap, the StatefulSet, its pods' readiness and every
member's GET /cluster/status, calls `decide`, carries out the action, and comes back later.
Nothing that matters lives in the operator's memory: an operator restarted at any point reads
the same ring and status and picks the same next step.

Scale-up:   grow the StatefulSet -> the new pods answer -> add them `joining` -> settled
            -> mark them `active` -> settled.
Scale-down: capacity check (refuse, changing nothing, when it fails) -> mark the highest
            ordinals `leaving` -> settled (their keys placed on the others) -> ring without
            them -> only then shrink the StatefulSet.
A transition in flight is finished before a new spec.replicas is acted on, with one
exception: joining members that are not up (a pod in a crash loop, OOM-killed while it takes
its share) are taken back when spec.replicas drops below them. Past `join_deadline` a join
held up by such members is Degraded (one Warning Event naming them).

Dead members: a leaving member is removed without a drain once it has been unreachable
(no answer to GET /cluster/status and its pod not Ready) for DEAD_AFTER seconds in a row,
counted from when each member was first seen so (status.members[].unreachableSince, so an
operator restart keeps the count), never from when the drain began: with R >= 2 its keys have
copies elsewhere and survivors re-replicate.

The ring version never goes backwards: the ring ConfigMap is the record, but the nodes hold
the ring too. When there is no ConfigMap (deleted by hand) while pods answer, or a node runs
a newer ring than the ConfigMap, the newest ring a node holds is published again at a version
above every one reported (Warning Event): a ring rebuilt from the pods alone would forget
members that were never drained, and a node ahead of the ConfigMap is not "settled" on it.

Why a joining member may be taken back without a drain (ring.py, migration.py): a member
that joins is inserted into each key's preference list, so a key it would own keeps R-1 of
its old owners as owners; those never drop their copy (only a copy its holder no longer
owns is ever dropped) and writes during the join go to them too. Removing the joining member
puts every key back on its old owners, and the old owner that stayed an owner sends the copy
to the one that lost it (if that one swept its surplus copy meanwhile). With R = 1 there is
no such second copy (the sole old owner hands the key over and drops it), so there the
member is marked `leaving` instead and drained like any other (removed undrained only after
DEAD_AFTER of unreachability, as any leaving member).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from distcache_node.cluster.coordinator import CapacityCheck, Coordinator, check_capacity
from distcache_node.cluster.ring import Member, RingDoc
from distcache_operator.builders import initial_ring
from distcache_operator.model import DistCache

DEAD_AFTER = 120.0  # seconds a leaving member may stay unreachable in a row before it is dropped
JOIN_DEADLINE = 600.0  # seconds a join may wait for members that are not up before Degraded
JOIN_DEADLINE_ENV = "DISTCACHE_OPERATOR_JOIN_DEADLINE_SECONDS"
WAIT = 1.0  # seconds between steps while something is in flight

Statuses = Mapping[str, Mapping[str, Any] | None]


def join_deadline() -> float:
    """JOIN_DEADLINE, or the operator's DISTCACHE_OPERATOR_JOIN_DEADLINE_SECONDS."""
    return float(os.environ.get(JOIN_DEADLINE_ENV, JOIN_DEADLINE))


@dataclass(frozen=True)
class Observed:
    ring: RingDoc | None  # None: no ring ConfigMap yet
    sts_replicas: int | None  # None: no StatefulSet yet
    statuses: Statuses  # member or pod id -> GET /cluster/status, None when unreachable
    transition_since: float | None = None  # when the current ring change started (status)
    now: float = 0.0
    ready: Mapping[str, bool] = field(default_factory=dict)  # pod -> Running and Ready
    # member -> when it was first seen unreachable, from status (members[].unreachableSince)
    unreachable_since: Mapping[str, float] = field(default_factory=dict)
    # pod -> the ring it holds (GET /cluster/ring), asked when there is no ConfigMap or a
    # node reports a newer ring version than the ConfigMap's
    held: Mapping[str, RingDoc] = field(default_factory=dict)
    join_deadline: float = JOIN_DEADLINE
    last_error: str | None = None  # status.migration.lastError: an Event already said it


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
    # member -> since when it is unreachable (for status: members[].unreachableSince)
    unreachable_since: Mapping[str, float] = field(default_factory=dict)
    degraded: tuple[str, str] | None = None  # (reason, message): Degraded while it lasts
    event: tuple[str, str] | None = None  # (reason, message): a Warning Event to emit


def refusal_reason(action: Action) -> str:
    """The Degraded reason and Event of a refused change: a shrink or a replication raise."""
    return "ReplicationRefused" if action.reason.startswith("replication") \
        else "ScaleDownRefused"


def _ordinals(dc: DistCache, doc: RingDoc) -> list[int]:
    return sorted(dc.ordinal(m.id) for m in doc.members)


def _unreachable(obs: Observed, member: str) -> bool:
    """No answer to GET /cluster/status and the pod not Running and Ready: one failed call
    to a pod Kubernetes says serves is not a dead member."""
    return obs.statuses.get(member) is None and not obs.ready.get(member, False)


def _up(obs: Observed, member: str) -> bool:
    """The pod is Ready, or the node answers and says it is ready."""
    status = obs.statuses.get(member)
    return bool(obs.ready.get(member, False) or (status is not None and status.get("ready")))


def _reported(obs: Observed) -> dict[str, int]:
    return {m: int(s["ring_version"]) for m, s in obs.statuses.items() if s is not None}


def _newest_held(obs: Observed) -> RingDoc | None:
    return max(obs.held.values(), key=lambda d: d.version, default=None)


def decide(dc: DistCache, obs: Observed) -> Action:
    since: dict[str, float] = {}
    if obs.ring is not None:
        since = {m.id: obs.unreachable_since.get(m.id, obs.now) for m in obs.ring.members
                 if _unreachable(obs, m.id)}
    return replace(_decide(dc, obs, since), unreachable_since=since)


def _create(dc: DistCache, obs: Observed) -> Action:
    reported = _reported(obs)
    top = max(reported.values(), default=0)
    if top == 0:  # a new cache, or pods that hold no ring: every pod a member
        n = dc.spec.replicas if obs.sts_replicas is None else obs.sts_replicas
        return Action("create_ring", f"new cache of {n} member(s)", doc=initial_ring(dc, n))
    newest = _newest_held(obs)
    if newest is None or newest.version < top:
        holders = sorted(m for m, v in reported.items() if v == top)
        return Action("wait", f"no ring ConfigMap, but {', '.join(holders)} run ring v{top}: "
                      "reading it before the ring is created again",
                      pending=tuple(f"{m}: holds ring v{top}" for m in holders), delay=2.0)
    doc = RingDoc(max(top, newest.version) + 1, newest.replication, newest.members)
    message = (f"ring ConfigMap {dc.ring_configmap} was missing while the pods run ring "
               f"v{newest.version}: created again from it as v{doc.version} "
               f"({len(doc.members)} member(s) as that ring names them, not one per pod)")
    return Action("create_ring", message, doc=doc, event=("RingRecovered", message))


def _ahead(obs: Observed, ring: RingDoc) -> Action | None:
    """A node runs a newer ring than the ConfigMap (deleted and created again by hand, a node
    drained itself): a conflict, never 'settled'. The newest ring a node holds is published
    again above every version reported."""
    reported = _reported(obs)
    ahead = sorted(m for m, v in reported.items() if v > ring.version)
    if not ahead:
        return None
    top = max(reported.values())
    newest = _newest_held(obs)
    said = (f"{', '.join(ahead)} on ring v{top}, ahead of the ConfigMap's v{ring.version}")
    if newest is None or newest.version < top:
        return Action("wait", f"ring conflict: {said}: reading their ring",
                      pending=tuple(f"{m}: on ring v{reported[m]}, ahead of v{ring.version}"
                                    for m in ahead), delay=2.0)
    doc = RingDoc(max(top, ring.version) + 1, newest.replication, newest.members)
    message = (f"ring conflict: {said}: publishing the newest ring the nodes hold "
               f"(v{newest.version}, {len(doc.members)} member(s)) as v{doc.version}")
    return Action("publish", message, doc=doc, event=("RingConflict", message))


def _stuck(obs: Observed, waiting: tuple[str, ...], action: Action) -> Action:
    """A join past the deadline while `waiting` (joining members or new pods) are not up:
    Degraded, with one Event naming them (status.migration.lastError remembers it)."""
    since = obs.transition_since
    if not waiting or since is None or obs.now - since <= obs.join_deadline:
        return action
    message = (f"scale-up stuck: {', '.join(waiting)} not up {obs.join_deadline:.0f} s after "
               "the join began (crash loop, OOM kill, unschedulable?): lower spec.replicas to "
               "take them back, or fix the pods")
    event = None if obs.last_error == message else ("JoinStuck", message)
    return replace(action, degraded=("JoinStuck", message), event=event)


def _decide(dc: DistCache, obs: Observed, since: Mapping[str, float]) -> Action:
    desired = dc.spec.replicas
    ring = obs.ring
    if ring is None:
        return _create(dc, obs)
    conflict = _ahead(obs, ring)
    if conflict is not None:
        return conflict
    ordinals = _ordinals(dc, ring)
    top = ordinals[-1] + 1 if ordinals else 0
    if obs.sts_replicas is not None and obs.sts_replicas < top:
        # Every member needs its pod (someone shrank the StatefulSet under us).
        return Action("scale", f"StatefulSet has {obs.sts_replicas} pods, the ring names {top}",
                      replicas=top)

    joining = tuple(m.id for m in ring.members if m.state == "joining")
    leaving = tuple(m.id for m in ring.members if m.state == "leaving")
    if joining and desired < len(ring.members):
        # spec.replicas dropped below members still joining that are not up: take them
        # back (see the module docstring for why no key is lost), the rest finishes.
        by_ordinal = sorted(ring.members, key=lambda m: dc.ordinal(m.id))
        back = tuple(m.id for m in by_ordinal[desired:]
                     if m.state == "joining" and not _up(obs, m.id))
        if back and ring.replication >= 2:
            return Action("publish", f"{', '.join(back)} joined but never came up: taken "
                          f"back out of the ring (spec.replicas is {desired}); their keys "
                          "are still on their old owners",
                          doc=ring.with_members(m for m in ring.members if m.id not in back),
                          migration="Joining", members=back)
        if back:
            return Action("publish", f"{', '.join(back)} joined but never came up: leaving "
                          f"again (spec.replicas is {desired}; replication 1: drained first)",
                          doc=ring.with_state(back, "leaving"), migration="Draining",
                          members=back)
    if joining or leaving:
        migration = "Draining" if leaving else "Joining"
        members = leaving or joining
        pending = tuple(Coordinator.pending(ring, obs.statuses))
        if pending:
            dead = tuple(m for m in leaving
                         if m in since and obs.now - since[m] > DEAD_AFTER)
            if dead:
                keep = [m for m in ring.members if m.id not in dead]
                return Action("drop_dead", f"leaving member(s) {', '.join(dead)} unreachable "
                              f"for over {DEAD_AFTER:.0f} s: removed without a drain",
                              doc=ring.with_members(keep), dead=dead, migration=migration,
                              members=members)
            stale = tuple(
                m.id for m in ring.members
                if (s := obs.statuses.get(m.id)) is not None and s["ring_version"] < ring.version)
            wait = Action("wait", f"ring v{ring.version} settling", pending=pending,
                          push_to=stale, migration=migration, members=members)
            return _stuck(obs, tuple(m for m in joining if not _up(obs, m)), wait)
        if leaving:
            keep = [m for m in ring.members if m.state != "leaving"]
            return Action("remove", f"{', '.join(leaving)} drained: removing from the ring",
                          doc=ring.with_members(keep), migration=migration, members=members)
        return Action("publish", f"{', '.join(joining)} took their share: now active",
                      doc=ring.with_state(joining, "active"), migration=migration,
                      members=members)

    n = len(ring.members)
    if ring.replication != dc.spec.replication_factor:
        new_r = dc.spec.replication_factor
        if new_r > ring.replication:
            # More copies of every key on the same members: checked like a shrink.
            check = check_capacity({m.id: obs.statuses.get(m.id) for m in ring.members},
                                   [m.id for m in ring.members], ring.replication, new_r)
            if not check.ok:
                return Action("refuse", f"replication {ring.replication} -> {new_r} refused: "
                              f"{check.message}", check=check, delay=5.0)
        return Action("publish", f"replication {ring.replication} -> {new_r}",
                      doc=RingDoc(ring.version + 1, new_r, ring.members))
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
            wait = Action("wait", f"waiting for new pod(s) {', '.join(missing)} to answer",
                          pending=tuple(f"{i}: not answering yet" for i in missing),
                          delay=2.0, migration="Joining", members=ids)
            return _stuck(obs, missing, wait)
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
