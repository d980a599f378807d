"""The ring of a DistCache: read from its ConfigMap, or created when there is none (a new
cache, or a ConfigMap deleted by hand under running pods, which still hold the ring)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from distcache_node.cluster.coordinator import Coordinator
from distcache_node.cluster.ring import Member, RingDoc, RingError
from distcache_operator.handlers.problem import Problem
from distcache_operator.k8s import Api
from distcache_operator.model import DistCache
from distcache_operator.steps import Observed, decide

log = logging.getLogger("distcache.operator")


class RingRecord(Protocol):
    """Where the ring is kept (k8s.ConfigMapRingStore: the ring ConfigMap, compare-and-swap
    on its resourceVersion)."""

    async def load(self) -> RingDoc: ...

    async def load_or_none(self) -> RingDoc | None: ...

    async def save(self, doc: RingDoc, expected: RingDoc | None) -> None: ...


@dataclass(frozen=True)
class RingLoad:
    ring: RingDoc | None  # None: not created this step (a pod holds a ring not read yet)
    created: bool = False  # created this step: the owned objects are applied at once
    delay: float = 0.0  # with ring None: when to look again


async def load_ring(api: Api, dc: DistCache, store: RingRecord,
                    coordinator: Coordinator, sts: int | None) -> RingLoad:
    """The ring ConfigMap's ring, or a new one. Pods that still hold a ring (members never
    drained among them) make decide start the new one from the newest they hold, above
    every version they report. Raises Problem for a ConfigMap that is not a ring."""
    try:
        ring = await store.load_or_none()
    except (RingError, ValueError) as exc:
        raise Problem("RingInvalid",
                      f"ring ConfigMap {dc.ring_configmap} is unusable: {exc}") from None
    if ring is not None:
        return RingLoad(ring)
    pods_now = [Member(dc.member_id(i), dc.member_url(i)) for i in range(sts or 0)]
    answers = await coordinator.statuses(pods_now)
    held = await coordinator.rings([m for m in pods_now if answers.get(m.id) is not None])
    action = decide(dc, Observed(None, sts, answers, held=held))
    if action.doc is None:  # a pod runs a ring not read yet: never create one below it
        log.warning("%s/%s: %s", dc.namespace, dc.name, action.reason)
        return RingLoad(None, delay=action.delay)
    await store.save(action.doc, None)
    if action.event is not None:
        await api.event(dc, *action.event, warning=True)
        await coordinator.push(action.doc, action.doc.members)
    else:
        await api.event(dc, "RingCreated", f"ring v{action.doc.version} with "
                        f"{len(action.doc.members)} member(s)")
    return RingLoad(action.doc, created=True)
