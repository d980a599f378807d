"""The operator's side of the membership state machine: a DistCache as a `resize.Target`.

The machine itself (and the long account of scale-up, scale-down, dead members, ring
conflicts and taking a join back) lives in distcache_node/cluster/resize.py, shared with
`distcache local scale`. Here: what a DistCache wants and how its pods are named, the
operator's join deadline setting, and the Degraded reason of a refusal. Each reconcile reads
the ring ConfigMap, the StatefulSet, its pods' readiness and every member's GET
/cluster/status, calls `decide`, carries out the action, and comes back later. A REMOVE is
carried out only if the ring is still settled CONFIRM seconds later (resize.py says why).
"""

from __future__ import annotations

import os

from distcache_node.cluster import resize
from distcache_node.cluster.resize import (
    CONFIRM,
    DEAD_AFTER,
    JOIN_DEADLINE,
    WAIT,
    Action,
    Kind,
    Observed,
    Statuses,
    Target,
)
from distcache_operator.model import DistCache

__all__ = ["CONFIRM", "DEAD_AFTER", "JOIN_DEADLINE", "JOIN_DEADLINE_ENV", "WAIT", "Action", "Kind",
           "Observed", "Statuses", "decide", "join_deadline", "refusal_reason", "target"]

JOIN_DEADLINE_ENV = "DISTCACHE_OPERATOR_JOIN_DEADLINE_SECONDS"


def join_deadline() -> float:
    """JOIN_DEADLINE, or the operator's DISTCACHE_OPERATOR_JOIN_DEADLINE_SECONDS."""
    return float(os.environ.get(JOIN_DEADLINE_ENV, JOIN_DEADLINE))


def target(dc: DistCache) -> Target:
    """What the DistCache asks for, in the machine's terms: pods of a StatefulSet."""
    return Target(size=dc.spec.replicas, replication=dc.spec.replication_factor,
                  member_id=dc.member_id, member_url=dc.member_url, ordinal=dc.ordinal,
                  record=f"ring ConfigMap {dc.ring_configmap}", workload="StatefulSet",
                  slot="pod", size_setting="spec.replicas")


def decide(dc: DistCache, obs: Observed) -> Action:
    """The one next action for `dc` (Observed.running: the StatefulSet's replicas)."""
    return resize.decide(target(dc), obs)


def refusal_reason(action: Action) -> str:
    """The Degraded reason and Event of a refused change: a shrink or a replication raise."""
    return "ReplicationRefused" if action.reason.startswith("replication") \
        else "ScaleDownRefused"

