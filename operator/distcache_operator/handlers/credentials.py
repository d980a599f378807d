"""Rotations of the API key and the cluster secret, as the user sees them: which pods have
not taken in their Secret's keys yet (status.credentials), one Event when every pod has
(the moment clients may move to the new key, or the old line may go), one Warning when some
have not after CREDENTIALS_PATIENCE. And the metrics token: the ServiceMonitor's bearer
token is the API key Secret's first line, kept in a Secret of its own (Prometheus sends a
credential as it is: two lines during a rotation would be no valid header).

The pods re-read their mounted Secrets (node/distcache_node/keyfile.py) and report the keys'
fingerprints in GET /cluster/status; `apikeys.pods_behind` compares them with the Secret."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distcache_operator import apikeys, builders
from distcache_operator.handlers.memory import CredentialSeen, DistCacheMemory
from distcache_operator.k8s import Api
from distcache_operator.model import DistCache

# Seconds pods may lag behind a changed Secret before a Warning: kubelet updates a mounted
# Secret within its sync period plus its cache TTL (about a minute by default).
CREDENTIALS_PATIENCE = 180.0


async def ensure_metrics_token(api: Api, dc: DistCache, api_key_value: str) -> None:
    """The ServiceMonitor's bearer token: the key the API key Secret lists first."""
    if not dc.spec.service_monitor:
        return
    token = apikeys.sent_key(api_key_value)
    current = await api.read_secret(dc.namespace, dc.metrics_token_secret)
    if current is not None and current[0].get("token", b"").decode() == token:
        return
    wanted = builders.build_metrics_token_secret(dc, token)
    if current is None:
        await api.create_secret_if_missing(wanted)
    else:
        await api.replace_secret(wanted)


async def credentials_status(api: Api, dc: DistCache, mem: DistCacheMemory,
                             values: Mapping[str, tuple[str, str]],
                             statuses: Mapping[str, Mapping[str, Any] | None], now: float
                             ) -> dict[str, Any]:
    """status.credentials: per credential (apiKey, clusterSecret) the Secret it comes from
    and the pods that answer with other keys than it lists. `values`: credential -> (Secret
    name, its value); `statuses`: pod -> its /cluster/status (None: no answer; such a pod
    is reported as not ready elsewhere, and reads the Secret as it is when it starts)."""
    answering = {pod: st for pod, st in statuses.items() if st is not None}
    out: dict[str, Any] = {}
    for field_name, credential in (("apiKey", apikeys.API_KEY),
                                   ("clusterSecret", apikeys.CLUSTER_SECRET)):
        secret_name, value = values[field_name]
        behind = apikeys.pods_behind(value, answering, credential)
        out[field_name] = {"secret": secret_name, "podsBehind": behind,
                           "keys": len(apikeys.fingerprints(value))}
        await _tell(api, dc, mem, field_name, secret_name, value, behind, now)
    return out


async def _tell(api: Api, dc: DistCache, mem: DistCacheMemory, field_name: str,
                secret_name: str, value: str, behind: list[str], now: float) -> None:
    """One Event when every pod has loaded a Secret value that replaced one they all had
    (a rotation: not a new cache's first look, nor an operator's first look after a
    start), one Warning when some pods still have not after CREDENTIALS_PATIENCE."""
    want = tuple(apikeys.fingerprints(value))
    seen = mem.credentials.setdefault(field_name, CredentialSeen())
    if not behind:
        if seen.loaded is not None and seen.loaded != want:
            await api.event(dc, "CredentialsLoaded",
                            f"every pod accepts the keys in Secret {secret_name} "
                            f"({len(want)} key(s)): clients may move to a new one, and a key "
                            "dropped from it stays accepted for the grace period")
        seen.loaded, seen.waiting_for, seen.warned = want, None, False
        return
    if seen.waiting_for != want:
        seen.waiting_for, seen.since, seen.warned = want, now, False
    elif not seen.warned and now - seen.since > CREDENTIALS_PATIENCE:
        seen.warned = True
        await api.event(dc, "CredentialsNotLoaded",
                        f"Secret {secret_name} changed {now - seen.since:.0f} s ago and "
                        f"{', '.join(behind)} have not loaded it (a pod whose kubelet does not "
                        "update its Secret volume?): keep clients on the keys they use",
                        warning=True)
