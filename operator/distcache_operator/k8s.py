"""The one layer that knows the Kubernetes API's resources (over kubeapi.KubeApi, the
kubernetes_asyncio client).

Owned objects are applied with server-side apply (field manager `distcache-operator`,
conflicts forced): drift is put back. Secrets are only ever created, never overwritten. The
ring ConfigMap is written only through ConfigMapRingStore, with compare-and-swap on its
resourceVersion. Objects go in and come out as dicts (the builders' shape), whatever the
library's models are.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, NamedTuple

from distcache_node.cluster.coordinator import RingConflict
from distcache_node.cluster.ring import RingDoc, RingError
from distcache_operator import builders
from distcache_operator.kubeapi import ApiError, KubeApi
from distcache_operator.model import GROUP, PLURAL, VERSION, DistCache

log = logging.getLogger("distcache.operator.k8s")
MANAGER = "distcache-operator"
APPLY = "application/apply-patch+yaml"  # server-side apply (JSON is YAML)
MERGE = "application/merge-patch+json"
# Container waiting reasons that will not go away by themselves: the user must act.
POD_FAILURES = {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                "CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError"}


class NotFound(Exception):
    pass


# The kinds the operator owns: built-in ones by (API group attribute of KubeApi, the
# library's method suffix); CRD-backed ones (optional APIs) by plural, through
# CustomObjectsApi.
_BUILTIN = {
    ("v1", "Service"): ("core", "service"),
    ("v1", "ConfigMap"): ("core", "config_map"),
    ("v1", "Secret"): ("core", "secret"),
    ("apps/v1", "StatefulSet"): ("apps", "stateful_set"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("networking", "network_policy"),
    ("policy/v1", "PodDisruptionBudget"): ("policy", "pod_disruption_budget"),
}
_CUSTOM = {
    ("cert-manager.io/v1", "Certificate"): "certificates",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitors",
}
SERVED_TTL = 30.0  # seconds an API discovery answer is reused
SECRET_TTL = 1.0  # seconds a Secret read is reused (one step)


ZONE_LABEL = "topology.kubernetes.io/zone"  # the well-known label of a node's zone
ZONE_CACHE_SECONDS = 60.0  # a node's zone label is read again after this


class Pods(NamedTuple):
    ready: dict[str, bool]  # pod -> Running and Ready
    failing: dict[str, str]  # pod -> what keeps its container from running
    nodes: dict[str, str]  # pod -> the node it is scheduled on


class Api:
    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube
        # node -> (read at, its zone or ""); None while nodes may not be read (RBAC)
        self._zones: dict[str, tuple[float, str]] | None = {}
        self._served: dict[str, tuple[float, frozenset[str]]] = {}
        # (uid, reason, message or "" for a Warning) -> the Event's name and count
        self._events: dict[tuple[str, str, str], tuple[str, int]] = {}
        self._secrets: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}

    def _method(self, verb: str, obj: dict[str, Any]
                ) -> tuple[Callable[..., Awaitable[Any]], tuple[str, ...]]:
        """The library's method to `verb` (read, patch, replace, delete) obj's kind, and the
        arguments that name obj."""
        key = (obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        if key in _BUILTIN:
            group, kind = _BUILTIN[key]
            method = getattr(getattr(self.kube, group), f"{verb}_namespaced_{kind}")
            return method, (meta["name"], meta["namespace"])
        group, version = obj["apiVersion"].split("/")
        verb = "get" if verb == "read" else verb
        return (getattr(self.kube.custom, f"{verb}_namespaced_custom_object"),
                (group, version, meta["namespace"], _CUSTOM[key], meta["name"]))

    async def served(self, group_version: str, resource: str) -> bool:
        """Whether the API server serves `resource` in `group_version` (an optional API whose
        CRDs may be missing: cert-manager, the Prometheus Operator). Reused for SERVED_TTL."""
        now = time.monotonic()
        seen = self._served.get(group_version)
        if seen is None or now - seen[0] > SERVED_TTL:
            group, version = group_version.split("/")
            doc = await self.kube.call_or_none(self.kube.custom.get_api_resources,
                                               group, version)
            names = frozenset(r["name"] for r in (doc or {}).get("resources") or [])
            seen = self._served[group_version] = (now, names)
        return resource in seen[1]

    async def get(self, obj: dict[str, Any]) -> Any:
        method, names = self._method("read", obj)
        return await self.kube.call_or_none(method, *names)

    async def apply(self, obj: dict[str, Any]) -> Any:
        """Server-side apply, conflicts forced: what we own is put back."""
        method, names = self._method("patch", obj)
        return await self.kube.call(method, *names, obj, field_manager=MANAGER, force=True,
                                    _content_type=APPLY)

    async def delete(self, obj: dict[str, Any]) -> None:
        method, names = self._method("delete", obj)
        try:
            await self.kube.call(method, *names)
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
            got = await self.kube.call_or_none(self.kube.core.read_namespaced_secret,
                                               name, namespace)
            seen = self._secrets[(namespace, name)] = (now, got)
        return seen[1]

    async def create_secret_if_missing(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        if await self._get_secret(meta["namespace"], meta["name"]) is not None:
            return False  # no POST that only answers 409
        self._secrets.pop((meta["namespace"], meta["name"]), None)
        try:
            await self.kube.call(self.kube.core.create_namespaced_secret,
                                 meta["namespace"], obj)
            return True
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise

    async def replace_secret(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self._secrets.pop((meta["namespace"], meta["name"]), None)
        await self.kube.call(self.kube.core.replace_namespaced_secret,
                             meta["name"], meta["namespace"], obj)

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
    async def statefulset_replicas(self, dc: DistCache) -> int | None:
        sts = await self.kube.call_or_none(self.kube.apps.read_namespaced_stateful_set,
                                           dc.statefulset, dc.namespace)
        return None if sts is None else int(sts["spec"].get("replicas") or 0)

    async def scale_statefulset(self, dc: DistCache, replicas: int) -> None:
        await self.kube.call(self.kube.apps.patch_namespaced_stateful_set_scale,
                             dc.statefulset, dc.namespace, {"spec": {"replicas": replicas}},
                             _content_type=MERGE)

    async def pods(self, dc: DistCache) -> Pods:
        """Each pod's readiness, what keeps a container from running (an image that cannot
        be pulled, a crash loop), and its node, by pod name."""
        pods = await self.kube.call(self.kube.core.list_namespaced_pod, dc.namespace,
                                    label_selector=dc.selector)
        ready: dict[str, bool] = {}
        problems: dict[str, str] = {}
        nodes: dict[str, str] = {}
        for pod in pods.get("items", []):
            name = pod["metadata"]["name"]
            if node := (pod.get("spec") or {}).get("nodeName"):
                nodes[name] = node
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
        return Pods(ready, problems, nodes)

    async def node_zones(self, nodes: Iterable[str]) -> dict[str, str]:
        """node -> its zone label, for the nodes that have one. Read once a minute per node
        (zones do not move). Without the right to read nodes (an operator bound to some
        namespaces only) there are no zones, said once in the log: placement then spreads
        copies over members only."""
        if self._zones is None:
            return {}
        now = time.monotonic()
        for node in set(nodes):
            if node in self._zones and now - self._zones[node][0] < ZONE_CACHE_SECONDS:
                continue
            try:
                got = await self.kube.call_or_none(self.kube.core.read_node, node)
            except ApiError as exc:
                if exc.status != 403:
                    raise
                log.warning("nodes cannot be read (%s): no zone-aware placement", exc)
                self._zones = None
                return {}
            labels = ((got or {}).get("metadata") or {}).get("labels") or {}
            self._zones[node] = (now, str(labels.get(ZONE_LABEL, "")))
        return {n: z for n in nodes if (z := self._zones.get(n, (0.0, ""))[1])}

    async def failed_creates(self, dc: DistCache) -> list[str]:
        """The StatefulSet controller's FailedCreate messages, newest first (a ResourceQuota,
        a LimitRange or an admission webhook refusing a pod). Read only while pods the
        StatefulSet should have do not exist."""
        got = await self.kube.call(
            self.kube.core.list_namespaced_event, dc.namespace,
            field_selector=f"involvedObject.kind=StatefulSet,involvedObject.name="
                           f"{dc.statefulset},reason=FailedCreate")
        items = sorted(got.get("items") or [], reverse=True,
                       key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        return [str(e["message"]) for e in items if e.get("message")]

    # -- the DistCache -------------------------------------------------------------------------
    async def patch_status(self, dc: DistCache, status: dict[str, Any]) -> None:
        try:
            await self.kube.call(self.kube.custom.patch_namespaced_custom_object_status,
                                 GROUP, VERSION, dc.namespace, PLURAL, dc.name,
                                 {"status": status}, _content_type=MERGE)
        except ApiError as exc:
            if exc.status != 404:  # deleted meanwhile
                raise

    async def get_distcache(self, namespace: str, name: str) -> dict[str, Any] | None:
        got: dict[str, Any] | None = await self.kube.call_or_none(
            self.kube.custom.get_namespaced_custom_object,
            GROUP, VERSION, namespace, PLURAL, name)
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
                await self.kube.call(self.kube.core.patch_namespaced_event, name,
                                     dc.namespace, {"message": message[:1000],
                                                    "count": count + 1, "lastTimestamp": now},
                                     _content_type=MERGE)
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
            await self.kube.call(self.kube.core.create_namespaced_event, dc.namespace, body)
            self._events[key] = (name, 1)
        except ApiError as exc:
            log.warning("event %s not posted: %s", reason, exc)


    # -- the pods of one DistCache, watched (handlers/daemon.py; added apart from the rest) --
    async def watch_pods(self, namespace: str, selector: str,
                         timeout: int = 300) -> AsyncIterator[str]:
        """The type of each change (ADDED, MODIFIED, DELETED) to the pods in `namespace` that
        match the label `selector`. The API server filters (defect 11: kopf's own pod watch
        was cluster-wide, every pod in the cluster sent to the operator to be dropped there).
        Ends after `timeout` s (the server closes the watch; it starts again with every pod
        ADDED): the caller watches again."""
        from kubernetes_asyncio import watch  # the only streaming call of the operator
        from kubernetes_asyncio.client.exceptions import ApiException

        stream = watch.Watch()
        try:
            async for event in stream.stream(self.kube.core.list_namespaced_pod, namespace,
                                             label_selector=selector,
                                             timeout_seconds=timeout):
                yield str(event["type"])
        except ApiException as exc:
            raise ApiError.from_exception(exc) from None
        finally:
            stream.stop()
            await stream.close()

class ConfigMapRingStore:
    """The ring document in the DistCache's ConfigMap. `save` is a compare-and-swap: the
    stored document must still be `expected`, and the replace carries the resourceVersion it
    was read at, so two writers can never interleave a change (409 -> RingConflict)."""

    def __init__(self, api: Api, dc: DistCache) -> None:
        self.api = api
        self.dc = dc

    async def _read(self) -> tuple[RingDoc | None, str | None]:
        kube = self.api.kube
        cm = await kube.call_or_none(kube.core.read_namespaced_config_map,
                                     self.dc.ring_configmap, self.dc.namespace)
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
        kube = self.api.kube
        try:
            if rv is None:
                await kube.call(kube.core.create_namespaced_config_map, self.dc.namespace,
                                body)
            else:
                body["metadata"]["resourceVersion"] = rv
                await kube.call(kube.core.replace_namespaced_config_map,
                                self.dc.ring_configmap, self.dc.namespace, body)
        except ApiError as exc:
            if exc.status == 409:
                raise RingConflict(f"ring ConfigMap changed under us ({exc.reason})") from None
            raise
