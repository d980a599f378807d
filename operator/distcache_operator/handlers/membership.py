"""Membership of a DistCache, one step: observe (the members' and pods' status), decide
(steps.decide: the ONE next action), act (carry it out once). Never waits for a migration:
what is pending goes to status and the step comes back after the returned delay."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from distcache_node.cluster.coordinator import Coordinator
from distcache_node.cluster.ring import Member, RingDoc
from distcache_operator import metrics
from distcache_operator.handlers.memory import DistCacheMemory
from distcache_operator.k8s import Api
from distcache_operator.model import DistCache
from distcache_operator.steps import (
    CONFIRM,
    Action,
    Observed,
    decide,
    join_deadline,
    refusal_reason,
)

Statuses = dict[str, dict[str, Any] | None]


@dataclass(frozen=True)
class Membership:
    action: Action
    observed: Observed  # the ring and StatefulSet as they are after the action (for status)
    pods: Mapping[str, bool]  # pod -> Running and Ready
    failing: Mapping[str, str]  # pod -> why its container cannot run
    delay: float  # seconds until the next step is useful
    member_lost: str | None  # Degraded MemberLost while survivors re-replicate (see below)


async def member_statuses(coordinator: Coordinator, dc: DistCache, ring: RingDoc,
                          sts: int | None) -> tuple[dict[str, Member], Statuses]:
    """Every ring member and every pod of the StatefulSet (a pod not in the ring as a
    joining member) with its GET /cluster/status (None: no answer)."""
    ids = {m.id: m for m in ring.members}
    for i in range(sts or 0):
        ids.setdefault(dc.member_id(i), Member(dc.member_id(i), dc.member_url(i), "joining"))
    return ids, await coordinator.statuses(list(ids.values()))


NOT_CREATED_GRACE = 10.0  # seconds a StatefulSet pod may be missing before it is said


async def not_created(api: Api, dc: DistCache, mem: DistCacheMemory, sts: int | None,
                      pods: Mapping[str, bool]) -> dict[str, str]:
    """Pods the StatefulSet should have but that do not exist after NOT_CREATED_GRACE, with
    the controller's reason (a ResourceQuota refusing them, ...): a blocked scale-up says
    why at once, instead of waiting for JoinStuck's deadline. Pod -> why."""
    now = asyncio.get_running_loop().time()
    missing = [dc.member_id(i) for i in range(sts or 0) if dc.member_id(i) not in pods]
    mem.missing_since = {pod: mem.missing_since.get(pod, now) for pod in missing}
    late = [pod for pod in missing if now - mem.missing_since[pod] >= NOT_CREATED_GRACE]
    if not late:
        return {}
    said = await api.failed_creates(dc)

    def why(pod: str) -> str:  # the newest that names the pod, else the newest at all
        named = [m for m in said if f'"{pod}"' in m or f"Pod {pod} " in m]
        return (named or said or ["no FailedCreate Event (yet)"])[0]

    return {pod: f"not created by StatefulSet {dc.statefulset}: {why(pod)}" for pod in late}


async def step_membership(api: Api, dc: DistCache, mem: DistCacheMemory,
                          coordinator: Coordinator, ring: RingDoc, sts: int | None,
                          members: Mapping[str, Member], statuses: Statuses,
                          previous: Mapping[str, Any]) -> Membership:
    mig = previous.get("migration") or {}
    seen = await api.pods(dc)
    pods = seen.ready
    failing = {**seen.failing, **await not_created(api, dc, mem, sts, pods)}
    node_zones = await api.node_zones(seen.nodes.values())
    zones = {pod: node_zones[node] for pod, node in seen.nodes.items() if node in node_zones}
    ahead = [members[m] for m, s in statuses.items()  # their ring is newer than the ConfigMap
             if s is not None and s["ring_version"] > ring.version]
    obs = Observed(ring, sts, statuses, transition_since=parse_time(mig.get("started")),
                   now=dt.datetime.now(dt.UTC).timestamp(), ready=pods,
                   unreachable_since={m["id"]: t for m in previous.get("members") or []
                                      if (t := parse_time(m.get("unreachableSince")))
                                      is not None},
                   held=await coordinator.rings(ahead) if ahead else {},
                   join_deadline=join_deadline(), last_error=mig.get("lastError"),
                   zones=zones)
    action = decide(dc, obs)
    delay = await act(api, dc, mem, action, ring, coordinator, sts, since=obs.transition_since)
    if action.event is not None:
        await api.event(dc, *action.event, warning=True)
    after = obs
    if action.kind in ("publish", "remove", "drop_dead", "create_ring") and action.doc:
        after = Observed(action.doc, sts, statuses, obs.transition_since, obs.now)
    elif action.kind == "scale" and action.replicas is not None:
        after = Observed(ring, action.replicas, statuses, obs.transition_since, obs.now)
    assert after.ring is not None
    settled = not Coordinator.pending(after.ring, statuses)
    return Membership(action, after, pods, failing, delay,
                      member_lost(previous, action, settled, obs.now))


def member_lost(previous: Mapping[str, Any], action: Action, settled: bool,
                now: float) -> str | None:
    """The Degraded MemberLost message, from the step that dropped a member undrained until
    the ring change after it has settled (the survivors hold R copies again): under-
    replication stays visible for as long as it lasts. Kept in status (status.memberLost,
    which a problem's Degraded leaves alone), so an operator restarted meanwhile, or one
    that reported another problem in between, keeps saying it."""
    if action.kind == "drop_dead":
        when = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        version = action.doc.version if action.doc else "?"
        return (f"{', '.join(action.dead)} lost at {when}: {action.reason}; some keys have "
                f"fewer than {_copies(action)} copies until the survivors have re-replicated "
                f"them (ring v{version}, or a later one, settled)")
    if settled:
        return None
    if previous.get("memberLost"):
        return str(previous["memberLost"])
    # Status written before status.memberLost existed: the Degraded condition said it.
    before: Mapping[str, Any] = next((c for c in previous.get("conditions") or []
                                      if c.get("type") == "Degraded"), {})
    if before.get("status") == "True" and before.get("reason") == "MemberLost":
        return str(before.get("message", ""))
    return None


def _copies(action: Action) -> str:
    return str(action.doc.replication) if action.doc else "R"


async def act(api: Api, dc: DistCache, mem: DistCacheMemory, action: Action, ring: RingDoc,
              coordinator: Coordinator, sts_before: int | None,
              since: float | None = None) -> float:
    """Carry out `action`; returns the delay until the next step. `since`: when the ring
    change in flight began (status migration.started, so it survives an operator restart),
    for the drain duration."""
    kind = action.kind
    if kind != "refuse":
        mem.last_event = None
    if kind == "scale":
        assert action.replicas is not None
        await api.scale_statefulset(dc, action.replicas)
        metrics.SCALES.labels("up" if action.replicas > (sts_before or 0) else "down").inc()
        await api.event(dc, "Scaling", action.reason)
        return 1.0
    if kind == "publish":
        assert action.doc is not None
        await coordinator.publish(action.doc, ring)
        await api.event(dc, "RingChanged", f"ring v{action.doc.version}: {action.reason}")
        return 0.5
    if kind == "remove":
        assert action.doc is not None
        # Settled twice CONFIRM apart: a write in flight on the old ring that lands on a
        # leaving member re-wakes its migration, and the second look catches it.
        await asyncio.sleep(CONFIRM)
        if coordinator.pending(ring, await coordinator.statuses(ring.members)):
            return 0.5
        await coordinator.store.save(action.doc, ring)
        await coordinator.push(action.doc, ring.members)  # the leaving ones hear it too
        await api.event(dc, "Drained", f"ring v{action.doc.version}: {action.reason}")
        metrics.DRAINS.inc(len(action.members))
        if since is not None:
            metrics.DRAIN_SECONDS.observe(max(0.0, dt.datetime.now(dt.UTC).timestamp() - since))
        return 0.5
    if kind == "drop_dead":
        assert action.doc is not None
        await coordinator.store.save(action.doc, ring)
        await coordinator.push(action.doc, ring.members)
        await api.event(dc, "MemberLost", action.reason, warning=True)
        return 0.5
    if kind == "wait":
        if action.push_to:
            await coordinator.push(ring, [m for m in ring.members
                                          if m.id in set(action.push_to)])
        return action.delay
    if kind == "refuse":
        key = ("refuse", action.reason)
        if mem.last_event != key:
            mem.last_event = key
            await api.event(dc, refusal_reason(action), action.reason, warning=True)
        return action.delay
    return action.delay


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None
