"""Which pods have taken in a rotated key. Pure: no I/O.

The pods read the API key and the cluster secret from their mounted Secrets, one key per
line, and re-read them when kubelet updates the volume (a minute or so after the Secret
changed, at a different moment on each pod; node/distcache_node/keyfile.py). Each pod
reports in GET /cluster/status the fingerprints of the keys it accepts as current
(`credentials.<credential>.fingerprints`), never the keys. A rotation's next step (clients
moved to the new key, then the old line dropped) is safe once every pod lists exactly the
Secret's keys: `pods_behind` names the ones that do not yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distcache_node.keyfile import fingerprint, parse_keys

API_KEY = "api_key"
CLUSTER_SECRET = "cluster_secret"


def fingerprints(secret_value: str) -> list[str]:
    """The fingerprints a pod reports once it has loaded this Secret value, in its order."""
    return [fingerprint(key) for key in parse_keys(secret_value)]


def sent_key(secret_value: str) -> str:
    """The key a node sends from this value (its first line): what the operator sends the
    pods as the cluster secret too. "" when the value lists no key."""
    keys = parse_keys(secret_value)
    return keys[0] if keys else ""


def loaded(status: Mapping[str, Any] | None, credential: str = API_KEY) -> list[str] | None:
    """The fingerprints a pod's /cluster/status reports for `credential`; None when the pod
    did not answer or reports none (a node from before key files)."""
    if not status:
        return None
    credentials = status.get("credentials")
    if not isinstance(credentials, Mapping):
        return None
    report = credentials.get(credential)
    if not isinstance(report, Mapping) or not isinstance(report.get("fingerprints"), list):
        return None
    return [str(f) for f in report["fingerprints"]]


def pods_behind(secret_value: str, statuses: Mapping[str, Mapping[str, Any] | None],
                credential: str = API_KEY) -> list[str]:
    """The pods (sorted by name) that have not loaded exactly the keys in `secret_value`:
    their volume is not updated yet, they did not answer (None), or they report no keys.
    `statuses` maps each pod to its /cluster/status answer. Empty: every pod has them."""
    want = fingerprints(secret_value)
    return sorted(pod for pod, status in statuses.items() if loaded(status, credential) != want)
