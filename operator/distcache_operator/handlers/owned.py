"""The objects a DistCache owns (Services, PodDisruptionBudget, NetworkPolicy, StatefulSet,
ServiceMonitor), applied server-side (forced: drift is put back) on a spec change and every
APPLY_EVERY seconds."""

from __future__ import annotations

from distcache_operator import builders
from distcache_operator.handlers.memory import DistCacheMemory
from distcache_operator.k8s import Api
from distcache_operator.kubeapi import ApiError, operator_namespace
from distcache_operator.model import DistCache

APPLY_EVERY = 30.0  # seconds between re-applies of the owned objects while nothing changes


def apply_due(mem: DistCacheMemory, now: float, sts: int | None) -> bool:
    """Whether the owned objects are applied this step: a spec change (or a fresh memory),
    no StatefulSet, or APPLY_EVERY since the last time."""
    return mem.force_apply or sts is None or mem.applied_at is None \
        or now - mem.applied_at > APPLY_EVERY


async def apply_owned(api: Api, dc: DistCache, mem: DistCacheMemory, replicas: int,
                      now: float) -> None:
    """Applies every owned object, the StatefulSet at `replicas` pods."""
    await api.apply(builders.build_headless_service(dc))
    await api.apply(builders.build_client_service(dc))
    if dc.spec.pdb_enabled:
        await api.apply(builders.build_pdb(dc))
        if builders.pdb_max_unavailable(dc) == 0 and "pdb-r1" not in mem.warned:
            mem.warned.add("pdb-r1")
            await api.event(
                dc, "EvictionsBlocked", "replicationFactor 1: each pod holds the only copy "
                "of its keys, so the PodDisruptionBudget allows no eviction (a node drain "
                "waits). Raise replicationFactor to 2 to let pods move without losing keys",
                warning=True)
    else:
        await api.delete(builders.build_pdb(dc))
    policy = builders.build_network_policy(dc, operator_namespace())
    if dc.spec.network_policy_enabled:
        await api.apply(policy)
    else:
        await api.delete(policy)
    await api.apply(builders.build_statefulset(dc, replicas))
    await ensure_monitoring(api, dc, mem)
    mem.applied_at, mem.force_apply = now, False


async def ensure_monitoring(api: Api, dc: DistCache, mem: DistCacheMemory) -> list[str]:
    """The ServiceMonitor when asked for and its API is served; removed when no longer asked
    for. An unserved API is not a fault of the cache: an Event once and a note in the
    Available condition (returned, and kept in mem.notes for the steps in between), and it
    is created once the CRD appears."""
    served = await api.served(builders.MONITORING_API, "servicemonitors")
    monitor = builders.build_service_monitor(dc)
    mem.notes = []
    try:
        if dc.spec.service_monitor:
            if served:
                await api.apply(monitor)
                return mem.notes
            note = (f"no ServiceMonitor: this cluster does not serve {builders.MONITORING_API} "
                    "ServiceMonitors (install the Prometheus Operator's CRDs; the operator "
                    "creates it then)")
        elif served:
            await api.delete(monitor)
            return mem.notes
        else:
            return mem.notes
    except ApiError as exc:
        if exc.status != 403:
            raise
        # The operator's RBAC predates ServiceMonitors (an image upgraded without its chart):
        # the cache itself is not affected.
        if not dc.spec.service_monitor:
            return mem.notes
        note = (f"no ServiceMonitor: the operator may not manage ServiceMonitors "
                f"({exc.message}): upgrade its RBAC (chart or manifests/operator)")
    mem.notes = [note]
    if mem.monitor_event != note:
        mem.monitor_event = note
        await api.event(dc, "ServiceMonitorUnavailable", note, warning=True)
    return mem.notes
