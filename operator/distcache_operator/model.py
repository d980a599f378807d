"""The DistCache custom resource as a typed model, parsed once with its defaults.

The API server already applies the CRD's schema defaults and refuses what the schema
refuses (charts/distcache/crds/distcache.io_distcaches.yaml); `DistCache.from_body` applies
the same defaults again (a body from a test, or from an API server that skipped them, reads
the same) and checks what a schema cannot: a `maxMemory` the memory limit cannot hold.
Problems a user must fix raise SpecError with a message that says what to fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GROUP = "distcache.io"
VERSION = "v1alpha1"
PLURAL = "distcaches"
KIND = "DistCache"
API_VERSION = f"{GROUP}/{VERSION}"

PORT = 8080
# The Redis protocol (RESP) listener beside the HTTP port: Redis's own port, so a Redis
# client's default works through a port-forward or a Service without a port number.
REDIS_PORT = 6379
REDIS_PORT_NAME = "redis"
DEFAULT_REPLICAS = 3
DEFAULT_REPLICATION = 2
DEFAULT_GRACE = 30
DEFAULT_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}
# The node counts the bytes of its keys and values; the Python process around them needs
# about as much again (objects, buffers, migration batches). Default maxMemory: half the limit.
MEMORY_SHARE = 0.5
MIN_MAX_MEMORY = 1024 * 1024  # 1 MiB: below it a node holds almost nothing
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E|m)?$"
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_UNITS = {
    "": 1, "m": 0.001, "k": 1000, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
    "P": 1000**5, "E": 1000**6, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
    "Pi": 1024**5, "Ei": 1024**6,
}


_DURATION_RE = re.compile(r"^(?:[0-9]+[hms])+$")
DEFAULT_CA_LIFETIME = 43800 * 3600.0  # 5 years
DEFAULT_CERTIFICATE_LIFETIME = 8760 * 3600.0  # 1 year
MIN_CERTIFICATE_LIFETIME = 60.0


class SpecError(ValueError):
    """A spec the API server accepted but the operator cannot serve; says what to fix."""


def cluster_domain() -> str:
    """The cluster's DNS domain (kubelet's clusterDomain): pods' and Services' names end in
    it. An operator setting (the chart's operator.clusterDomain), not a DistCache field: it
    is the cluster's, the same for every cache."""
    return os.environ.get("DISTCACHE_OPERATOR_CLUSTER_DOMAIN", "cluster.local").strip(".")


def default_image() -> str:
    """The node image when spec.image is empty: set on the operator's Deployment."""
    return os.environ.get("DISTCACHE_OPERATOR_NODE_IMAGE", "distcache/node:0.1.0")


def parse_quantity(value: Any, what: str = "quantity") -> int:
    """A Kubernetes quantity ('512Mi', '1G', '1048576') in bytes (rounded down)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value)
    match = _QUANTITY_RE.match(text)
    if not match:
        raise SpecError(f"{what}: {text!r} is not a quantity (examples: 256Mi, 1Gi, 1048576)")
    number = text[: len(text) - len(match.group(2) or "")]
    return int(float(number) * _UNITS[match.group(2) or ""])


def parse_duration(value: Any, what: str) -> float:
    """A Go-style duration of hours, minutes and seconds ('8760h', '90m', '2h30m') in
    seconds (the form cert-manager's Certificate durations take)."""
    text = str(value)
    if not _DURATION_RE.match(text):
        raise SpecError(f"{what}: {text!r} is not a duration (examples: 8760h, 90m, 2h30m)")
    units = {"h": 3600, "m": 60, "s": 1}
    return float(sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)([hms])", text)))


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class IssuerRef:
    """A cert-manager issuer (spec.tls.issuerRef)."""

    name: str
    kind: str = "Issuer"
    group: str = "cert-manager.io"


@dataclass(frozen=True)
class DistCacheSpec:
    replicas: int = DEFAULT_REPLICAS
    image: str = ""
    image_pull_policy: str = "IfNotPresent"
    resources: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    max_memory: int = 0  # bytes, per pod
    replication_factor: int = DEFAULT_REPLICATION
    write_quorum: int = 0  # 0: the node's default
    api_key_ref: SecretKeyRef | None = None  # None: the operator generates one
    rate_limit: float = 0.0
    rate_limit_burst: int = 0
    pdb_enabled: bool = True
    network_policy_enabled: bool = True
    network_policy_clients: list[Any] = field(default_factory=list)  # empty: everyone
    termination_grace_period_seconds: int = DEFAULT_GRACE
    affinity: dict[str, Any] | None = None
    tolerations: list[Any] = field(default_factory=list)
    node_selector: dict[str, str] = field(default_factory=dict)
    topology_spread_constraints: list[Any] = field(default_factory=list)
    priority_class_name: str = ""
    pod_annotations: dict[str, str] = field(default_factory=dict)
    pod_labels: dict[str, str] = field(default_factory=dict)
    tls_enabled: bool = True
    tls_secret_name: str = ""  # empty: the operator (or cert-manager) issues the certificate
    tls_issuer: IssuerRef | None = None  # cert-manager issues it into <name>-tls
    tls_ca_lifetime: float = DEFAULT_CA_LIFETIME  # seconds; operator-issued CA
    tls_certificate_lifetime: float = DEFAULT_CERTIFICATE_LIFETIME  # seconds
    service_monitor: bool = False
    service_monitor_interval: str = "30s"
    service_monitor_labels: dict[str, str] = field(default_factory=dict)
    redis_enabled: bool = True  # spec.redis.enabled: the RESP listener, its ports


@dataclass(frozen=True)
class DistCache:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: DistCacheSpec
    domain: str = field(default_factory=cluster_domain)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DistCache:
        meta = body.get("metadata") or {}
        return cls(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            uid=str(meta.get("uid", "")),
            generation=int(meta.get("generation") or 0),
            spec=parse_spec(body.get("spec") or {}),
        )

    # -- names of the owned objects -------------------------------------------------------------
    @property
    def peers_service(self) -> str:
        return f"{self.name}-peers"

    @property
    def client_service(self) -> str:
        return self.name

    @property
    def ring_configmap(self) -> str:
        return f"{self.name}-ring"

    @property
    def cluster_secret(self) -> str:
        return f"{self.name}-cluster"

    @property
    def api_key_secret(self) -> SecretKeyRef:
        return self.spec.api_key_ref or SecretKeyRef(f"{self.name}-api-key", "api-key")

    @property
    def tls_secret(self) -> str:
        """tls.crt, tls.key and ca.crt: the user's (spec.tls.secretName) or the operator's."""
        return self.spec.tls_secret_name or f"{self.name}-tls"

    @property
    def certificate(self) -> str:
        """The cert-manager Certificate (spec.tls.issuerRef)."""
        return self.name

    @property
    def service_monitor(self) -> str:
        return self.name

    @property
    def metrics_token_secret(self) -> str:
        """The ServiceMonitor's bearer token (the API key Secret's first line)."""
        return f"{self.name}-metrics-token"

    @property
    def ca_secret(self) -> str:
        return f"{self.name}-ca"

    @property
    def scheme(self) -> str:
        return "https" if self.spec.tls_enabled else "http"

    @property
    def statefulset(self) -> str:
        return self.name

    @property
    def pdb(self) -> str:
        return self.name

    @property
    def network_policy(self) -> str:
        return self.name

    @property
    def selector_labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": "distcache", "app.kubernetes.io/instance": self.name}

    @property
    def selector(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.selector_labels.items())

    @property
    def labels(self) -> dict[str, str]:
        return {**self.selector_labels, "app.kubernetes.io/managed-by": "distcache-operator"}

    def member_id(self, ordinal: int) -> str:
        return f"{self.name}-{ordinal}"

    def member_url(self, ordinal: int) -> str:
        return (f"{self.scheme}://{self.member_id(ordinal)}.{self.peers_service}.{self.namespace}"
                f".svc.{self.domain}:{PORT}")

    @staticmethod
    def ordinal(member_id: str) -> int:
        return int(member_id.rsplit("-", 1)[1])


def _int(spec: Mapping[str, Any], key: str, default: int, low: int | None = None) -> int:
    value = spec.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"spec.{key} must be an integer, not {value!r}")
    if low is not None and value < low:
        raise SpecError(f"spec.{key} must be at least {low}, not {value}")
    return value


def parse_spec(spec: Mapping[str, Any]) -> DistCacheSpec:
    replicas = _int(spec, "replicas", DEFAULT_REPLICAS, 0)
    replication = _int(spec, "replicationFactor", DEFAULT_REPLICATION, 1)
    if replication > 16:
        raise SpecError("spec.replicationFactor must be at most 16")
    if replicas > 1 and replication > replicas:
        raise SpecError(f"spec.replicationFactor ({replication}) must not exceed spec.replicas "
                        f"({replicas})")
    resources = dict(spec.get("resources") or DEFAULT_RESOURCES)
    limit_raw = (resources.get("limits") or {}).get("memory")
    limit = parse_quantity(limit_raw, "spec.resources.limits.memory") if limit_raw else 0
    if spec.get("maxMemory"):
        max_memory = parse_quantity(spec["maxMemory"], "spec.maxMemory")
        if limit and max_memory > limit:
            raise SpecError(f"spec.maxMemory ({spec['maxMemory']}) is over the pod's memory "
                            f"limit ({limit_raw}): raise resources.limits.memory or lower "
                            "maxMemory (about half the limit leaves room for Python)")
    elif limit:
        max_memory = int(limit * MEMORY_SHARE)
    else:
        max_memory = 256 * 1024**2
    if max_memory < MIN_MAX_MEMORY:
        raise SpecError(f"spec.maxMemory: {max_memory} bytes is too small (at least 1Mi)")
    auth = spec.get("auth") or {}
    ref = auth.get("apiKeySecretRef")
    api_key_ref = None
    if ref:
        if not ref.get("name"):
            raise SpecError("spec.auth.apiKeySecretRef.name is required")
        api_key_ref = SecretKeyRef(str(ref["name"]), str(ref.get("key") or "api-key"))
    tls = spec.get("tls") or {}
    issuer = None
    if tls.get("issuerRef"):
        ref = tls["issuerRef"]
        if not ref.get("name"):
            raise SpecError("spec.tls.issuerRef.name is required")
        if tls.get("secretName"):
            raise SpecError("spec.tls: give secretName or issuerRef, not both")
        kind = str(ref.get("kind") or "Issuer")
        if kind not in ("Issuer", "ClusterIssuer"):
            raise SpecError(f"spec.tls.issuerRef.kind must be Issuer or ClusterIssuer, "
                            f"not {kind!r}")
        issuer = IssuerRef(str(ref["name"]), kind, str(ref.get("group") or "cert-manager.io"))
    ca_lifetime = parse_duration(tls.get("caLifetime") or "43800h", "spec.tls.caLifetime")
    cert_lifetime = parse_duration(tls.get("certificateLifetime") or "8760h",
                                   "spec.tls.certificateLifetime")
    if cert_lifetime < MIN_CERTIFICATE_LIFETIME:
        raise SpecError("spec.tls.certificateLifetime must be at least 60s")
    if cert_lifetime > ca_lifetime:
        # The CA is renewed a third before its end; a certificate longer than the CA would
        # be cut at the CA's expiry and renewed again and again.
        raise SpecError(f"spec.tls.certificateLifetime ({tls.get('certificateLifetime')}) must "
                        f"not exceed spec.tls.caLifetime ({tls.get('caLifetime')})")
    monitor = (spec.get("metrics") or {}).get("serviceMonitor") or {}
    rate = spec.get("rateLimit") or {}
    pdb = spec.get("podDisruptionBudget") or {}
    netpol = spec.get("networkPolicy") or {}
    redis = spec.get("redis") or {}
    return DistCacheSpec(
        replicas=replicas,
        image=str(spec.get("image") or ""),
        image_pull_policy=str(spec.get("imagePullPolicy") or "IfNotPresent"),
        resources=resources,
        max_memory=max_memory,
        replication_factor=replication,
        write_quorum=_int(spec, "writeQuorum", 0, 0),
        api_key_ref=api_key_ref,
        rate_limit=float(rate.get("requestsPerSecond") or 0),
        rate_limit_burst=int(rate.get("burst") or 0),
        pdb_enabled=bool(pdb.get("enabled", True)),
        network_policy_enabled=bool(netpol.get("enabled", True)),
        network_policy_clients=list(netpol.get("clients") or []),
        termination_grace_period_seconds=_int(spec, "terminationGracePeriodSeconds",
                                              DEFAULT_GRACE, 1),
        affinity=spec.get("affinity"),
        tolerations=list(spec.get("tolerations") or []),
        node_selector=dict(spec.get("nodeSelector") or {}),
        topology_spread_constraints=list(spec.get("topologySpreadConstraints") or []),
        priority_class_name=str(spec.get("priorityClassName") or ""),
        pod_annotations=dict(spec.get("podAnnotations") or {}),
        pod_labels=dict(spec.get("podLabels") or {}),
        tls_enabled=bool(tls.get("enabled", True)),
        tls_secret_name=str(tls.get("secretName") or ""),
        tls_issuer=issuer,
        tls_ca_lifetime=ca_lifetime,
        tls_certificate_lifetime=cert_lifetime,
        service_monitor=bool(monitor.get("enabled", False)),
        service_monitor_interval=str(monitor.get("interval") or "30s"),
        service_monitor_labels={str(k): str(v) for k, v in
                                (monitor.get("labels") or {}).items()},
        redis_enabled=bool(redis.get("enabled", True)),
    )
