"""The one layer that knows Kubernetes API paths (over kubeapi.KubeApi).

Owned objects are applied with server-side apply (field manager `distcache-operator`,
conflicts forced): drift is put back. Secrets are only ever created, never overwritten. The
ring ConfigMap is written only through ConfigMapRingStore, with compare-and-swap on its
resourceVersion.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import secrets
import time
from typing import Any

from distcache_node.cluster.coordinator import RingConflict
from distcache_node.cluster.ring import RingDoc, RingError
from distcache_operator import builders
from distcache_operator.kubeapi import ApiError, KubeApi
from distcache_operator.model import GROUP, PLURAL, VERSION, DistCache

log = logging.getLogger("distcache.operator.k8s")
MANAGER = "distcache-operator"
# Container waiting reasons that will not go away by themselves: the user must act.
POD_FAILURES = {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                "CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError"}


class NotFound(Exception):
    pass


def _ns(ns: str) -> str:
    return f"/api/v1/namespaces/{ns}"


_PATHS = {
    ("v1", "Service"): "/api/v1/namespaces/{ns}/services/{name}",
    ("v1", "ConfigMap"): "/api/v1/namespaces/{ns}/configmaps/{name}",
    ("v1", "Secret"): "/api/v1/namespaces/{ns}/secrets/{name}",
    ("apps/v1", "StatefulSet"): "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}",
    ("networking.k8s.io/v1", "NetworkPolicy"):
        "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}",
    ("policy/v1", "PodDisruptionBudget"):
        "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{name}",
    ("cert-manager.io/v1", "Certificate"):
        "/apis/cert-manager.io/v1/namespaces/{ns}/certificates/{name}",
    ("monitoring.coreos.com/v1", "ServiceMonitor"):
        "/apis/monitoring.coreos.com/v1/namespaces/{ns}/servicemonitors/{name}",
}
SERVED_TTL = 30.0  # seconds an API discovery answer is reused
SECRET_TTL = 1.0  # seconds a Secret read is reused (one step)


def object_path(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return _PATHS[(obj["apiVersion"], obj["kind"])].format(ns=meta["namespace"],
                                                          name=meta["name"])


class Api:
    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube
        self._served: dict[str, tuple[float, frozenset[str]]] = {}
        # (uid, reason, message or "" for a Warning) -> the Event's name and count
        self._events: dict[tuple[str, str, str], tuple[str, int]] = {}
        self._secrets: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}

    async def served(self, group_version: str, resource: str) -> bool:
        """Whether the API server serves `resource` in `group_version` (an optional API whose
        CRDs may be missing: cert-manager, the Prometheus Operator). Reused for SERVED_TTL."""
        now = time.monotonic()
        seen = self._served.get(group_version)
        if seen is None or now - seen[0] > SERVED_TTL:
            doc = await self.kube.get_or_none(f"/apis/{group_version}")
            names = frozenset(r["name"] for r in (doc or {}).get("resources") or [])
            seen = self._served[group_version] = (now, names)
        return resource in seen[1]

    async def get(self, obj: dict[str, Any]) -> Any:
        return await self.kube.get_or_none(object_path(obj))

    async def apply(self, obj: dict[str, Any]) -> Any:
        return await self.kube.apply(object_path(obj), obj, MANAGER)

    async def delete(self, obj: dict[str, Any]) -> None:
        try:
            await self.kube.request("DELETE", object_path(obj))
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def _get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Secret, read once per SECRET_TTL: a step reads the same few Secrets several
        times (API key, cluster secret, CA, certificate); one GET each is enough, and a
        change made by someone else is seen by the next step."""
        now = time.monotonic()
        seen = self._secrets.get((namespace, name))
        if seen is None or now - seen[0] > SECRET_TTL:
            got = await self.kube.get_or_none(f"{_ns(namespace)}/secrets/{name}")
            seen = self._secrets[(namespace, name)] = (now, got)
        return seen[1]

    async def create_secret_if_missing(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        if await self._get_secret(meta["namespace"], meta["name"]) is not None:
            return False  # no POST that only answers 409
        self._secrets.pop((meta["namespace"], meta["name"]), None)
        try:
            await self.kube.create(f"{_ns(meta['namespace'])}/secrets", obj)
            return True
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise

    async def replace_secret(self, obj: dict[str, Any]) -> None:
        self._secrets.pop((obj["metadata"]["namespace"], obj["metadata"]["name"]), None)
        await self.kube.replace(object_path(obj), obj)

    async def read_secret(self, namespace: str, name: str
                          ) -> tuple[dict[str, bytes], dict[str, str]] | None:
        """A Secret's data (decoded) and annotations; None when it does not exist."""
        secret = await self._get_secret(namespace, name)
        if secret is None:
            return None
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        return data, dict(secret["metadata"].get("annotations") or {})

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        secret = await self._get_secret(namespace, name)
        if secret is None:
            raise NotFound(f"Secret {name} not found in namespace {namespace}")
        raw = (secret.get("data") or {}).get(key)
        if raw is None:
            raise NotFound(f"Secret {name} has no key {key!r}")
        return base64.b64decode(raw).decode()

    # -- StatefulSet and pods ----------------------------------------------------------------
    def _sts_path(self, dc: DistCache) -> str:
        return f"/apis/apps/v1/namespaces/{dc.namespace}/statefulsets/{dc.statefulset}"

    async def statefulset_replicas(self, dc: DistCache) -> int | None:
        sts = await self.kube.get_or_none(self._sts_path(dc))
        return None if sts is None else int(sts["spec"].get("replicas") or 0)

    async def scale_statefulset(self, dc: DistCache, replicas: int) -> None:
        await self.kube.merge_patch(self._sts_path(dc) + "/scale",
                                    {"spec": {"replicas": replicas}})

    async def pods(self, dc: DistCache) -> tuple[dict[str, bool], dict[str, str]]:
        """Each pod's readiness, and what keeps a container from running (an image that
        cannot be pulled, a crash loop), by pod name."""
        pods = await self.kube.get(f"{_ns(dc.namespace)}/pods",
                                   params={"labelSelector": dc.selector})
        ready: dict[str, bool] = {}
        problems: dict[str, str] = {}
        for pod in pods.get("items", []):
            name = pod["metadata"]["name"]
            if pod["metadata"].get("deletionTimestamp"):
                ready[name] = False
                continue
            st = pod.get("status") or {}
            conds = {c["type"]: c["status"] for c in st.get("conditions") or []}
            ready[name] = conds.get("Ready") == "True"
            for cs in st.get("containerStatuses") or []:
                waiting = (cs.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in POD_FAILURES:
                    problems[name] = (f"{waiting['reason']}: "
                                      f"{waiting.get('message', '')}".strip(": "))
        return ready, problems

    # -- the DistCache -------------------------------------------------------------------------
    def _dc_path(self, namespace: str, name: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"

    async def patch_status(self, dc: DistCache, status: dict[str, Any]) -> None:
        try:
            await self.kube.merge_patch(self._dc_path(dc.namespace, dc.name) + "/status",
                                        {"status": status})
        except ApiError as exc:
            if exc.status != 404:  # deleted meanwhile
                raise

    async def get_distcache(self, namespace: str, name: str) -> dict[str, Any] | None:
        got: dict[str, Any] | None = await self.kube.get_or_none(
            self._dc_path(namespace, name))
        return got

    async def event(self, dc: DistCache, reason: str, message: str,
                    warning: bool = False) -> None:
        """Counted Events, as client-go's recorder does: a Warning is one Event per DistCache
        and reason, whose count and lastTimestamp grow and which carries the newest message
        (a crash-looping pod is one PodsFailing Event, not one every few seconds; a refused
        shrink one ScaleDownRefused with the latest figures); a Normal Event is one per
        reason and message (each ring change, each Secret created stays in the history).
        Kept in memory: after an operator restart, or once the API server has expired the
        Event (1 h), a new one starts."""
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        key = (dc.uid, reason, "" if warning else message)
        seen = self._events.get(key)
        if seen is not None:
            name, count = seen
            try:
                await self.kube.merge_patch(f"{_ns(dc.namespace)}/events/{name}", {
                    "message": message[:1000], "count": count + 1, "lastTimestamp": now})
                self._events[key] = (name, count + 1)
                return
            except ApiError as exc:
                if exc.status != 404:
                    log.warning("event %s not updated: %s", reason, exc)
                    return
        name = f"{dc.name}.{secrets.token_hex(6)}"
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": dc.namespace},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "DistCache",
                               "name": dc.name, "namespace": dc.namespace, "uid": dc.uid},
            "reason": reason, "message": message[:1000],
            "type": "Warning" if warning else "Normal",
            "source": {"component": MANAGER}, "reportingComponent": MANAGER,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            await self.kube.create(f"{_ns(dc.namespace)}/events", body)
            self._events[key] = (name, 1)
        except ApiError as exc:
            log.warning("event %s not posted: %s", reason, exc)


class ConfigMapRingStore:
    """The ring document in the DistCache's ConfigMap. `save` is a compare-and-swap: the
    stored document must still be `expected`, and the replace carries the resourceVersion it
    was read at, so two writers can never interleave a change (409 -> RingConflict)."""

    def __init__(self, api: Api, dc: DistCache) -> None:
        self.api = api
        self.dc = dc

    @property
    def _path(self) -> str:
        return f"{_ns(self.dc.namespace)}/configmaps/{self.dc.ring_configmap}"

    async def _read(self) -> tuple[RingDoc | None, str | None]:
        cm = await self.api.kube.get_or_none(self._path)
        if cm is None:
            return None, None
        raw = (cm.get("data") or {}).get(builders.RING_KEY)
        if raw is None:
            raise RingError(f"ConfigMap {self.dc.ring_configmap} has no {builders.RING_KEY}")
        return RingDoc.from_json(json.loads(raw)), cm["metadata"]["resourceVersion"]

    async def load_or_none(self) -> RingDoc | None:
        return (await self._read())[0]

    async def load(self) -> RingDoc:
        doc = await self.load_or_none()
        if doc is None:
            raise NotFound(f"ConfigMap {self.dc.ring_configmap}")
        return doc

    async def save(self, doc: RingDoc, expected: RingDoc | None) -> None:
        current, rv = await self._read()
        if current != expected:
            raise RingConflict(
                f"ring ConfigMap changed under us: expected v"
                f"{expected.version if expected else '-'}, found "
                f"v{current.version if current else '-'}")
        body = builders.build_ring_configmap(self.dc, doc)
        try:
            if rv is None:
                await self.api.kube.create(f"{_ns(self.dc.namespace)}/configmaps", body)
            else:
                body["metadata"]["resourceVersion"] = rv
                await self.api.kube.replace(self._path, body)
        except ApiError as exc:
            if exc.status == 409:
                raise RingConflict(f"ring ConfigMap changed under us ({exc.reason})") from None
            raise
