"""The Secrets a DistCache needs before anything else: the API key (generated unless the spec
names the user's) and the cluster secret the pods and the operator share."""

from __future__ import annotations

from distcache_operator import builders
from distcache_operator.handlers.memory import DistCacheMemory
from distcache_operator.handlers.problem import Problem
from distcache_operator.k8s import Api, NotFound
from distcache_operator.model import DistCache


async def ensure_secrets(api: Api, dc: DistCache, mem: DistCacheMemory) -> str:
    """Creates the generated Secrets that are missing and returns the cluster secret.
    Raises Problem when a Secret the pods need cannot be had.

    A peer Secret deleted under running pods comes back with the value they hold (this
    operator's memory, mem.secret), never a new one: every pod would refuse the operator and
    new pods would refuse the old ones. An operator restarted since does not know that value:
    Degraded PeerSecretLost, saying how to restore it from a pod (kubelet keeps the files of
    a mounted Secret that was deleted)."""
    known = mem.secret[0] if mem.secret else None
    peer_lost = await api.read_secret(dc.namespace, dc.cluster_secret) is None
    if peer_lost and known is None and (await api.statefulset_replicas(dc) or 0) > 0:
        pod = dc.member_id(0)
        raise Problem(
            "PeerSecretLost",
            f"Secret {dc.cluster_secret} is gone while the pods run with its value, and "
            "this operator (restarted since) does not know it; a new one would cut the "
            "pods off from each other. Restore it: kubectl -n "
            f"{dc.namespace} create secret generic {dc.cluster_secret} "
            f"--from-literal=cluster-secret=\"$(kubectl -n {dc.namespace} exec {pod} -- "
            f"cat {builders.CLUSTER_SECRET_FILE})\"")
    for generated in builders.build_secrets(dc, known):
        if await api.create_secret_if_missing(generated):
            name = generated["metadata"]["name"]
            if name == dc.cluster_secret and known is not None:
                await api.event(dc, "PeerSecretRestored", f"Secret {name} was deleted: "
                                "re-created with the value the pods hold", warning=True)
            else:
                await api.event(dc, "SecretCreated", f"generated Secret {name}")
    try:
        ref = dc.api_key_secret
        await api.read_secret_key(dc.namespace, ref.name, ref.key)
        return await api.read_secret_key(dc.namespace, dc.cluster_secret, "cluster-secret")
    except NotFound as exc:
        raise Problem("SecretMissing", f"{exc}: create it (spec.auth.apiKeySecretRef) or "
                      "remove the reference to let the operator generate one") from None
