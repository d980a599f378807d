"""One reconcile step of a DistCache: each concern in order, each with its inputs and
outputs in sight. A step is short: it never waits for a migration; it notes what is pending
in status and says when the next one is useful (the returned delay). Every step is
idempotent and re-entrant: it reads the ring ConfigMap, the StatefulSet and the members'
status each time, so an operator killed at any point resumes where the ring says."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from distcache_node.cluster.coordinator import Coordinator, RingConflict
from distcache_node.cluster.peers import PeerClient
from distcache_node.cluster.ring import Member
from distcache_operator import metrics
from distcache_operator.handlers.credentials import credentials_status, ensure_metrics_token
from distcache_operator.handlers.membership import member_statuses, step_membership
from distcache_operator.handlers.memory import DistCacheMemory
from distcache_operator.handlers.owned import apply_due, apply_owned
from distcache_operator.handlers.peers import clients, ensure_session
from distcache_operator.handlers.problem import Problem
from distcache_operator.handlers.report import write_problem, write_status
from distcache_operator.handlers.ringload import RingRecord, load_ring
from distcache_operator.handlers.secrets import ensure_secrets
from distcache_operator.handlers.tlsstep import ensure_tls, rotate_ca
from distcache_operator.k8s import Api, ConfigMapRingStore
from distcache_operator.kubeapi import ApiError
from distcache_operator.model import DistCache, DistCacheSpec, SpecError

log = logging.getLogger("distcache.operator")
RETRY_DELAY = 2.0  # seconds before the next step after an API server or node call failed
BUG_DELAY = 10.0  # seconds before the next step after one that raised something unexpected


StoreFor = Callable[[Api, DistCache], RingRecord]
PeersFor = Callable[[DistCacheMemory], Callable[[Member], PeerClient]]


async def step(api: Api, body: Mapping[str, Any], mem: DistCacheMemory,
               store_for: StoreFor = ConfigMapRingStore, peers_for: PeersFor = clients
               ) -> float:
    """One step for the DistCache `body`; returns seconds until the next is useful. Raises
    Problem for what the user must fix (run_step writes it to status). `store_for`: where
    the ring is kept; `peers_for`: the clients of the pods' peer API (ring ConfigMap and
    HTTP to the pods; the tests give stand-ins)."""
    try:
        dc = DistCache.from_body(body)
    except SpecError as exc:
        raise Problem("InvalidSpec", str(exc)) from None
    previous = body.get("status") or {}
    now = asyncio.get_running_loop().time()
    # Secrets first: the pods need them, the operator needs the cluster secret (and the CA)
    # to talk to the pods.
    secret = await ensure_secrets(api, dc, mem)
    ref = dc.api_key_secret
    api_key = await api.read_secret_key(dc.namespace, ref.name, ref.key)  # read this step
    await ensure_metrics_token(api, dc, api_key)
    tls_state = await ensure_tls(api, dc, mem)
    await ensure_session(mem, secret, tls_state.ca_pem)
    store = store_for(api, dc)
    coordinator = Coordinator(store, peers_for(mem))
    sts = await api.statefulset_replicas(dc)
    loaded = await load_ring(api, dc, store, coordinator, sts)
    if loaded.ring is None:
        return loaded.delay
    ring = loaded.ring
    if loaded.created or apply_due(mem, now, sts):
        top = max((dc.ordinal(m.id) + 1 for m in ring.members), default=0)
        sts = top if sts is None else sts
        await apply_owned(api, dc, mem, sts, now)
    members, statuses = await member_statuses(coordinator, dc, ring, sts)
    pod_statuses = {dc.member_id(i): statuses.get(dc.member_id(i)) for i in range(sts or 0)}
    tls_state = await rotate_ca(api, dc, mem, tls_state, pod_statuses)
    credentials = await credentials_status(
        api, dc, mem, {"apiKey": (ref.name, api_key), "clusterSecret": (dc.cluster_secret,
                                                                        secret)},
        pod_statuses, now)
    membership = await step_membership(api, dc, mem, coordinator, ring, sts, members,
                                       statuses, previous)
    await write_status(api, dc, mem, previous, membership, tls_state, now, credentials)
    return membership.delay if tls_state.poll is None else min(membership.delay,
                                                                tls_state.poll)


async def run_step(api: Api, namespace: str, name: str, uid: str, mem: DistCacheMemory,
                   **parts: Any) -> float | None:
    """A step on the DistCache as the API server has it now (a body handed over earlier may
    be old by then: a step can take seconds). None: it is gone (deleted, or deleted and
    created again under the same name: that one has its own memory and daemon). Never
    raises for a user's mistake (Degraded and an Event) nor for a failed call (retried).
    `parts`: step's store_for and peers_for."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        fresh = await api.get_distcache(namespace, name)
        if fresh is None or fresh["metadata"].get("uid") != uid \
                or fresh["metadata"].get("deletionTimestamp"):
            return None
        try:
            delay = await step(api, fresh, mem, **parts)
            metrics.STEPS.labels("ok").inc()
        except Problem as problem:
            delay = await write_problem(api, subject(fresh), mem, fresh.get("status") or {},
                                        problem.reason, problem.message)
            metrics.STEPS.labels("problem").inc()
    except (TimeoutError, ApiError, aiohttp.ClientError, RingConflict) as exc:
        log.warning("%s/%s: step failed, retrying: %s", namespace, name, exc)
        metrics.STEPS.labels("retry").inc()
        delay = RETRY_DELAY
    except Exception:
        # A fault of the operator itself (a bug): its traceback, and the next step as for any
        # failure, rather than the daemon ending (kopf would restart it only after its
        # backoff, and the DistCache would go unwatched meanwhile).
        log.exception("%s/%s: step failed", namespace, name)
        metrics.STEPS.labels("retry").inc()
        delay = BUG_DELAY
    metrics.STEP_SECONDS.observe(loop.time() - started)
    return delay


def subject(body: Mapping[str, Any]) -> DistCache:
    """The DistCache of `body`, or, when its spec cannot be parsed, one with the default
    spec (for its name, namespace, uid, generation and pod selector)."""
    try:
        return DistCache.from_body(body)
    except SpecError:
        meta = body["metadata"]
        return DistCache(meta["name"], meta["namespace"], meta["uid"],
                         int(meta.get("generation") or 0), spec=DistCacheSpec())
