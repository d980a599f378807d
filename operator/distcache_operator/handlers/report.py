"""What a step tells the user: status (written only when something a user acts on changed,
live counts refreshed every STATUS_REFRESH), the PodsFailing Event (counted, one per
reason), the per-DistCache metric series; and the problem path (a condition the user must
fix, found before membership could be looked at)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from distcache_operator import metrics, status
from distcache_operator.handlers.membership import Membership
from distcache_operator.handlers.memory import STATUS_REFRESH, DistCacheMemory
from distcache_operator.handlers.tlsstep import TLSState
from distcache_operator.k8s import Api
from distcache_operator.model import DistCache
from distcache_operator.steps import Action, Observed

log = logging.getLogger("distcache.operator")
PROBLEM_DELAY = 10.0  # seconds between looks at a DistCache with a user's mistake


def user_facing(st: Mapping[str, Any]) -> dict[str, Any]:
    """Status less what changes on every look without anyone having to act: the members'
    live key and byte counts. A step writes status when the rest changed, and refreshes
    those counts every STATUS_REFRESH seconds (an idle DistCache: one PATCH a minute, not
    one per step)."""
    def bare(value: Any) -> Any:  # a merge patch drops null fields: compare without them
        if isinstance(value, Mapping):
            return {k: bare(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [bare(v) for v in value]
        return value

    out = bare(st)
    out["members"] = [{k: v for k, v in m.items() if k not in ("keys", "bytes")}
                      for m in out.get("members") or []]
    return dict(out)


async def write_status(api: Api, dc: DistCache, mem: DistCacheMemory,
                       previous: Mapping[str, Any], step: Membership, tls_state: TLSState,
                       now: float, credentials: Mapping[str, Any] | None = None
                       ) -> dict[str, Any]:
    """Status from what the membership step saw and did; returns it (written or not)."""
    action = step.action
    computed = status.compute(dc, step.observed, action, step.pods, previous,
                              pod_problems=step.failing, notes=mem.notes,
                              tls_problem=tls_state.not_loaded, tls_invalid=tls_state.invalid,
                              member_lost=step.member_lost)
    if tls_state.expiry or tls_state.invalid:
        computed["tls"] = {**tls_state.expiry, "error": tls_state.invalid or ""}
    if credentials:
        computed["credentials"] = dict(credentials)
    if step.failing and mem.last_event != ("PodsFailing", str(sorted(step.failing.items()))):
        mem.last_event = ("PodsFailing", str(sorted(step.failing.items())))
        await api.event(dc, "PodsFailing", status.pods_failing_message(step.failing),
                        warning=True)
    if user_facing(computed) != user_facing(previous) or mem.status_at is None \
            or now - mem.status_at > STATUS_REFRESH:
        await api.patch_status(dc, computed)
        mem.status_at = now
    if action.kind not in ("wait", "idle"):
        metrics.ACTIONS.labels(action.kind).inc()
    metrics.KEYS_REMAINING.labels(dc.namespace, dc.name).set(
        computed["migration"]["keysRemaining"])
    metrics.RING_VERSION.labels(dc.namespace, dc.name).set(computed["ringVersion"])
    return computed


async def write_problem(api: Api, dc: DistCache, mem: DistCacheMemory,
                        previous: Mapping[str, Any], reason: str, message: str) -> float:
    """Degraded (reason, message) and one Warning Event per message; returns PROBLEM_DELAY.
    Keeps what the ring said (a problem does not erase the members), the generation last
    acted on (this spec was not: observedGeneration stays), and whether the pods serve (a
    step that could not act says nothing about that: no "Available=False, NoMembers" over
    pods that answer)."""
    if mem.last_event != (reason, message):
        mem.last_event = (reason, message)
        await api.event(dc, reason, message, warning=True)
        log.warning("%s/%s: %s", dc.namespace, dc.name, message)
    st = status.compute(dc, Observed(None, None, {}), Action("invalid", message), {}, previous,
                        error=message)
    st["conditions"] = [cd if cd["type"] != "Degraded" else {**cd, "reason": reason}
                        for cd in st["conditions"]]
    for key in ("replicas", "ringVersion", "members", "readyReplicas", "observedGeneration",
                "tls", "credentials", "memberLost"):
        if key in previous:
            st[key] = previous[key]
    served = {cd["type"]: cd for cd in previous.get("conditions") or []}
    if "Available" in served:
        st["conditions"] = [served["Available"] if cd["type"] == "Available" else cd
                            for cd in st["conditions"]]
    await api.patch_status(dc, st)
    return PROBLEM_DELAY
