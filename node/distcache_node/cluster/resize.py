"""The membership state machine: from what is observed now, the ONE next action. Pure.

One machine for every coordinator: the Kubernetes operator (distcache_operator.steps adapts
a DistCache to it) and `distcache local scale` (local/runner.py). The caller says what it
wants and how its members are named (`Target`), observes (`Observed`), calls `decide`,
carries out the action, and comes back later. Nothing that matters lives in the caller's
memory: a coordinator restarted at any point reads the same ring and statuses and picks the
same next step. Member slots are numbered like a StatefulSet's pods: ordinals 0..n-1, and a
shrink takes the highest ones.

Scale-up:   more slots (pods, processes) -> the new ones answer -> add them `joining`
            -> settled -> mark them `active` -> settled.
Scale-down: capacity check (refuse, changing nothing, when it fails) -> mark the highest
            ordinals `leaving` -> settled (their keys placed on the others) -> ring without
            them -> only then fewer slots.
A transition in flight is finished before a new desired size is acted on, with one
exception: joining members that are not up (a pod in a crash loop, OOM-killed while it takes
its share) are taken back when the desired size drops below them. Past `join_deadline` a
join held up by such members is Degraded (one Warning Event naming them).

Dead members: a leaving member is removed without a drain once it has been unreachable
(no answer to GET /cluster/status and its slot not Ready) for `Target.dead_after` seconds in
a row, counted from when each member was first seen so (`Observed.unreachable_since`, which
the operator keeps in status.members[].unreachableSince so that a restart keeps the count),
never from when the drain began: with R >= 2 its keys have copies elsewhere and survivors
re-replicate.

The ring version never goes backwards: the ring record (ConfigMap, file) is the record, but
the nodes hold the ring too. When there is no record (deleted by hand) while nodes answer, or
a node runs a newer ring than the record, the newest ring a node holds is published again at
a version above every one reported (Warning Event): a ring rebuilt from the slots alone would
forget members that were never drained, and a node ahead of the record is not "settled" on
it.

Why a joining member may be taken back without a drain (ring.py, migration.py): a member
that joins is inserted into each key's preference list, so a key it would own keeps R-1 of
its old owners as owners; those never drop their copy (only a copy its holder no longer
owns is ever dropped) and writes during the join go to them too. Removing the joining member
puts every key back on its old owners, and the old owner that stayed an owner sends the copy
to the one that lost it (if that one swept its surplus copy meanwhile). With R = 1 there is
no such second copy (the sole old owner hands the key over and drops it), so there the
member is marked `leaving` instead and drained like any other (removed undrained only after
dead_after of unreachability, as any leaving member).

Acting on a REMOVE: the caller looks again CONFIRM seconds later and removes only if the ring
is still settled (`Coordinator.pending` empty): a write still in flight on the old ring that
lands on a leaving member re-wakes its migration, and the second look catches it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from distcache_node.cluster.coordinator import CapacityCheck, Coordinator, check_capacity
from distcache_node.cluster.ring import Member, RingDoc

DEAD_AFTER = 120.0  # seconds a leaving member may stay unreachable in a row before it is dropped
JOIN_DEADLINE = 600.0  # seconds a join may wait for members that are not up before Degraded
WAIT = 1.0  # seconds between steps while something is in flight
CONFIRM = 0.3  # before removing members: settled twice this far apart (see the docstring)

Statuses = Mapping[str, Mapping[str, Any] | None]


class Kind(enum.StrEnum):
    """What the caller does next. A StrEnum: `action.kind == "scale"` holds, and the value
    is what metrics and logs print."""

    CREATE_RING = "create_ring"  # store `doc` as the first ring (nothing stored yet)
    SCALE = "scale"  # run `replicas` member slots (ordinals 0..replicas-1)
    PUBLISH = "publish"  # store `doc` (compare-and-swap on the observed ring), push it
    REMOVE = "remove"  # after the CONFIRM look: store `doc`, push it to the old members too
    DROP_DEAD = "drop_dead"  # store `doc` without the dead members, push it to the old members
    WAIT = "wait"  # push the observed ring to `push_to`, look again after `delay`
    REFUSE = "refuse"  # a change the members cannot hold: nothing changed, say why
    IDLE = "idle"  # nothing to do
    INVALID = "invalid"  # the caller could not act at all (bad spec, missing Secret): not
    #                      decided here, but an Action the operator reports like the others


@dataclass(frozen=True)
class Target:
    """What the caller wants and how its members are named: everything the machine needs
    to know about a DistCache or a local cluster. The words only shape messages."""

    size: int  # the desired number of members
    replication: int  # the desired replication factor
    member_id: Callable[[int], str]  # ordinal -> member id
    member_url: Callable[[int], str]  # ordinal -> the URL peers reach it at
    ordinal: Callable[[str], int]  # member id -> ordinal
    force: bool = False  # shrink (or raise replication) even when capacity says no: evictions
    dead_after: float = DEAD_AFTER
    record: str = "ring record"  # where the ring is kept ("ring ConfigMap x", "ring file x")
    workload: str = "cluster"  # what runs the slots ("StatefulSet", "local cluster")
    slot: str = "node"  # one slot ("pod", "node")
    size_setting: str = "the desired size"  # where the size is set ("spec.replicas")


@dataclass(frozen=True)
class Observed:
    ring: RingDoc | None  # None: no ring stored yet
    running: int | None  # member slots running (StatefulSet replicas); None: none set up yet
    statuses: Statuses  # member or slot id -> GET /cluster/status, None when unreachable
    transition_since: float | None = None  # when the current ring change started
    now: float = 0.0
    ready: Mapping[str, bool] = field(default_factory=dict)  # slot -> running and ready
    # member -> when it was first seen unreachable (the caller keeps these between steps)
    unreachable_since: Mapping[str, float] = field(default_factory=dict)
    # slot -> the ring it holds (GET /cluster/ring), asked when there is no ring record or
    # a node reports a newer ring version than the record's
    held: Mapping[str, RingDoc] = field(default_factory=dict)
    join_deadline: float = JOIN_DEADLINE
    last_error: str | None = None  # the Degraded message already said (one Event each)
    # slot -> its failure domain (the zone of a pod's node), where known: a member joins
    # with it, and a settled ring takes a changed one (zone-aware placement, see ring.py)
    zones: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Action:
    # A Kind. Typed `Kind | str` so that a caller may still write Action("wait", ...); it
    # is made a Kind at once (an unknown kind is a ValueError here, not a silent no-op).
    kind: Kind | str
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
    # member -> since when it is unreachable (for the caller to keep: see Observed)
    unreachable_since: Mapping[str, float] = field(default_factory=dict)
    degraded: tuple[str, str] | None = None  # (reason, message): Degraded while it lasts
    event: tuple[str, str] | None = None  # (reason, message): a Warning Event to emit

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", Kind(self.kind))


def _unreachable(obs: Observed, member: str) -> bool:
    """No answer to GET /cluster/status and the slot not running and ready: one failed call
    to a node its supervisor says serves is not a dead member."""
    return obs.statuses.get(member) is None and not obs.ready.get(member, False)


def _up(obs: Observed, member: str) -> bool:
    """The slot is ready, or the node answers and says it is ready."""
    status = obs.statuses.get(member)
    return bool(obs.ready.get(member, False) or (status is not None and status.get("ready")))


def _reported(obs: Observed) -> dict[str, int]:
    return {m: int(s["ring_version"]) for m, s in obs.statuses.items() if s is not None}


def _newest_held(obs: Observed) -> RingDoc | None:
    return max(obs.held.values(), key=lambda d: d.version, default=None)


def first_ring(t: Target, size: int, version: int = 1,
               zones: Mapping[str, str] | None = None) -> RingDoc:
    """The ring of a new cluster: every slot a member from the start (nothing to migrate)."""
    zones = zones or {}
    return RingDoc(version, t.replication,
                   tuple(Member(t.member_id(i), t.member_url(i), "active",
                                zones.get(t.member_id(i), "")) for i in range(size)))


def _moved_zones(obs: Observed, ring: RingDoc) -> dict[str, str]:
    """Members whose slot is now in another known zone than the ring says (first seen, or
    a pod rescheduled onto a node in another zone)."""
    return {m.id: zone for m in ring.members
            if (zone := obs.zones.get(m.id, "")) and zone != m.zone}


def decide(t: Target, obs: Observed) -> Action:
    since: dict[str, float] = {}
    if obs.ring is not None:
        since = {m.id: obs.unreachable_since.get(m.id, obs.now) for m in obs.ring.members
                 if _unreachable(obs, m.id)}
    return replace(_decide(t, obs, since), unreachable_since=since)


def _create(t: Target, obs: Observed) -> Action:
    reported = _reported(obs)
    top = max(reported.values(), default=0)
    if top == 0:  # a new cluster, or nodes that hold no ring: every slot a member
        n = t.size if obs.running is None else obs.running
        return Action(Kind.CREATE_RING, f"new cache of {n} member(s)",
                      doc=first_ring(t, n, zones=obs.zones))
    newest = _newest_held(obs)
    if newest is None or newest.version < top:
        holders = sorted(m for m, v in reported.items() if v == top)
        return Action(Kind.WAIT, f"no {t.record}, but {', '.join(holders)} run ring v{top}: "
                      "reading it before the ring is created again",
                      pending=tuple(f"{m}: holds ring v{top}" for m in holders), delay=2.0)
    doc = RingDoc(max(top, newest.version) + 1, newest.replication, newest.members)
    message = (f"{t.record} was missing while the {t.slot}s run ring v{newest.version}: "
               f"created again from it as v{doc.version} ({len(doc.members)} member(s) as "
               f"that ring names them, not one per {t.slot})")
    return Action(Kind.CREATE_RING, message, doc=doc, event=("RingRecovered", message))


def _ahead(t: Target, obs: Observed, ring: RingDoc) -> Action | None:
    """A node runs a newer ring than the record (deleted and created again by hand, a node
    drained itself): a conflict, never 'settled'. The newest ring a node holds is published
    again above every version reported."""
    reported = _reported(obs)
    ahead = sorted(m for m, v in reported.items() if v > ring.version)
    if not ahead:
        return None
    top = max(reported.values())
    newest = _newest_held(obs)
    said = f"{', '.join(ahead)} on ring v{top}, ahead of v{ring.version} in the {t.record}"
    if newest is None or newest.version < top:
        return Action(Kind.WAIT, f"ring conflict: {said}: reading their ring",
                      pending=tuple(f"{m}: on ring v{reported[m]}, ahead of v{ring.version}"
                                    for m in ahead), delay=2.0)
    doc = RingDoc(max(top, ring.version) + 1, newest.replication, newest.members)
    message = (f"ring conflict: {said}: publishing the newest ring the nodes hold "
               f"(v{newest.version}, {len(doc.members)} member(s)) as v{doc.version}")
    return Action(Kind.PUBLISH, message, doc=doc, event=("RingConflict", message))


def _stuck(t: Target, obs: Observed, waiting: tuple[str, ...], action: Action) -> Action:
    """A join past the deadline while `waiting` (joining members or new slots) are not up:
    Degraded, with one Event naming them (Observed.last_error remembers it)."""
    since = obs.transition_since
    if not waiting or since is None or obs.now - since <= obs.join_deadline:
        return action
    message = (f"scale-up stuck: {', '.join(waiting)} not up {obs.join_deadline:.0f} s after "
               "the join began (crash loop, OOM kill, unschedulable?): lower "
               f"{t.size_setting} to take them back, or fix the {t.slot}s")
    event = None if obs.last_error == message else ("JoinStuck", message)
    return replace(action, degraded=("JoinStuck", message), event=event)


def _decide(t: Target, obs: Observed, since: Mapping[str, float]) -> Action:
    desired = t.size
    ring = obs.ring
    if ring is None:
        return _create(t, obs)
    conflict = _ahead(t, obs, ring)
    if conflict is not None:
        return conflict
    ordinals = sorted(t.ordinal(m.id) for m in ring.members)
    top = ordinals[-1] + 1 if ordinals else 0
    if obs.running is not None and obs.running < top:
        # Every member needs its slot (someone shrank the workload under us).
        return Action(Kind.SCALE, f"{t.workload} has {obs.running} {t.slot}s, the ring "
                      f"names {top}", replicas=top)

    joining = tuple(m.id for m in ring.members if m.state == "joining")
    leaving = tuple(m.id for m in ring.members if m.state == "leaving")
    if joining and desired < len(ring.members):
        # The desired size dropped below members still joining that are not up: take them
        # back (see the module docstring for why no key is lost), the rest finishes.
        by_ordinal = sorted(ring.members, key=lambda m: t.ordinal(m.id))
        back = tuple(m.id for m in by_ordinal[desired:]
                     if m.state == "joining" and not _up(obs, m.id))
        if back and ring.replication >= 2:
            return Action(Kind.PUBLISH, f"{', '.join(back)} joined but never came up: taken "
                          f"back out of the ring ({t.size_setting} is {desired}); their keys "
                          "are still on their old owners",
                          doc=ring.with_members(m for m in ring.members if m.id not in back),
                          migration="Joining", members=back)
        if back:
            return Action(Kind.PUBLISH, f"{', '.join(back)} joined but never came up: leaving "
                          f"again ({t.size_setting} is {desired}; replication 1: drained "
                          "first)", doc=ring.with_state(back, "leaving"), migration="Draining",
                          members=back)
    if joining or leaving:
        return _transition(t, obs, since, ring, joining, leaving)

    n = len(ring.members)
    if ring.replication != t.replication:
        new_r = t.replication
        if new_r > ring.replication:
            # More copies of every key on the same members: checked like a shrink.
            check = check_capacity({m.id: obs.statuses.get(m.id) for m in ring.members},
                                   [m.id for m in ring.members], ring.replication, new_r)
            if not check.ok and not t.force:
                return Action(Kind.REFUSE, f"replication {ring.replication} -> {new_r} "
                              f"refused: {check.message}", check=check, delay=5.0)
        return Action(Kind.PUBLISH, f"replication {ring.replication} -> {new_r}",
                      doc=RingDoc(ring.version + 1, new_r, ring.members))
    if desired > n:
        return _grow(t, obs, ring, ordinals)
    if desired < n:
        return _shrink(t, obs, ring)
    if obs.running is None or obs.running != top:
        return Action(Kind.SCALE, f"{t.workload} to the ring's {top} {t.slot}(s)", replicas=top)
    moved = _moved_zones(obs, ring)
    if moved:
        # Placement follows the zones: keys move like on any ring change (old owners serve
        # them until every member has placed the new ring).
        said = ", ".join(f"{m} in {z}" for m, z in sorted(moved.items()))
        return Action(Kind.PUBLISH, f"zones: {said}", doc=ring.with_zones(moved))
    return Action(Kind.IDLE, "settled", delay=5.0)


def _transition(t: Target, obs: Observed, since: Mapping[str, float], ring: RingDoc,
                joining: tuple[str, ...], leaving: tuple[str, ...]) -> Action:
    """Members joining or leaving: wait until the ring settles, then the next state."""
    migration = "Draining" if leaving else "Joining"
    members = leaving or joining
    pending = tuple(Coordinator.pending(ring, obs.statuses))
    if pending:
        dead = tuple(m for m in leaving if m in since and obs.now - since[m] > t.dead_after)
        if dead:
            keep = [m for m in ring.members if m.id not in dead]
            return Action(Kind.DROP_DEAD, f"leaving member(s) {', '.join(dead)} unreachable "
                          f"for over {t.dead_after:.0f} s: removed without a drain",
                          doc=ring.with_members(keep), dead=dead, migration=migration,
                          members=members)
        stale = tuple(
            m.id for m in ring.members
            if (s := obs.statuses.get(m.id)) is not None and s["ring_version"] < ring.version)
        wait = Action(Kind.WAIT, f"ring v{ring.version} settling", pending=pending,
                      push_to=stale, migration=migration, members=members)
        return _stuck(t, obs, tuple(m for m in joining if not _up(obs, m)), wait)
    if leaving:
        keep = [m for m in ring.members if m.state != "leaving"]
        return Action(Kind.REMOVE, f"{', '.join(leaving)} drained: removing from the ring",
                      doc=ring.with_members(keep), migration=migration, members=members)
    return Action(Kind.PUBLISH, f"{', '.join(joining)} took their share: now active",
                  doc=ring.with_state(joining, "active"), migration=migration,
                  members=members)


def _grow(t: Target, obs: Observed, ring: RingDoc, ordinals: list[int]) -> Action:
    n, desired = len(ring.members), t.size
    used = set(ordinals)
    new = [i for i in range(desired + len(used)) if i not in used][: desired - n]
    want = max(new) + 1
    if obs.running is None or obs.running < want:
        return Action(Kind.SCALE, f"scale up {n} -> {desired}: {t.workload} to {want} "
                      f"{t.slot}s", replicas=want)
    ids = tuple(t.member_id(i) for i in new)
    missing = tuple(i for i in ids if obs.statuses.get(i) is None)
    if missing:
        wait = Action(Kind.WAIT, f"waiting for new {t.slot}(s) {', '.join(missing)} to answer",
                      pending=tuple(f"{i}: not answering yet" for i in missing),
                      delay=2.0, migration="Joining", members=ids)
        return _stuck(t, obs, missing, wait)
    state = "active" if n == 0 else "joining"  # an empty cluster has nothing to migrate
    doc = ring.with_members([*ring.members,
                             *(Member(t.member_id(i), t.member_url(i), state,
                                      obs.zones.get(t.member_id(i), "")) for i in new)])
    return Action(Kind.PUBLISH, f"scale up {n} -> {desired}: {', '.join(ids)} joining",
                  doc=doc, migration="Joining", members=ids)


def _shrink(t: Target, obs: Observed, ring: RingDoc) -> Action:
    n, desired = len(ring.members), t.size
    by_ordinal = sorted(ring.members, key=lambda m: t.ordinal(m.id))
    gone = tuple(m.id for m in by_ordinal[desired:])
    remaining = [m.id for m in by_ordinal[:desired]]
    unknown = [m.id for m in ring.members if obs.statuses.get(m.id) is None]
    if unknown:
        return Action(Kind.WAIT, f"scale down {n} -> {desired} waits for the status of "
                      f"{', '.join(unknown)}",
                      pending=tuple(f"{i}: unreachable" for i in unknown), delay=2.0)
    statuses = {m.id: obs.statuses.get(m.id) for m in ring.members}
    check = check_capacity(statuses, remaining, ring.replication)
    if not check.ok and not (t.force and remaining):
        return Action(Kind.REFUSE, f"scale down {n} -> {desired} refused: {check.message}",
                      check=check, delay=5.0)
    return Action(Kind.PUBLISH, f"scale down {n} -> {desired}: {', '.join(gone)} leaving",
                  doc=ring.with_state(gone, "leaving"), check=check,
                  migration="Draining", members=gone)
